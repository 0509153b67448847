"""Model registry: registration, stages, integrity checks and the CLI (no Ray).

The registry's behaviour is tested against both stores: an SQLite file and a real
PostgreSQL server, started once per session from the machine's PostgreSQL binaries
(Debian's `postgresql` package; `.ci/run` installs it) and removed at the end.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port

from lwmecps_rllib.algorithms.inference import MODULE_SUBDIR
from lwmecps_rllib.model_registry import (
    ModelRegistry,
    RegistryError,
    checkpoint_checksum,
    resolve,
)
from lwmecps_rllib.model_registry import __main__ as models

PG_USER = "nobody"


def fake_checkpoint(root: Path, payload: bytes = b"weights") -> Path:
    """A folder shaped like an algorithm checkpoint."""
    mod = root / MODULE_SUBDIR
    mod.mkdir(parents=True)
    (mod / "module_state.pt").write_bytes(payload)
    (root / "algorithm_state.pkl").write_bytes(b"state")
    return root


def unavailable(reason: str) -> None:
    """Skip a PostgreSQL test where the server cannot run; fail under CI, which installs it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL tests cannot run: {reason}")
    pytest.skip(reason)


def postgres_bindir() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: on PATH, else Debian's newest version."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(Path(p).parts[-3]))
    return Path(dirs[-1]).parent if dirs else None


def run_as_owner(args: list[str], cwd: Path) -> None:
    """Run a PostgreSQL program as an unprivileged user (it refuses to run as root)."""
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    done = subprocess.run(prefix + args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): "
                           f"{done.stdout}{done.stderr}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free port of 127.0.0.1: its superuser URL."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install '.[postgres]')")
    bindir = postgres_bindir()
    if bindir is None:
        unavailable("PostgreSQL's initdb is not installed (apt-get install postgresql)")
    home = Path(tempfile.mkdtemp(prefix="lwmecps-pg-"))
    data, port = home / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(home, user=PG_USER)
    try:
        run_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"], home)
        run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"),
                      "-w", "-t", "60", "-o", f"-p {port} -k {home} "
                      "-c listen_addresses=127.0.0.1 -c fsync=off", "start"], home)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                          "stop"], home)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def pg_database(postgres_server: str) -> Iterator[str]:
    """A fresh database on the session's server: its URL."""
    import psycopg

    name = f"registry_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    """An empty registry in each store."""
    if request.param == "sqlite":
        return ModelRegistry(tmp_path / "reg" / "registry.sqlite")
    return ModelRegistry(request.getfixturevalue("pg_database"),
                         artifacts=tmp_path / "reg" / "checkpoints")


def raw_execute(registry: ModelRegistry, sql: str, args: tuple) -> None:
    """One statement on the registry's database, bypassing the registry."""
    if registry.path is not None:
        with sqlite3.connect(registry.path) as conn:
            conn.execute(sql, args)
        conn.close()
        return
    import psycopg

    with psycopg.connect(registry.location, autocommit=True) as conn:
        conn.execute(sql.replace("?", "%s"), args)


def cli(registry: ModelRegistry, *argv: str) -> int:
    """The `models` command line on `registry`."""
    return models.main(["--registry", registry.location, "--artifacts", str(registry.root),
                        *argv])


def register(registry: ModelRegistry, tmp_path: Path, name: str, **kw) -> str:
    ck = fake_checkpoint(tmp_path / name)
    args = {"algorithm": "lwmecps-ppo", "env": "LWMECPSEnv3", "scenario": "testbed-4bs"}
    return registry.register(ck, **{**args, **kw}).id


def test_register_copies_checkpoint_and_records_everything(registry, tmp_path):
    ck = fake_checkpoint(tmp_path / "ck")
    rec = registry.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                            scenario="testbed-4bs", config={"learning_rate": 3e-4},
                            metrics={"eval/total_reward": -10.4})
    assert rec.stage == "candidate"
    assert rec.id.startswith("ppo-")
    copied = Path(rec.checkpoint)
    assert copied.parent == registry.root.resolve()
    assert (copied / MODULE_SUBDIR / "module_state.pt").read_bytes() == b"weights"
    # The original can go; the registry keeps its copy.
    (ck / MODULE_SUBDIR / "module_state.pt").unlink()
    again = registry.get(rec.id)
    assert again == rec
    assert again.config == {"learning_rate": 3e-4}
    assert registry.verify(again) == "ok"
    assert registry.checkpoint_path(rec.id) == copied


