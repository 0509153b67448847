"""Run folders on disk: what a checkpoint save may replace, what survives a crash between
its renames, `train --output` and `--overwrite`, and sweep folders taken before Ray
starts (no Ray started)."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from lwmecps_rllib import atomic
from lwmecps_rllib.algorithms import inference
from lwmecps_rllib.jobs import TrainingTask
from lwmecps_rllib.train import __main__ as train_cli
from lwmecps_rllib.train import save_atomic
from lwmecps_rllib.tune import SweepError, load_sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]


class FakeAlgo:
    """What `save_atomic` uses of an Algorithm: `save_to_path` and `config.env_config`.

    Each save writes an RLlib-style checkpoint whose module file holds `version`.
    """

    def __init__(self, version: str) -> None:
        self.version = version
        self.config = SimpleNamespace(env_config={})

    def save_to_path(self, path: str) -> None:
        folder = Path(path)
        (folder / "rllib_checkpoint.json").write_text("{}")
        module = folder / inference.MODULE_SUBDIR
        module.mkdir(parents=True)
        (module / "module_state.pt").write_text(self.version)

    def stop(self) -> None:
        pass


def version(checkpoint: Path) -> str:
    return (checkpoint / inference.MODULE_SUBDIR / "module_state.pt").read_text()


def run_folder(root: Path) -> Path:
    """A finished `train` run: checkpoint, metrics and evaluation."""
    save_atomic(FakeAlgo("old"), root / "checkpoint")
    (root / "metrics.json").write_text("[1]")
    (root / "evaluation.json").write_text("{}")
    return root


def test_a_checkpoint_is_replaced_whole_and_nothing_else_is(tmp_path: Path) -> None:
    ckpt = save_atomic(FakeAlgo("v1"), tmp_path / "ckpt")
    assert version(ckpt) == "v1" and (ckpt / "env_options.json").exists()
    assert version(save_atomic(FakeAlgo("v2"), ckpt)) == "v2"
    assert not atomic.backup_path(ckpt).exists()
    (tmp_path / "empty").mkdir()
    assert version(save_atomic(FakeAlgo("v3"), tmp_path / "empty")) == "v3"

    run = run_folder(tmp_path / "run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(FileExistsError, match="is not an algorithm checkpoint"):
        save_atomic(FakeAlgo("new"), run)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert version(run / "checkpoint") == "old"
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"notes\.txt"):
        save_atomic(FakeAlgo("new"), tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def crash_on_second_rename(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """The process dies once `target` is renamed to its backup (the first rename of the
    swap): the second rename and any after it (the dying process's cleanup) fail."""
    moved = {"target": False}
    real = os.rename

    def rename(src: Any, dst: Any) -> None:
        if moved["target"]:
            raise KeyboardInterrupt("killed between the renames")
        real(src, dst)
        moved["target"] = Path(src) == target.resolve()

    monkeypatch.setattr(os, "rename", rename)


def crashed_save(tmp_path: Path) -> Path:
    """A checkpoint ("old") whose next save ("new") died between the two renames."""
    ckpt = save_atomic(FakeAlgo("old"), tmp_path / "ckpt")
    with pytest.MonkeyPatch.context() as m:
        crash_on_second_rename(m, ckpt)
        with pytest.raises(KeyboardInterrupt):
            save_atomic(FakeAlgo("new"), ckpt)
    return ckpt


def test_a_crash_between_the_renames_is_recovered_by_the_next_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = crashed_save(tmp_path)
    assert not ckpt.exists() and version(atomic.backup_path(ckpt)) == "old"

    monkeypatch.setattr(inference.RLModule, "from_checkpoint", classmethod(lambda cls, p: p))
    loaded = inference.load_module(ckpt)
    assert Path(loaded) == (ckpt / inference.MODULE_SUBDIR).resolve()
    assert version(ckpt) == "old" and not atomic.backup_path(ckpt).exists()


def test_a_crash_between_the_renames_is_recovered_by_the_next_save(tmp_path: Path) -> None:
    ckpt = crashed_save(tmp_path)
    assert not ckpt.exists()
    assert version(save_atomic(FakeAlgo("next"), ckpt)) == "next"
    assert not atomic.backup_path(ckpt).exists()
    # A backup beside a folder that is in place (a crash after the second rename) goes.
    atomic.backup_path(ckpt).mkdir()
    assert atomic.recover(ckpt) is None and not atomic.backup_path(ckpt).exists()


def test_an_interrupted_swap_puts_the_old_folder_back(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = save_atomic(FakeAlgo("old"), tmp_path / "ckpt")
    real = os.rename
    calls = {"n": 0}

    def rename(src: Any, dst: Any) -> None:  # only the second rename fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("no")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="no"):
        save_atomic(FakeAlgo("new"), ckpt)
    assert version(ckpt) == "old" and not atomic.backup_path(ckpt).exists()


def no_training(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("training started")


def test_train_refuses_an_existing_run_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(train_cli, "train", no_training)
    run = run_folder(tmp_path / "run")
    assert train_cli.main(["--output", str(run)]) == 2
    assert "already holds a run; pass --overwrite" in capsys.readouterr().err
    assert version(run / "checkpoint") == "old" and (run / "evaluation.json").exists()
    (tmp_path / "odd" / "checkpoint").mkdir(parents=True)
    (tmp_path / "odd" / "checkpoint" / "data.csv").write_text("1")
    assert train_cli.main(["--output", str(tmp_path / "odd"), "--overwrite"]) == 2
    assert "is not an algorithm checkpoint" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert train_cli.main(["--output", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_train_overwrite_replaces_the_run(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_cli, "train",
                        lambda *a, **k: (FakeAlgo("new"), [{"training_iteration": 1.0}]))
    run = run_folder(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    assert train_cli.main(["--output", str(run), "--overwrite", "--no-eval"]) == 0
    assert version(run / "checkpoint") == "new"
    assert json.loads((run / "metrics.json").read_text()) == [{"training_iteration": 1.0}]
    assert not (run / "evaluation.json").exists()  # the old run's, not this checkpoint's
    assert (run / "notes.txt").read_text() == "mine"


def test_a_job_passes_overwrite_to_train_and_never_to_a_sweep() -> None:
    task = TrainingTask(name="ppo-1", overwrite=True, output="/data")
    assert task.entrypoint().split()[-1] == "--overwrite"
    assert "--overwrite" not in TrainingTask(name="ppo-1").entrypoint()
    with pytest.raises(ValidationError, match="overwrite"):
        TrainingTask(name="sw", sweep="tune_configs/smoke.yaml", overwrite=True)


class RayStartedError(Exception):
    """`ray.init` was called."""


@pytest.fixture
def ray_init(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`ray.init` records its calls and raises :class:`RayStartedError` once `release` is set."""
    import ray

    state: dict[str, Any] = {"calls": 0, "release": threading.Event()}
    state["release"].set()

    def init(*args: Any, **kwargs: Any) -> None:
        state["calls"] += 1
        assert state["release"].wait(timeout=30), "never released"
        raise RayStartedError

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return state


def test_two_starts_of_one_sweep_name_exactly_one_proceeds(tmp_path: Path,
                                                           ray_init: dict[str, Any]) -> None:
    cfg = load_sweep(ROOT / "tune_configs" / "smoke.yaml")
    ray_init["release"].clear()  # the start that proceeds waits in ray.init
    barrier = threading.Barrier(2)

    def start() -> None:
        barrier.wait(timeout=30)
        run_sweep(cfg, tmp_path / "tune")

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(start) for _ in range(2)]
        done, _ = wait(futures, timeout=30, return_when=FIRST_COMPLETED)
        assert len(done) == 1, "neither start was refused"
        with pytest.raises(SweepError, match="exists; pass --resume"):
            done.pop().result()
        ray_init["release"].set()
        errors = [f.exception(timeout=30) for f in futures]
    assert sum(isinstance(e, RayStartedError) for e in errors) == 1
    assert ray_init["calls"] == 1


def test_a_taken_folder_is_refused_without_ray_and_a_failed_start_frees_it(
        tmp_path: Path, ray_init: dict[str, Any]) -> None:
    cfg = load_sweep(ROOT / "tune_configs" / "smoke.yaml")
    folder = tmp_path / "tune" / cfg.name
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    with pytest.raises(SweepError, match="exists; pass --resume"):
        run_sweep(cfg, tmp_path / "tune")
    assert ray_init["calls"] == 0 and [p.name for p in folder.iterdir()] == ["result.json"]
    (folder / "result.json").unlink()
    # An empty folder is free; a start that fails before Tune runs leaves it as it was.
    with pytest.raises(RayStartedError):
        run_sweep(cfg, tmp_path / "tune")
    assert folder.is_dir() and not any(folder.iterdir())
    folder.rmdir()
    with pytest.raises(RayStartedError):
        run_sweep(cfg, tmp_path / "tune")
    assert not folder.exists() and ray_init["calls"] == 2


def test_resume_goes_on_in_a_taken_folder(tmp_path: Path, ray_init: dict[str, Any]) -> None:
    from lwmecps_rllib.tune.run import claim_folder

    cfg = load_sweep(ROOT / "tune_configs" / "smoke.yaml")
    folder = tmp_path / "tune" / cfg.name
    claim_folder(folder, cfg)
    (folder / "tuner.pkl").write_bytes(b"")
    with pytest.raises(RayStartedError):
        run_sweep(cfg, tmp_path / "tune", resume=True)
    assert load_sweep(folder / "sweep.yaml") == cfg and (folder / "tuner.pkl").exists()
    with pytest.raises(SweepError, match="nothing to resume"):
        run_sweep(cfg, tmp_path / "other", resume=True)
    assert ray_init["calls"] == 1
