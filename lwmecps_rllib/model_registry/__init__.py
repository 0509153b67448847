"""The model registry: trained checkpoints with their provenance, on SQLite.

Its command line is `python -m lwmecps_rllib.model_registry`.

Each model has an id, the algorithm, env and scenario it was trained for, its config and
metrics, the checkpoint (copied into the registry's folder, so the sweep that made it can
be deleted), a checksum of the checkpoint's files, the time it was registered, and a
stage: `candidate` when registered, `production` once promoted (promoting a model
archives the previous production model of the same env and scenario), or `archived`.

Writes are transactions: the checkpoint is copied under a temporary name and renamed
only once complete, the row is inserted after, and a failed insert removes the copy. A
checkpoint that went missing or whose files changed is reported as such by
:meth:`ModelRegistry.verify` and refused by :meth:`ModelRegistry.checkpoint_path`.

    registry = ModelRegistry("runs/models/registry.sqlite")
    record = registry.register("runs/ppo/checkpoint", algorithm="lwmecps-ppo",
                               env="LWMECPSEnv3", scenario="testbed-4bs")
    registry.promote(record.id)
    path = registry.checkpoint_path("production")
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lwmecps_rllib import atomic
from lwmecps_rllib.spec import ENV_OPTIONS_FILE

#: Stages a model can be in.
STAGES = ("candidate", "production", "archived")
#: Where the registry lives unless a path is given (overridden by `LWMECPS_REGISTRY`).
DEFAULT_PATH = Path("runs") / "models" / "registry.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
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
);
CREATE INDEX IF NOT EXISTS models_stage ON models (stage, env, scenario);
"""


class RegistryError(Exception):
    """A registry operation that cannot be done (unknown model, bad stage, bad checkpoint)."""


@dataclass(frozen=True)
class ModelRecord:
    """One registered model."""

    id: str
    """Unique id, e.g. `ppo-20261126-140501-3f2a1c`."""
    algorithm: str
    """Registered algorithm name (`lwmecps-ppo`)."""
    env: str
    """Env the policy acts in (`LWMECPSEnv3`)."""
    scenario: str
    """Scenario it was trained on (`testbed-4bs`)."""
    checkpoint: str
    """Absolute path of the algorithm checkpoint (inside the registry folder)."""
    checksum: str
    """SHA-256 over the checkpoint's files at registration."""
    created_at: str
    """UTC time of registration, ISO 8601."""
    stage: str
    """`candidate`, `production` or `archived`."""
    config: dict[str, Any] = field(default_factory=dict)
    """Hyper-parameters the model was trained with."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Training and evaluation metrics."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def checkpoint_checksum(path: str | Path) -> str:
    """SHA-256 over every file under `path` (relative names and contents, sorted)."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise RegistryError(f"checkpoint {str(root)!r} holds no files")
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def default_registry_path() -> Path:
    """`$LWMECPS_REGISTRY`, else `runs/models/registry.sqlite`."""
    return Path(os.environ.get("LWMECPS_REGISTRY", DEFAULT_PATH))