def test_a_size_general_model_is_recorded_with_its_station_range(registry, tmp_path):
    ck = fake_checkpoint(tmp_path / "general")
    (ck / "env_options.json").write_text('{"obs_format": "graph", "stations": [4, 32]}')
    rec = registry.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                            scenario="testbed-4bs-peak", config={"learning_rate": 3e-4})
    assert rec.config == {"learning_rate": 3e-4, "size_general": True, "stations": [4, 32]}
    wide = registry.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                             scenario="testbed-4bs-peak", stations=(2, 64))
    assert registry.get(wide.id).config["stations"] == [2, 64]
    copied = json.loads((Path(wide.checkpoint) / "env_options.json").read_text())
    assert copied == {"obs_format": "graph", "stations": [2, 64]}
    with pytest.raises(RegistryError, match=r"stations must be \(least, most\)"):
        registry.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                          scenario="testbed-4bs-peak", stations=(8, 4))
    bound = fake_checkpoint(tmp_path / "bound")
    with pytest.raises(RegistryError, match=r"stations: .*is bound to its scenario"):
        registry.register(bound, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                          scenario="testbed-4bs", stations=(4, 8))
    assert cli(registry, "register", str(ck), "--algo", "ppo", "--env", "LWMECPSEnv3",
               "--scenario", "testbed-4bs-peak", "--stations", "4-128") == 0
    assert cli(registry, "list") == 0


def test_promote_archives_previous_production_of_same_env_and_scenario(registry, tmp_path):
    a = register(registry, tmp_path, "a")
    b = register(registry, tmp_path, "b")
    other = register(registry, tmp_path, "c", scenario="testbed-4bs-peak")
    registry.promote(a)
    registry.promote(other)
    registry.promote(b)
    stages = {r.id: r.stage for r in registry.list()}
    assert stages == {a: "archived", b: "production", other: "production"}
    assert [r.id for r in registry.list(stage="production", env="LWMECPSEnv3")] in (
        [b, other], [other, b])
    registry.archive(b)
    assert registry.get(b).stage == "archived"


def test_missing_and_corrupt_checkpoints_are_reported(registry, tmp_path):
    a = register(registry, tmp_path, "a")
    b = register(registry, tmp_path, "b")
    rec_a, rec_b = registry.get(a), registry.get(b)
    (Path(rec_a.checkpoint) / MODULE_SUBDIR / "module_state.pt").write_bytes(b"tampered")
    import shutil

    shutil.rmtree(rec_b.checkpoint)
    assert registry.verify(rec_a) == "corrupt (checksum mismatch)"
    assert registry.verify(rec_b) == "missing"
    with pytest.raises(RegistryError, match="corrupt"):
        registry.checkpoint_path(a)
    with pytest.raises(RegistryError, match="missing"):
        registry.promote(b)
    assert registry.get(b).stage == "candidate"
    table = models.format_models(registry)
    assert "missing" in table and "corrupt" in table


def test_bad_input_is_refused_and_leaves_nothing(registry, tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register(tmp_path / "nope", algorithm="a", env="e", scenario="s")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RegistryError, match="holds no RLModule"):
        registry.register(empty, algorithm="a", env="e", scenario="s")
    with pytest.raises(RegistryError, match="stage must be one of"):
        registry.register(fake_checkpoint(tmp_path / "x"), algorithm="a", env="e",
                          scenario="s", stage="gold")
    with pytest.raises(RegistryError, match="not found"):
        registry.get("ppo-unknown")
    with pytest.raises(RegistryError, match="no model in stage 'production'"):
        registry.get("production")
    assert registry.list() == []
    assert not registry.root.exists() or not any(registry.root.iterdir())


