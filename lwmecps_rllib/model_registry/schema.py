"""The registry's tables, and their creation or migration when a registry is opened.

Schema 2 (current): `models`, with a partial unique index allowing one `production`
model per env and scenario, checkpoint paths relative to the artifact root and manifest
checksums; `registry_meta` holds the schema version. Schema 1 (SQLite registries of the
first version) had no `registry_meta`, no unique index, absolute checkpoint paths and
checksums over concatenated names and contents: migrating one archives all but the
newest production model of each env and scenario, makes paths inside the root relative
and recomputes the checksum of every checkpoint that still matches its old one.
"""

from __future__ import annotations

from pathlib import Path

from lwmecps_rllib.model_registry.integrity import (
    RegistryError,
    checkpoint_checksum,
    checkpoint_files,
    legacy_checksum,
)
from lwmecps_rllib.model_registry.store import Connection, SQLiteStore, Store, StoreError

#: Version of the tables below; 1 is the first schema, without `registry_meta`.
SCHEMA_VERSION = 2

#: The tables and indexes, in order.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        id TEXT PRIMARY KEY,
        algorithm TEXT NOT NULL,
        env TEXT NOT NULL,
        scenario TEXT NOT NULL,
        config TEXT NOT NULL,
        metrics TEXT NOT NULL,
        checkpoint TEXT NOT NULL,
        checksum TEXT NOT NULL,
        created_at TEXT NOT NULL,
        stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived'))
    )""",
    "CREATE INDEX IF NOT EXISTS models_stage ON models (stage, env, scenario)",
    "CREATE UNIQUE INDEX IF NOT EXISTS models_one_production ON models (env, scenario) "
    "WHERE stage = 'production'",
    "CREATE TABLE IF NOT EXISTS registry_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


def inside_root(root: Path, path: str | Path) -> bool:
    """Whether `path` is strictly below `root` (after resolving `..` and links)."""
    root = root.resolve()
    resolved = Path(path).resolve()
    return resolved != root and resolved.is_relative_to(root)


def schema_version(store: Store, conn: Connection) -> int:
    """The schema of the store's tables: 0 none, 1 the first (no `registry_meta`)."""
    if store.table_exists(conn, "registry_meta"):
        row = conn.one("SELECT value FROM registry_meta WHERE name = 'schema_version'")
        if row is not None:
            return int(row["value"])
    return 1 if store.table_exists(conn, "models") else 0


def ensure_schema(store: Store, conn: Connection, root: Path) -> None:
    """Create the tables, or migrate an older schema, under the write lock."""
    if schema_version(store, conn) == SCHEMA_VERSION:
        return
    try:
        with store.transaction(conn):
            _upgrade(store, conn, root, schema_version(store, conn))
    except (StoreError, OSError, *store.errors) as exc:
        raise RegistryError(f"registry {store.name!r} needs its tables created or "
                            f"migrated to schema {SCHEMA_VERSION}, which failed (open it "
                            f"once with write access): {exc}") from exc


def _upgrade(store: Store, conn: Connection, root: Path, version: int) -> None:
    """From schema `version` to the current one, inside the schema transaction."""
    if version > SCHEMA_VERSION:
        raise RegistryError(f"registry {store.name!r} has schema {version}, newer "
                            f"than this version's {SCHEMA_VERSION}: upgrade lwmecps_rllib")
    if version == SCHEMA_VERSION:
        return
    if version == 1 and not isinstance(store, SQLiteStore):
        raise RegistryError(f"database {store.name!r} has a table 'models' that is "
                            f"not a model registry's (no registry_meta)")
    if version == 1:
        _migrate_from_1(conn, root)
    for statement in SCHEMA:
        conn.run(statement)
    conn.run("INSERT INTO registry_meta (name, value) VALUES ('schema_version', ?) "
             "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
             (str(SCHEMA_VERSION),))


def _migrate_from_1(conn: Connection, root: Path) -> None:
    """Schema 1 to 2: one production model per env+scenario, relative paths, manifests."""
    kept: set[tuple[str, str]] = set()
    for row in conn.all("SELECT id, env, scenario FROM models WHERE stage = 'production' "
                        "ORDER BY created_at DESC, id DESC"):
        if (row["env"], row["scenario"]) in kept:
            conn.run("UPDATE models SET stage = 'archived' WHERE id = ?", (row["id"],))
        kept.add((row["env"], row["scenario"]))
    for row in conn.all("SELECT id, checkpoint, checksum FROM models"):
        path = Path(row["checkpoint"])
        if not inside_root(root, path):
            continue
        checksum = row["checksum"]
        if path.is_dir() and checkpoint_files(path) and legacy_checksum(path) == checksum:
            checksum = checkpoint_checksum(path)
        conn.run("UPDATE models SET checkpoint = ?, checksum = ? WHERE id = ?",
                 (path.resolve().relative_to(root.resolve()).as_posix(), checksum,
                  row["id"]))
