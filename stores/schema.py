"""The DuckDB schema and its in-code migrations.

A database records the schema version it was migrated to. Opening one runs the missing migrations in
one transaction; a database from a newer PersonaAgent is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from persona_agent.core.errors import SchemaVersionError, StoreError

Migration = Callable[[duckdb.DuckDBPyConnection, int], None]


def _v1_memory(con: duckdb.DuckDBPyConnection, dim: int) -> None:
    # No PRIMARY KEY on interactions: ids are random UUIDs made here, and an ART index would slow the
    # Arrow bulk inserts the ingest path relies on. `seq` is a store-wide insertion counter that breaks
    # ties between rows with the same timestamp.
    con.execute(
        f"""
        CREATE TABLE interactions (
            id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,
            user_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            task VARCHAR,
            query VARCHAR NOT NULL,
            response VARCHAR NOT NULL,
            metadata VARCHAR NOT NULL,
            embedding FLOAT[{dim}] NOT NULL
        )
        """
    )
    con.execute(
        """
        CREATE TABLE profiles (
            user_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            text VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            source_ids VARCHAR[] NOT NULL,
            PRIMARY KEY (user_id, version)
        )
        """
    )


def _v2_personas(con: duckdb.DuckDBPyConnection, dim: int) -> None:
    # The persona registry (stores/personas.py): every version per user, the live pointer with its optimistic
    # lock (`revision`), and an audit row per change of the live pointer. `program` is the saved program (JSON)
    # of versions that have one; scores and usage are JSON objects.
    con.execute(
        """
        CREATE TABLE personas (
            user_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            text VARCHAR NOT NULL,
            parent INTEGER,
            source VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            strategy VARCHAR,
            scores VARCHAR NOT NULL,
            usage VARCHAR NOT NULL,
            mlflow_run_id VARCHAR,
            program VARCHAR,
            PRIMARY KEY (user_id, version)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE persona_live (
            user_id VARCHAR PRIMARY KEY,
            version INTEGER NOT NULL,
            revision INTEGER NOT NULL,
            updated_at TIMESTAMP NOT NULL
        )
        """
    )
    con.execute(
        """
        CREATE TABLE persona_events (
            user_id VARCHAR NOT NULL,
            revision INTEGER NOT NULL,
            changed_at TIMESTAMP NOT NULL,
            action VARCHAR NOT NULL,
            from_version INTEGER,
            to_version INTEGER NOT NULL,
            PRIMARY KEY (user_id, revision)
        )
        """
    )


def _v3_interaction_identity(con: duckdb.DuckDBPyConnection, dim: int) -> None:
    # A row's identity for idempotent ingest: sha256 of (user, time as given, query, response) joined by NUL
    # (refused in texts and ids, so unambiguous), the time as Unix microseconds, or '' when none was given
    # (`rows.content_hash`). Existing rows are hashed with their stored time. Ingest finds duplicates by a
    # join on this column against the new batch's hashes; no index (see _v1_memory).
    # (DuckDB cannot SET NOT NULL after an UPDATE in the same transaction: the column is added NOT NULL with a
    # placeholder default, filled, and the default dropped, so an insert without a hash fails.)
    con.execute("ALTER TABLE interactions ADD COLUMN content_hash VARCHAR NOT NULL DEFAULT ''")
    con.execute(
        "UPDATE interactions SET content_hash = "
        "sha256(concat_ws(chr(0), user_id, epoch_us(created_at)::VARCHAR, query, response))"
    )
    con.execute("ALTER TABLE interactions ALTER COLUMN content_hash DROP DEFAULT")


def _v4_token_revocations(con: duckdb.DuckDBPyConnection, dim: int) -> None:
    # Per-user token revocation (stores/tokens.py): a user token issued at or before `revoked_at` (epoch
    # seconds) is dead. Keyed by the SHA-256 of the user id, so a forgotten user leaves no raw id here.
    con.execute("CREATE TABLE token_revocations (user_hash VARCHAR PRIMARY KEY, revoked_at DOUBLE NOT NULL)")


MIGRATIONS: tuple[Migration, ...] = (_v1_memory, _v2_personas, _v3_interaction_identity, _v4_token_revocations)
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()
    return int(rows[0][0]) if rows else 0


def refuse_newer(con: duckdb.DuckDBPyConnection) -> int:
    """The database's schema version, refused if a newer PersonaAgent wrote it (also on a read-only open, which
    cannot migrate: reading a newer layout would be a guess)."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"The database is at schema version {version}; this PersonaAgent knows up to {SCHEMA_VERSION}. "
            "Upgrade persona-agent to open it."
        )
    return version


def ensure_schema(con: duckdb.DuckDBPyConnection, *, dim: int, embedder: str) -> None:
    """Create or migrate the schema, and check the store was built with an embedder of this dimension."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
        con.execute("CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        meta = dict(con.execute("SELECT key, value FROM store_meta").fetchall())
        if "embedding_dim" in meta and int(meta["embedding_dim"]) != dim:
            raise StoreError(
                f"This store holds {meta['embedding_dim']}-d embeddings from {meta.get('embedder')!r}; the "
                f"configured embedder {embedder!r} makes {dim}-d vectors. Use the same embedder, or a new store."
            )
        version = refuse_newer(con)
        for number in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[number - 1](con, dim)
            con.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP)", [number])
        if not meta:
            con.executemany(
                "INSERT INTO store_meta VALUES (?, ?)", [("embedding_dim", str(dim)), ("embedder", embedder)]
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