def test_failed_insert_rolls_back_the_copy(registry, tmp_path, monkeypatch):
    register(registry, tmp_path, "a")

    def boom(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(sqlite3.OperationalError):
        register(registry, tmp_path, "b")
    monkeypatch.undo()
    assert len(registry.list()) == 1
    assert sorted(p.name for p in registry.root.iterdir()) == [registry.list()[0].id]


def test_cli_list_show_promote_archive(registry, tmp_path, capsys):
    ck = fake_checkpoint(tmp_path / "ck")
    assert cli(registry, "register", str(ck), "--algo", "ppo", "--env", "LWMECPSEnv3",
               "--scenario", "testbed-4bs") == 0
    model_id = capsys.readouterr().out.split(":")[0]
    assert cli(registry, "promote", model_id) == 0
    assert cli(registry, "show", "production") == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["id"] == model_id and shown["algorithm"] == "lwmecps-ppo"
    assert shown["checkpoint_status"] == "ok"
    assert cli(registry, "show", "production", "--env", "LWMECPSEnv3", "--scenario",
               "testbed-4bs") == 0
    assert json.loads(capsys.readouterr().out)["id"] == model_id
    assert cli(registry, "list", "--stage", "production", "--scenario", "testbed-4bs") == 0
    assert model_id in capsys.readouterr().out
    assert cli(registry, "list", "--scenario", "metro-16") == 0
    assert model_id not in capsys.readouterr().out
    assert cli(registry, "archive", model_id) == 0
    assert cli(registry, "show", "nope") == 2
    assert "not found" in capsys.readouterr().err
    assert cli(registry, "register", str(ck), "--algo", "sarsa", "--env", "LWMECPSEnv3",
               "--scenario", "testbed-4bs") == 2
    assert "algorithm must be one of" in capsys.readouterr().err


def test_stage_lookup_is_scoped_by_env_and_scenario(registry, tmp_path, monkeypatch):
    a = register(registry, tmp_path, "a")
    peak = register(registry, tmp_path, "b", scenario="testbed-4bs-peak")
    registry.promote(a)
    registry.promote(peak)
    with pytest.raises(RegistryError, match=r"stage 'production' is ambiguous: .* 2 env/"
                       r"scenario pairs \(LWMECPSEnv3/testbed-4bs, LWMECPSEnv3/testbed-4bs-peak\)"):
        registry.get("production")
    with pytest.raises(RegistryError, match="ambiguous"):
        registry.get("production", env="LWMECPSEnv3")
    assert registry.get("production", env="LWMECPSEnv3", scenario="testbed-4bs").id == a
    assert registry.get("production", scenario="testbed-4bs-peak").id == peak
    assert registry.checkpoint_path("production", scenario="testbed-4bs").name == a
    with pytest.raises(RegistryError, match="no model in stage 'production' for env "
                                            "'LWMECPSEnv' and scenario 'testbed-4bs'"):
        registry.get("production", env="LWMECPSEnv", scenario="testbed-4bs")
    # resolve() scopes the same way (the serving and evaluate entry point).
    monkeypatch.setenv("LWMECPS_REGISTRY_ARTIFACTS", str(registry.root))
    path, rec = resolve("production", registry.location, env="LWMECPSEnv3",
                        scenario="testbed-4bs-peak")
    assert rec.id == peak and path == Path(rec.checkpoint)
    with pytest.raises(ValueError, match="ambiguous"):
        resolve("production", registry.location)
    # A model id is found whatever the scope; its env and scenario are the caller's check.
    assert registry.get(a, scenario="testbed-4bs-peak").scenario == "testbed-4bs"


def test_register_as_production_archives_the_previous_one(registry, tmp_path):
    a = register(registry, tmp_path, "a", stage="production")
    other = register(registry, tmp_path, "o", stage="production", scenario="metro-16")
    b = register(registry, tmp_path, "b", stage="production")
    stages = {r.id: r.stage for r in registry.list()}
    assert stages == {a: "archived", other: "production", b: "production"}
    registry.promote(b)  # promoting the production model again keeps it
    assert registry.get(b).stage == "production"


def test_schema_allows_one_production_model_per_env_and_scenario(registry, tmp_path):
    a = register(registry, tmp_path, "a", stage="production")
    b = register(registry, tmp_path, "b")
    with pytest.raises(Exception, match=r"models_one_production|UNIQUE constraint failed"):
        raw_execute(registry, "UPDATE models SET stage = 'production' WHERE id = ?", (b,))
    assert {r.id: r.stage for r in registry.list()} == {a: "production", b: "candidate"}


def test_two_writers_at_once_leave_one_production_model(registry, tmp_path):
    rounds, start = 4, threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            start.wait(timeout=30)
            for i in range(rounds):
                ck = fake_checkpoint(tmp_path / f"{name}{i}")
                rec = registry.register(ck, algorithm="lwmecps-ppo", env="LWMECPSEnv3",
                                        scenario="testbed-4bs",
                                        stage="production" if i % 2 else "candidate")
                registry.promote(rec.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    records = registry.list()
    assert len(records) == 2 * rounds
    assert sorted(r.stage for r in records) == ["archived"] * (2 * rounds - 1) + ["production"]


def test_model_ids_and_algorithm_names_are_validated(registry, tmp_path):
    outside = tmp_path / "x"
    with pytest.raises(RegistryError, match=r"algorithm must match \[A-Za-z0-9\].*got "
                                            r"'\.\./\.\./x'"):
        registry.register(fake_checkpoint(tmp_path / "ck"), algorithm="../../x", env="e",
                          scenario="s")
    assert not outside.exists() and list(tmp_path.glob("x-*")) == []
    for bad in ("", "lwmecps/ppo", "-ppo", "a" * 65, "p p"):
        with pytest.raises(RegistryError, match="algorithm must match"):
            registry.register(tmp_path / "ck", algorithm=bad, env="e", scenario="s")
    with pytest.raises(RegistryError, match="env must be a non-empty name"):
        registry.register(tmp_path / "ck", algorithm="a", env=" ", scenario="s")
    for bad in ("../x", "a/b", ".hidden", "x" * 129):
        with pytest.raises(RegistryError, match=r"model id must match"):
            registry.get(bad)
        with pytest.raises(RegistryError, match=r"model id must match"):
            registry.promote(bad)
    assert registry.list() == []


def test_checksum_hashes_a_manifest_of_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "a").write_bytes(b"X")
    (one / "b").write_bytes(b"Y")
    (two / "a").write_bytes(b"Xb\0Y")
    assert checkpoint_checksum(one) != checkpoint_checksum(two)
    # A renamed file or moved boundary changes it too; equal files give equal sums.
    three = tmp_path / "three"
    three.mkdir()
    (three / "a").write_bytes(b"XY")
    (three / "c").write_bytes(b"")
    assert len({checkpoint_checksum(p) for p in (one, two, three)}) == 3
    shutil.copytree(one, tmp_path / "copy")
    assert checkpoint_checksum(tmp_path / "copy") == checkpoint_checksum(one)


def test_checkpoint_outside_the_artifact_root_is_refused(tmp_path):
    registry = ModelRegistry(tmp_path / "reg" / "registry.sqlite")
    model_id = register(registry, tmp_path, "a")
    elsewhere = fake_checkpoint(tmp_path / "elsewhere")
    with sqlite3.connect(registry.path) as conn:
        conn.execute("UPDATE models SET checkpoint = ? WHERE id = ?",
                     ("../../elsewhere", model_id))
    rec = registry.get(model_id)
    assert Path(rec.checkpoint) == elsewhere.resolve()
    assert registry.verify(rec).startswith("outside the artifact root")
    with pytest.raises(RegistryError, match="outside the artifact root"):
        registry.checkpoint_path(model_id)
    with pytest.raises(RegistryError, match="outside the artifact root"):
        registry.promote(model_id)


def test_postgres_registry_needs_an_artifact_root(monkeypatch, capsys):
    monkeypatch.delenv("LWMECPS_REGISTRY_ARTIFACTS", raising=False)
    url = "postgresql://reader:s3cret@db.invalid/models"
    with pytest.raises(RegistryError, match=r"'postgresql://reader:\*\*\*@db.invalid/models' "
                                            r"needs an artifact root"):
        ModelRegistry(url)
    assert models.main(["--registry", url, "list"]) == 2
    err = capsys.readouterr().err
    assert "needs an artifact root" in err and "s3cret" not in err


LEGACY_SCHEMA = """
CREATE TABLE models (
    id TEXT PRIMARY KEY, algorithm TEXT NOT NULL, env TEXT NOT NULL,
    scenario TEXT NOT NULL, config TEXT NOT NULL, metrics TEXT NOT NULL,
    checkpoint TEXT NOT NULL, checksum TEXT NOT NULL, created_at TEXT NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('candidate', 'production', 'archived'))
);
CREATE INDEX models_stage ON models (stage, env, scenario);
"""


def legacy_checksum(root: Path) -> str:
    """The first schema's checksum: relative names and contents, concatenated."""
    import hashlib

    h = hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_registry_of_the_first_schema_is_migrated(tmp_path):
    db = tmp_path / "reg" / "registry.sqlite"
    root = tmp_path / "reg" / "checkpoints"
    rows = []
    for i, (stage, scenario) in enumerate([("production", "testbed-4bs"),
                                           ("production", "testbed-4bs"),
                                           ("production", "metro-16"),
                                           ("candidate", "testbed-4bs")]):
        model_id = f"ppo-2026112{i}-000000-abcdef"
        ck = fake_checkpoint(root / model_id, payload=f"w{i}".encode())
        rows.append((model_id, "lwmecps-ppo", "LWMECPSEnv3", scenario, "{}", "{}",
                     str(ck.resolve()), legacy_checksum(ck), f"2026-11-2{i}T00:00:00+00:00",
                     stage))
    (root / rows[3][0] / "algorithm_state.pkl").write_bytes(b"tampered")
    with sqlite3.connect(db) as conn:
        conn.executescript(LEGACY_SCHEMA)
        conn.executemany("INSERT INTO models VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    conn.close()

    registry = ModelRegistry(db)
    stages = {r.id: r.stage for r in registry.list()}
    old, new, metro, tampered = (r[0] for r in rows)
    assert stages == {old: "archived", new: "production", metro: "production",
                      tampered: "candidate"}
    status = {r.id: registry.verify(r) for r in registry.list()}
    assert status == {old: "ok", new: "ok", metro: "ok",
                      tampered: "corrupt (checksum mismatch)"}
    assert registry.get(new).checksum == checkpoint_checksum(root / new)
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT id, checkpoint FROM models").fetchall())
    conn.close()
    assert stored[new] == new  # relative to the artifact root now
    # Opening again is a no-op; the new schema's rules hold.
    again = ModelRegistry(db)
    assert again.get("production", scenario="metro-16").id == metro
    again.promote(old)
    assert {r.id: r.stage for r in again.list(stage="production")} == {old: "production",
                                                                        metro: "production"}


def test_a_reader_without_write_access(pg_database, tmp_path):
    """A role that may only read: an empty database is a clear error, a registry works."""
    import psycopg

    role = f"reader_{uuid.uuid4().hex[:8]}"
    reader_url = pg_database.replace("postgres@", f"{role}@", 1)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        artifacts = tmp_path / "checkpoints"
        with pytest.raises(RegistryError, match=r"needs its tables created or migrated to "
                                                r"schema 2, which failed .*permission denied"):
            ModelRegistry(reader_url, artifacts=artifacts).list()
        writer = ModelRegistry(pg_database, artifacts=artifacts)
        model_id = register(writer, tmp_path, "a", stage="production")
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader = ModelRegistry(reader_url, artifacts=artifacts)
        assert reader.checkpoint_path("production", scenario="testbed-4bs").name == model_id
        with pytest.raises(RegistryError, match="permission denied"):
            reader.archive(model_id)
    finally:
        with psycopg.connect(pg_database, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            conn.execute(f"DROP ROLE {role}")
