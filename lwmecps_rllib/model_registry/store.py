"""Where the registry's records live: an SQLite file or a PostgreSQL database.

The registry speaks to both through :class:`Store`: a connection per operation, rows as
dicts, SQL written with `?` placeholders, and write transactions that exclude every
other writer of the same registry (SQLite's `BEGIN IMMEDIATE`; a transaction-level
advisory lock in PostgreSQL), so a read-check-write such as "archive the production
model, then promote this one" is never interleaved with another writer's.

- **SQLite** (a file path): one machine. SQLite's locking is not reliable on network
  file systems (NFS, CephFS, ...), so an SQLite registry must not be shared between
  machines through a volume.
- **PostgreSQL** (a `postgresql://` or `postgres://` URL, libpq's form): a cluster.
  Needs psycopg 3 (`pip install 'lwmecps_rllib[postgres]'`).
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: URL prefixes of a PostgreSQL registry.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Seconds a connection attempt may take before it is an error.
CONNECT_TIMEOUT_S = 10
#: Seconds an SQLite writer waits for another one.
SQLITE_TIMEOUT_S = 30
_LOCK_NAME = "lwmecps_rllib.model_registry"


class StoreError(Exception):
    """The store cannot be used (unreachable server, read-only file, missing driver)."""


def is_postgres(location: str | Path) -> bool:
    """Whether `location` names a PostgreSQL database (a URL) rather than an SQLite file."""
    return str(location).startswith(POSTGRES_SCHEMES)


def redact(url: str) -> str:
    """`url` with its password hidden, for messages."""
    url = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&]*", r"\1***", url)


class Connection:
    """One connection of a store: rows as dicts, `?` placeholders in every dialect."""

    def __init__(self, raw: Any, placeholder: str) -> None:
        self.raw = raw
        self._placeholder = placeholder

    def _execute(self, sql: str, args: tuple[Any, ...] | list[Any]) -> Any:
        return self.raw.execute(sql.replace("?", self._placeholder), tuple(args))

    def one(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> dict[str, Any] | None:
        """The first row of a query, or None."""
        row = self._execute(sql, args).fetchone()
        return None if row is None else dict(row)

    def all(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        """Every row of a query."""
        return [dict(r) for r in self._execute(sql, args).fetchall()]

    def run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> None:
        """A statement without result rows."""
        self._execute(sql, args)


class Store(ABC):
    """A database holding the registry's tables."""

    #: The store's location for messages (a path, or a URL without its password).
    name: str
    #: The exceptions its driver raises.
    errors: tuple[type[Exception], ...]

    @abstractmethod
    def exists(self) -> bool:
        """Whether the store may hold records (False: reads need not connect)."""

    @abstractmethod
    def connect(self) -> Any:
        """A context manager yielding a :class:`Connection` in autocommit mode."""

    @abstractmethod
    def transaction(self, conn: Connection) -> Any:
        """A context manager: a transaction that excludes every other writer."""

    @abstractmethod
    def table_exists(self, conn: Connection, table: str) -> bool:
        """Whether `table` exists."""


class SQLiteStore(Store):
    """An SQLite file (created with its folder on first connection).

    Args:
        path: The file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.errors = (sqlite3.Error,)

    def exists(self) -> bool:
        """Whether the file exists."""
        return self.path.exists()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection in autocommit mode (transactions are explicit)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = sqlite3.connect(self.path, timeout=SQLITE_TIMEOUT_S, isolation_level=None)
        try:
            raw.row_factory = sqlite3.Row
            yield Connection(raw, "?")
        finally:
            raw.close()

    @contextmanager
    def transaction(self, conn: Connection) -> Iterator[None]:
        """`BEGIN IMMEDIATE`: the write lock is taken at the start, not at the first write."""
        try:
            conn.run("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"registry {self.name!r} cannot be written: {exc}") from exc
        try:
            yield
        except BaseException:
            conn.run("ROLLBACK")
            raise
        conn.run("COMMIT")

    def table_exists(self, conn: Connection, table: str) -> bool:
        """Whether `table` is in `sqlite_master`."""
        return conn.one("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (table,)) is not None


class PostgresStore(Store):
    """A PostgreSQL database reached by a libpq URL.

    Args:
        url: `postgresql://user:password@host:port/dbname?options` (libpq's form; a
            `connect_timeout` in it replaces the default of 10 s).

    Raises:
        StoreError: when psycopg 3 is not installed.
    """

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("a PostgreSQL registry needs psycopg 3: pip install "
                             "'lwmecps_rllib[postgres]'") from exc
        self.url = url
        self.name = redact(url)
        self.errors = (psycopg.Error,)

    def exists(self) -> bool:
        """Always True: only the server knows."""
        return True

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection in autocommit mode (transactions are explicit)."""
        import psycopg
        from psycopg.rows import dict_row

        timeout = {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT_S}
        try:
            raw = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **timeout)
        except psycopg.OperationalError as exc:
            raise StoreError(f"registry {self.name!r} is unreachable: "
                             f"{redact(str(exc)).strip()}") from exc
        try:
            yield Connection(raw, "%s")
        finally:
            raw.close()

    @contextmanager
    def transaction(self, conn: Connection) -> Iterator[None]:
        """A transaction holding the registry's advisory lock until it ends."""
        with conn.raw.transaction():
            conn.run("SELECT pg_advisory_xact_lock(hashtext(?))", (_LOCK_NAME,))
            yield

    def table_exists(self, conn: Connection, table: str) -> bool:
        """Whether `table` is visible on the connection's search path."""
        return conn.one("SELECT to_regclass(?) AS t", (table,))["t"] is not None


def open_store(location: str | Path) -> Store:
    """The store at `location`: a PostgreSQL URL, or else an SQLite file path."""
    if is_postgres(location):
        return PostgresStore(str(location))
    return SQLiteStore(location)
