"""The model registry: trained checkpoints with their provenance.

Its command line is `python -m lwmecps_rllib.model_registry`.

Each model has an id, the algorithm, env and scenario it was trained for, its config and
metrics, the checkpoint (copied into the registry's artifact root, so the sweep that made
it can be deleted), a checksum of the checkpoint's files, the time it was registered,
and a stage: `candidate` when registered, `production` once promoted, or `archived`.
An env and scenario have at most one production model (a unique index says so):
promoting a model, or registering one as `production`, archives the previous production
model of the same env and scenario in the same transaction.

Where it lives is its location (`ModelRegistry(location)`, `--registry`,
`$LWMECPS_REGISTRY`):

- an **SQLite file** (the default, `runs/models/registry.sqlite`) for one machine, with
  the checkpoints in `checkpoints/` beside it;
- a **PostgreSQL URL** (`postgresql://user@host/db`) for a cluster, with the checkpoints
  in an artifact root folder every reader mounts (`artifacts=`, `--artifacts`,
  `$LWMECPS_REGISTRY_ARTIFACTS`).

A record keeps its checkpoint's path relative to the artifact root, so the root may be
mounted at another path on each machine; a checkpoint path that leads outside the root
is refused.

Writes are transactions: the checkpoint is copied under a temporary name and renamed
only once complete, the row is inserted after, and a failed insert removes the copy. A
checkpoint that went missing or whose files changed is reported as such by
:meth:`ModelRegistry.verify` and refused by :meth:`ModelRegistry.checkpoint_path`.

    registry = ModelRegistry("runs/models/registry.sqlite")
    record = registry.register("runs/ppo/checkpoint", algorithm="lwmecps-ppo",
                               env="LWMECPSEnv3", scenario="testbed-4bs")
    registry.promote(record.id)
    path = registry.checkpoint_path("production", env="LWMECPSEnv3", scenario="testbed-4bs")

A registry made by an earlier version (SQLite, without the `registry_meta` table) is
migrated when first opened with write access: duplicate production models are archived
(the newest stays), checkpoint paths inside the root become relative, and the checksums
of intact checkpoints are recomputed in the manifest form.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lwmecps_rllib import atomic
from lwmecps_rllib.model_registry.integrity import (
    ALGORITHM_PATTERN,
    MODEL_ID_PATTERN,
    RegistryError,
    check_name,
    checkpoint_checksum,
    checkpoint_manifest,
)
from lwmecps_rllib.model_registry.schema import SCHEMA_VERSION, ensure_schema, inside_root
from lwmecps_rllib.model_registry.store import (
    Connection,
    Store,
    StoreError,
    is_postgres,
    open_store,
)
from lwmecps_rllib.spec import ENV_OPTIONS_FILE, read_trained_stations

__all__ = ["ALGORITHM_PATTERN", "ARTIFACTS_ENV", "DEFAULT_PATH", "MODEL_ID_PATTERN",
           "SCHEMA_VERSION", "STAGES", "ModelRecord", "ModelRegistry", "RegistryError",
           "check_name", "checkpoint_checksum", "checkpoint_manifest", "default_registry_path",
           "registry_location", "resolve"]

#: Stages a model can be in.
STAGES = ("candidate", "production", "archived")
#: Where the registry lives unless a location is given (overridden by `LWMECPS_REGISTRY`).
DEFAULT_PATH = Path("runs") / "models" / "registry.sqlite"
#: Environment variable naming the artifact root of a PostgreSQL registry.
ARTIFACTS_ENV = "LWMECPS_REGISTRY_ARTIFACTS"
_COLUMNS = ("id", "algorithm", "env", "scenario", "config", "metrics", "checkpoint",
            "checksum", "created_at", "stage")


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
    """Absolute path of the algorithm checkpoint (inside the artifact root)."""
    checksum: str
    """SHA-256 of the checkpoint's manifest at registration (see `checkpoint_checksum`)."""
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


def default_registry_path() -> Path:
    """`$LWMECPS_REGISTRY`, else `runs/models/registry.sqlite` (as a path)."""
    return Path(os.environ.get("LWMECPS_REGISTRY", DEFAULT_PATH))


