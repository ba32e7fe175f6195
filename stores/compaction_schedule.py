"""When a store's file is rewritten: a forget marks a compaction due within `compaction_delay_seconds` (in the
file, so a process that dies first leaves it to the next writable open), a timer in this process runs it by then,
forgets inside that window share one rewrite, and closing the store runs it at once."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta

import duckdb

from persona_agent.core.config import Settings
from persona_agent.core.errors import StoreError
from persona_agent.stores.compaction import DUE_KEY, OPEN_FILES, copy_live_rows
from persona_agent.stores.connection import StoreConnection
from persona_agent.stores.rows import utcnow

logger = logging.getLogger(__name__)


class CompactionSchedule:
    """The pending compaction of one store's file: its deadline (`due`, UTC), the timer, and the rewrite."""

    def __init__(self, conn: StoreConnection, settings: Settings) -> None:
        self._conn = conn
        self._settings = settings
        self._timer: threading.Timer | None = None
        self.due: datetime | None = None  # when the pending compaction must have run (UTC), if one is
        self.compactions = 0

    def resume(self) -> None:
        """Schedule a compaction the file still marks as due (a forget whose compaction the store's previous
        holder did not run)."""
        if self._conn.read_only or not self._conn.on_disk:
            return
        left = self._conn.one("SELECT value FROM store_meta WHERE key = ?", [DUE_KEY])
        if left is not None:
            logger.warning("%s: a compaction due at %s was pending: scheduled", self._conn.path, left[0])
            self.schedule(datetime.fromisoformat(left[0]))

    def mark_due(self, cur: duckdb.DuckDBPyConnection) -> datetime | None:
        """Record, in the caller's transaction, that a compaction is due (the earliest due time wins)."""
        if not self._conn.on_disk:
            return None
        due = utcnow() + timedelta(seconds=self._settings.compaction_delay_seconds)
        if self.due is not None and self.due <= due:
            return self.due
        cur.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [DUE_KEY, due.isoformat()])
        return due

    def schedule(self, due: datetime | None) -> None:
        """Keep `due` as the pending compaction's deadline (the earliest wins) and have the timer fire then.
        Call with the write lock held."""
        if due is None or (self._timer is not None and self.due is not None and self.due <= due):
            return
        self.due = due if self.due is None else min(self.due, due)
        self._start_timer(self.due)

    def _start_timer(self, at: datetime) -> None:
        self.cancel_timer()
        self._timer = threading.Timer(max(0.0, (at - utcnow()).total_seconds()), self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        with self._conn.write_lock:
            if self._conn.closed or self.due is None:
                return
            delay = self._settings.compaction_delay_seconds
            if self._conn.shared():
                logger.info(
                    "%s: another store of this process holds the file; compaction in %s s", self._conn.path, delay
                )
            else:
                try:
                    self.compact()
                    return
                except (StoreError, duckdb.Error, OSError):
                    logger.exception("%s: compaction failed; retrying in %s s", self._conn.path, delay)
            self._start_timer(utcnow() + timedelta(seconds=delay))

    def on_close(self) -> None:
        """Run the pending compaction before the store closes (call with the write lock held). It stays pending in
        the file if it fails (the next writable open retries) or if another store of this process holds the file
        (the last one runs it)."""
        self.cancel_timer()
        if not self._conn.on_disk or self._conn.read_only:
            return
        if self.due is None and self._conn.one("SELECT 1 FROM store_meta WHERE key = ?", [DUE_KEY]) is None:
            return
        if self._conn.shared():
            logger.info("%s: another store of this process holds the file: it compacts on close", self._conn.path)
            return
        try:
            self.compact()
        except (StoreError, duckdb.Error, OSError):
            logger.exception("%s: compaction on close failed; the next writable open retries", self._conn.path)

    def compact(self) -> datetime:
        """Rewrite the file now (see `stores.compaction`), so no byte of a deleted row is left in it. Writes wait
        for the whole rewrite; reads go on during the copy and wait only while the file is swapped and reopened.
        Returns when it finished (UTC)."""
        self._conn.require_writable()
        with self._conn.write_lock:
            if self._conn.closed:
                raise StoreError("The memory store is closed.")
            if self._conn.on_disk:
                with OPEN_FILES.lock:
                    self._conn.refuse_if_shared()
                started = time.perf_counter()
                fresh = copy_live_rows(self._conn.raw, self._conn.path)
                swapping = time.perf_counter()
                self._conn.swap_in(fresh)
                self.compactions += 1
                done = time.perf_counter()
                logger.info(
                    "%s: compacted in %.3f s (reads paused %.3f s)", self._conn.path, done - started, done - swapping
                )
            self.due = None
            self.cancel_timer()
            return utcnow()
