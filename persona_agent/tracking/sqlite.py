"""Cheaper commits for an MLflow tracking store in a sqlite file.

MLflow opens a SQLAlchemy session per store call and commits it; in sqlite's default rollback-journal mode each
commit syncs the file several times, and a compile's version is ~60 such commits (its run, its prompt version,
the live alias). Write-ahead logging with `synchronous=NORMAL` syncs only at checkpoints: a committed run stays
committed if the process dies, and the database stays consistent if the machine loses power (the last
commits may then be lost, as with any sqlite database in this mode; DuckDB's registry stays the source of
truth, and its rows keep the persona and program a lost run held). The WAL mode is stored in the file, so
`mlflow ui` and other readers use it too. Copy a live database with sqlite's backup API
(`sqlite3 mlflow.db ".backup copy.db"`), not a file copy: until a checkpoint, recent commits are in
`mlflow.db-wal`.

The setting is made on each new connection through SQLAlchemy's `connect` event, only for the files named here.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

_files: set[str] = set()
_lock = threading.Lock()


def use_wal(database: str) -> None:
    """Open every later SQLAlchemy connection to `database` (a sqlite file) in WAL mode, synchronous=NORMAL."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    with _lock:
        if not _files:
            event.listen(Engine, "connect", _on_connect)
        _files.add(os.path.realpath(database))


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    main = next((row for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main"), None)
    if main is None or not main[2] or os.path.realpath(main[2]) not in _files:
        return
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