def registry_location(location: str | Path | None = None) -> str:
    """The registry's location made independent of the current folder.

    Args:
        location: A PostgreSQL URL (returned as is) or an SQLite file (made absolute);
            None: `$LWMECPS_REGISTRY`, else the default file.
    """
    loc = location if location is not None else os.environ.get("LWMECPS_REGISTRY",
                                                               str(DEFAULT_PATH))
    return str(loc) if is_postgres(loc) else str(Path(loc).resolve())


class ModelRegistry:
    """Registered models in an SQLite file or a PostgreSQL database, checkpoints in a folder.

    Args:
        location: An SQLite file (created with its folder on first write) or a
            `postgresql://` URL; None: `$LWMECPS_REGISTRY`, else
            `runs/models/registry.sqlite`.
        artifacts: The folder of the checkpoints. Default: `checkpoints/` beside an
            SQLite file; `$LWMECPS_REGISTRY_ARTIFACTS` for PostgreSQL, where it is required.

    Raises:
        RegistryError: for a PostgreSQL location without an artifact root, or without
            psycopg installed.
    """

    def __init__(self, location: str | Path | None = None, *,
                 artifacts: str | Path | None = None) -> None:
        loc = location if location is not None else os.environ.get("LWMECPS_REGISTRY",
                                                                   str(DEFAULT_PATH))
        self.location = str(loc)
        try:
            self._store: Store = open_store(loc)
        except StoreError as exc:
            raise RegistryError(str(exc)) from exc
        self.path: Path | None = None if is_postgres(loc) else Path(loc)
        """The SQLite file (None for PostgreSQL)."""
        if artifacts is None and self.path is not None:
            artifacts = self.path.parent / "checkpoints"
        artifacts = artifacts if artifacts is not None else os.environ.get(ARTIFACTS_ENV)
        if not artifacts:
            raise RegistryError(f"registry {self._store.name!r} needs an artifact root for "
                                f"its checkpoints: pass artifacts= (--artifacts) or set "
                                f"${ARTIFACTS_ENV}")
        self.root = Path(artifacts)
        """The folder of the checkpoints."""
        self._schema_ready = False

    # -- connections and schema

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            with self._store.connect() as conn:
                if not self._schema_ready:
                    ensure_schema(self._store, conn, self.root)
                    self._schema_ready = True
                yield conn
        except StoreError as exc:
            raise RegistryError(str(exc)) from exc
        except self._store.errors as exc:
            raise RegistryError(f"registry {self._store.name!r}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._connect() as conn, self._store.transaction(conn):
            yield conn

    # -- records

    def _record(self, row: dict[str, Any]) -> ModelRecord:
        d = dict(row)
        d["config"] = json.loads(d["config"])
        d["metrics"] = json.loads(d["metrics"])
        d["checkpoint"] = str((self.root.resolve() / d["checkpoint"]).resolve())
        return ModelRecord(**d)

    def _new_id(self, algorithm: str, now: dt.datetime) -> str:
        label = algorithm.removeprefix("lwmecps-")
        model_id = f"{label}-{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        return check_name("model id", model_id, MODEL_ID_PATTERN)

    # -- writes

    def register(self, checkpoint: str | Path, *, algorithm: str, env: str, scenario: str,
                 config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                 stage: str = "candidate",
                 observation: dict[str, Any] | None = None,
                 stations: tuple[int, int] | None = None) -> ModelRecord:
        """Copy `checkpoint` into the registry and record it.

        `observation`: the env options that shape what the model observes
        (`history`, ...), written beside the checkpoint when it does not record them.
        A size-general model (graph observation) is recorded as such in its config
        (`size_general: true`, and `stations`: the range of station counts it supports,
        by default the range it was trained on; `stations` here widens or narrows it).
        A model registered as `production` archives the previous production model of its
        env and scenario in the same transaction.

        Raises:
            RegistryError: when the checkpoint is missing or holds no RLModule, the
                stage is unknown, the algorithm name does not match `ALGORITHM_PATTERN`,
                env or scenario is empty, or `stations` is given for a model bound to
                one cluster size or is not `1 <= least <= most`.
        """
        from lwmecps_rllib.algorithms.inference import MODULE_SUBDIR

        check_name("algorithm", algorithm, ALGORITHM_PATTERN)
        _check_stage(stage)
        for name, value in (("env", env), ("scenario", scenario)):
            if not str(value).strip():
                raise RegistryError(f"{name} must be a non-empty name, got {value!r}")
        src = Path(checkpoint)
        if not src.is_dir():
            raise RegistryError(f"checkpoint {str(src)!r} does not exist")
        if not any((src / MODULE_SUBDIR).glob("module_state*")):
            raise RegistryError(f"checkpoint {str(src)!r} holds no RLModule "
                                f"({MODULE_SUBDIR}/module_state.*)")
        trained = read_trained_stations(src) or (observation or {}).get("stations")
        if stations is not None:
            if trained is None:
                raise RegistryError(f"stations: {str(src)!r} is bound to its scenario's size "
                                    f"(not size-general: no graph observation)")
            if not (isinstance(stations, (tuple, list)) and len(stations) == 2
                    and all(isinstance(v, int) for v in stations)
                    and 1 <= stations[0] <= stations[1]):
                raise RegistryError(f"stations must be (least, most) with 1 <= least <= "
                                    f"most, got {stations!r}")
        supported = list(stations) if stations is not None else trained
        config = {**(config or {}), **({"size_general": True, "stations": supported}
                                       if supported is not None else {})}
        now = dt.datetime.now(dt.timezone.utc)
        model_id = self._new_id(algorithm, now)
        dest = (self.root / model_id).resolve()
        if not inside_root(self.root, dest):
            raise RegistryError(f"checkpoint folder {str(dest)!r} is outside the artifact "
                                f"root {str(self.root)!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        checksum = ""

        def copy(tmp: Path) -> None:
            nonlocal checksum
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            if observation is not None and not (tmp / ENV_OPTIONS_FILE).exists():
                atomic.write_json(tmp / ENV_OPTIONS_FILE, observation)
            if supported is not None:
                options = json.loads((tmp / ENV_OPTIONS_FILE).read_text())
                atomic.write_json(tmp / ENV_OPTIONS_FILE, {**options, "stations": supported})
            checksum = checkpoint_checksum(tmp)

        try:
            atomic.write_folder(dest, copy, replace=False)
            record = ModelRecord(
                id=model_id, algorithm=algorithm, env=env, scenario=str(scenario),
                checkpoint=str(dest), checksum=checksum, created_at=now.isoformat(),
                stage=stage, config=dict(config or {}), metrics=dict(metrics or {}))
            row = {**record.to_dict(), "checkpoint": model_id,
                   "config": json.dumps(record.config, default=str),
                   "metrics": json.dumps(record.metrics, default=str)}
            with self._transaction() as conn:
                if stage == "production":
                    self._archive_production(conn, env, str(scenario))
                conn.run(f"INSERT INTO models ({', '.join(_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                         [row[c] for c in _COLUMNS])
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return record

    @staticmethod
    def _archive_production(conn: Connection, env: str, scenario: str) -> None:
        conn.run("UPDATE models SET stage = 'archived' WHERE stage = 'production' "
                 "AND env = ? AND scenario = ?", (env, scenario))

    def _set_stage(self, model_id: str, stage: str) -> ModelRecord:
        check_name("model id", model_id, MODEL_ID_PATTERN)
        with self._transaction() as conn:
            row = conn.one("SELECT * FROM models WHERE id = ?", (model_id,))
            if row is None:
                raise RegistryError(f"model {model_id!r} not found in {self._store.name!r}")
            if stage == "production" and row["stage"] != "production":
                self._archive_production(conn, row["env"], row["scenario"])
            conn.run("UPDATE models SET stage = ? WHERE id = ?", (stage, model_id))
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

    # -- reads

    def list(self, stage: str | None = None, env: str | None = None,
             algorithm: str | None = None, scenario: str | None = None) -> list[ModelRecord]:
        """Models, newest first, optionally filtered."""
        if stage is not None:
            _check_stage(stage)
        if not self._store.exists():
            return []
        where, args = [], []
        for col, val in (("stage", stage), ("env", env), ("algorithm", algorithm),
                         ("scenario", scenario)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT * FROM models" + (" WHERE " + " AND ".join(where) if where else "")
        with self._connect() as conn:
            rows = conn.all(sql + " ORDER BY created_at DESC, id DESC", args)
        return [self._record(r) for r in rows]

    def get(self, ref: str, *, env: str | None = None,
            scenario: str | None = None) -> ModelRecord:
        """A model by id, or the newest model in a stage (`production`, `candidate`).

        A stage is looked up among the models of `env` and `scenario` (those given); a
        stage whose models span several env/scenario pairs is refused, naming them. A
        model id is returned whatever its env and scenario (check them if they matter).

        Raises:
            RegistryError: naming the reference when nothing matches, the pairs when a
                stage is ambiguous, or the pattern when a model id is malformed.
        """
        if ref in STAGES:
            return self._by_stage(ref, env, scenario)
        check_name("model id", ref, MODEL_ID_PATTERN)
        if self._store.exists():
            with self._connect() as conn:
                row = conn.one("SELECT * FROM models WHERE id = ?", (ref,))
            if row is not None:
                return self._record(row)
        raise RegistryError(f"model {ref!r} not found in {self._store.name!r} "
                            f"(give a model id or a stage: {list(STAGES)})")

    def _by_stage(self, stage: str, env: str | None, scenario: str | None) -> ModelRecord:
        models = self.list(stage=stage, env=env, scenario=scenario)
        given = [f"{k} {v!r}" for k, v in (("env", env), ("scenario", scenario)) if v is not None]
        scope = f" for {' and '.join(given)}" if given else ""
        if not models:
            raise RegistryError(f"no model in stage {stage!r}{scope} in {self._store.name!r}")
        pairs = sorted({(m.env, m.scenario) for m in models})
        if len(pairs) > 1:
            listed = ", ".join(f"{e}/{s}" for e, s in pairs)
            raise RegistryError(f"stage {stage!r}{scope} is ambiguous: it holds models of "
                                f"{len(pairs)} env/scenario pairs ({listed}); give the env "
                                f"and scenario (--env, --scenario)")
        return models[0]

    def verify(self, record: ModelRecord) -> str:
        """`ok`, `missing`, `corrupt (...)` or `outside the artifact root (...)`."""
        path = Path(record.checkpoint)
        if not inside_root(self.root, path):
            return f"outside the artifact root ({self.root!s})"
        if not path.is_dir():
            return "missing"
        try:
            checksum = checkpoint_checksum(path)
        except (RegistryError, OSError) as exc:
            return f"corrupt ({exc})"
        return "ok" if checksum == record.checksum else "corrupt (checksum mismatch)"

    def checkpoint_path(self, ref: str, *, env: str | None = None,
                        scenario: str | None = None) -> Path:
        """The verified checkpoint of a model id or stage (scoped as in :meth:`get`).

        Raises:
            RegistryError: when the model is unknown or its checkpoint missing, changed
                or outside the artifact root.
        """
        record = self.get(ref, env=env, scenario=scenario)
        status = self.verify(record)
        if status != "ok":
            raise RegistryError(f"model {record.id}: checkpoint {record.checkpoint!r} is "
                                f"{status}")
        return Path(record.checkpoint)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise RegistryError(f"stage must be one of {list(STAGES)}, got {stage!r}")


def resolve(ref: str | Path, registry: str | Path | None = None, *, env: str | None = None,
            scenario: str | None = None) -> tuple[Path, ModelRecord | None]:
    """A model reference as a checkpoint folder: the folder itself, or the verified
    checkpoint of a registry model id or stage (with its record).

    Args:
        ref: A checkpoint folder, a model id, or a stage.
        registry: The registry's location (see :class:`ModelRegistry`).
        env: Scope of a stage reference: the env its model was trained for.
        scenario: Scope of a stage reference: the scenario.

    Raises:
        ValueError: when `ref` is neither a folder nor usable in the registry (why).
    """
    if Path(ref).is_dir():
        return Path(ref), None
    try:
        reg = ModelRegistry(registry)
        record = reg.get(str(ref), env=env, scenario=scenario)
        return reg.checkpoint_path(record.id), record
    except RegistryError as exc:
        raise ValueError(f"model {str(ref)!r} is neither a checkpoint folder nor usable in "
                         f"the registry: {exc}") from exc