class ModelRegistry:
    """Registered models in an SQLite file; checkpoints in `checkpoints/` beside it.

    Args:
        path: The SQLite file (created with its folder on first write).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_registry_path()
        self.root = self.path.parent / "checkpoints"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _record(row: sqlite3.Row) -> ModelRecord:
        d = dict(row)
        d["config"] = json.loads(d["config"])
        d["metrics"] = json.loads(d["metrics"])
        return ModelRecord(**d)

    def register(self, checkpoint: str | Path, *, algorithm: str, env: str, scenario: str,
                 config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                 stage: str = "candidate",
                 observation: dict[str, Any] | None = None) -> ModelRecord:
        """Copy `checkpoint` into the registry and record it.

        `observation`: the env options that shape what the model observes
        (`history`, ...), written beside the checkpoint when it does not record them.

        Raises:
            RegistryError: when the checkpoint is missing or holds no RLModule, or the
                stage is unknown.
        """
        from lwmecps_rllib.algorithms.inference import MODULE_SUBDIR

        if stage not in STAGES:
            raise RegistryError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        src = Path(checkpoint)
        if not src.is_dir():
            raise RegistryError(f"checkpoint {str(src)!r} does not exist")
        if not any((src / MODULE_SUBDIR).glob("module_state*")):
            raise RegistryError(f"checkpoint {str(src)!r} holds no RLModule "
                                f"({MODULE_SUBDIR}/module_state.*)")
        now = dt.datetime.now(dt.timezone.utc)
        label = algorithm.removeprefix("lwmecps-")
        model_id = f"{label}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        self.root.mkdir(parents=True, exist_ok=True)
        dest = (self.root / model_id).resolve()
        checksum = ""

        def copy(tmp: Path) -> None:
            nonlocal checksum
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if observation is not None and not (tmp / ENV_OPTIONS_FILE).exists():
                atomic.write_json(tmp / ENV_OPTIONS_FILE, observation)
            checksum = checkpoint_checksum(tmp)

        try:
            atomic.write_folder(dest, copy, replace=False)
            record = ModelRecord(
                id=model_id, algorithm=algorithm, env=env, scenario=str(scenario),
                checkpoint=str(dest), checksum=checksum, created_at=now.isoformat(),
                stage=stage, config=dict(config or {}), metrics=dict(metrics or {}))
            with self._transaction() as conn:
                conn.execute(
                    "INSERT INTO models (id, algorithm, env, scenario, config, metrics, "
                    "checkpoint, checksum, created_at, stage) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (record.id, record.algorithm, record.env, record.scenario,
                     json.dumps(record.config, default=str),
                     json.dumps(record.metrics, default=str), record.checkpoint,
                     record.checksum, record.created_at, record.stage))
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return record

    def list(self, stage: str | None = None, env: str | None = None,
             algorithm: str | None = None) -> list[ModelRecord]:
        """Models, newest first, optionally filtered."""
        if stage is not None and stage not in STAGES:
            raise RegistryError(f"stage must be one of {list(STAGES)}, got {stage!r}")
        if not self.path.exists():
            return []
        where, args = [], []
        for col, val in (("stage", stage), ("env", env), ("algorithm", algorithm)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM models" + (" WHERE " + " AND ".join(where) if where else "")
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY created_at DESC, id DESC", args).fetchall()
        return [self._record(r) for r in rows]

    def get(self, ref: str) -> ModelRecord:
        """A model by id, or the newest model in a stage (`production`, `candidate`).

        Raises:
            RegistryError: naming the reference when nothing matches.
        """
        if ref in STAGES:
            models = self.list(stage=ref)
            if not models:
                raise RegistryError(f"no model in stage {ref!r} in {str(self.path)!r}")
            return models[0]
        if self.path.exists():
            with self._connect() as conn:
                row = conn.execute("SELECT * FROM models WHERE id = ?", (ref,)).fetchone()
            if row is not None:
                return self._record(row)
        raise RegistryError(f"model {ref!r} not found in {str(self.path)!r} "
                            f"(give a model id or a stage: {list(STAGES)})")

    def _set_stage(self, model_id: str, stage: str) -> ModelRecord:
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
            if row is None:
                raise RegistryError(f"model {model_id!r} not found in {str(self.path)!r}")
            if stage == "production":
                conn.execute("UPDATE models SET stage = 'archived' WHERE stage = 'production' "
                             "AND env = ? AND scenario = ? AND id != ?",
                             (row["env"], row["scenario"], model_id))
            conn.execute("UPDATE models SET stage = ? WHERE id = ?", (stage, model_id))
        return self.get(model_id)

    def promote(self, model_id: str) -> ModelRecord:
        """Make `model_id` the production model of its env and scenario.

        The previous production model of the same env and scenario is archived in the
        same transaction. A model whose checkpoint is missing or changed is refused.
        """
        self.checkpoint_path(model_id)
        return self._set_stage(model_id, "production")

    def archive(self, model_id: str) -> ModelRecord:
        """Move `model_id` to `archived` (its checkpoint is kept)."""
        return self._set_stage(model_id, "archived")

    def verify(self, record: ModelRecord) -> str:
        """`ok`, `missing`, or `corrupt (...)` for the record's checkpoint."""
        path = Path(record.checkpoint)
        if not path.is_dir():
            return "missing"
        try:
            checksum = checkpoint_checksum(path)
        except (RegistryError, OSError) as exc:
            return f"corrupt ({exc})"
        return "ok" if checksum == record.checksum else "corrupt (checksum mismatch)"

    def checkpoint_path(self, ref: str) -> Path:
        """The verified checkpoint of a model id or stage.

        Raises:
            RegistryError: when the model is unknown or its checkpoint missing or changed.
        """
        record = self.get(ref)
        status = self.verify(record)
        if status != "ok":
            raise RegistryError(f"model {record.id}: checkpoint {record.checkpoint!r} is "
                                f"{status}")
        return Path(record.checkpoint)


def resolve(ref: str | Path, registry: str | Path | None = None
            ) -> tuple[Path, ModelRecord | None]:
    """A model reference as a checkpoint folder: the folder itself, or the verified
    checkpoint of a registry model id or stage (with its record).

    Raises:
        ValueError: when `ref` is neither a folder nor usable in the registry (why).
    """
    if Path(ref).is_dir():
        return Path(ref), None
    reg = ModelRegistry(registry)
    try:
        record = reg.get(str(ref))
        return reg.checkpoint_path(record.id), record
    except RegistryError as exc:
        raise ValueError(f"model {str(ref)!r} is neither a checkpoint folder nor usable in "
                         f"the registry: {exc}") from exc
