"""Model registry: registration, stages, integrity checks and the CLI (no Ray)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from lwmecps_rllib.algorithms.inference import MODULE_SUBDIR
from lwmecps_rllib.model_registry import ModelRegistry, RegistryError
from lwmecps_rllib.model_registry import __main__ as models


def fake_checkpoint(root: Path, payload: bytes = b"weights") -> Path:
    """A folder shaped like an algorithm checkpoint."""
    mod = root / MODULE_SUBDIR
    mod.mkdir(parents=True)
    (mod / "module_state.pt").write_bytes(payload)
    (root / "algorithm_state.pkl").write_bytes(b"state")
    return root


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "reg" / "registry.sqlite")


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


def test_promote_archives_previous_production_of_same_env_and_scenario(registry, tmp_path):
    a = register(registry, tmp_path, "a")
    b = register(registry, tmp_path, "b")
    other = register(registry, tmp_path, "c", scenario="testbed-4bs-peak")
    registry.promote(a)
    registry.promote(other)
    assert registry.get("production").id in (a, other)
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
    reg = str(registry.path)
    ck = fake_checkpoint(tmp_path / "ck")
    assert models.main(["--registry", reg, "register", str(ck), "--algo", "ppo", "--env",
                        "LWMECPSEnv3", "--scenario", "testbed-4bs"]) == 0
    model_id = capsys.readouterr().out.split(":")[0]
    assert models.main(["--registry", reg, "promote", model_id]) == 0
    assert models.main(["--registry", reg, "show", "production"]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["id"] == model_id and shown["algorithm"] == "lwmecps-ppo"
    assert shown["checkpoint_status"] == "ok"
    assert models.main(["--registry", reg, "list", "--stage", "production"]) == 0
    assert model_id in capsys.readouterr().out
    assert models.main(["--registry", reg, "archive", model_id]) == 0
    assert models.main(["--registry", reg, "show", "nope"]) == 2
    assert "not found" in capsys.readouterr().err
    assert models.main(["--registry", reg, "register", str(ck), "--algo", "sarsa", "--env",
                        "LWMECPSEnv3", "--scenario", "testbed-4bs"]) == 2
    assert "algorithm must be one of" in capsys.readouterr().err
