"""Sweep files: the shipped ones load, the default is the built-in default, and bad
keys or ranges fail naming the key (no Ray started)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from lwmecps_rllib.tune import (
    SweepConfig,
    SweepError,
    base_config,
    load_sweep,
    search_space,
    sweep_from_dict,
    training_parameters,
)

CONFIGS = sorted(Path(__file__).resolve().parents[1].glob("tune_configs/*.yaml"))


def test_every_algorithm_has_a_shipped_sweep():
    algos = {load_sweep(p).algorithm for p in CONFIGS}
    assert {"ppo", "dqn", "qlearning"} <= algos
    assert {"default.yaml", "ppo.yaml", "dqn.yaml", "qlearning.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_sweeps_load(path):
    cfg = load_sweep(path)
    space = search_space(cfg)
    assert set(space) == set(cfg.search_space)


def test_sweep_trains_on_augmented_days_when_asked():
    cfg = load_sweep(Path(CONFIGS[0]).parent / "ppo.yaml")
    opts = cfg.env_options()  # from the file's preset
    assert (opts.shuffle_stations, opts.load_jitter) == (True, 0.2)
    env_config = base_config(cfg).env_config
    assert env_config["shuffle_stations"] is True and env_config["load_jitter"] == 0.2
    assert "load_jitter" not in base_config(sweep_from_dict(base())).env_config
    # The default sweep trains on the preset's augmented days too.
    assert base_config(SweepConfig()).env_config["load_jitter"] == 0.2


def test_default_file_is_the_builtin_default():
    assert load_sweep(Path(CONFIGS[0]).parent / "default.yaml") == SweepConfig()


def test_search_space_maps_to_tune_domains():
    from ray.tune.search.sample import Categorical, Float

    space = search_space(sweep_from_dict(base()))
    assert isinstance(space["learning_rate"], Float)
    assert space["learning_rate"].lower == 1e-4 and space["learning_rate"].upper == 1e-3
    assert isinstance(space["discount_factor"], Categorical)
    grid = search_space(load_sweep(Path(CONFIGS[0]).parent / "qlearning.yaml"))
    assert grid["bins"] == {"grid_search": [5, 8, 10]}


def test_reference_names_are_training_parameters():
    from lwmecps_rllib.algorithms import get_algorithm_class

    for algo in ("ppo", "dqn", "qlearning"):
        names = training_parameters(get_algorithm_class(algo).get_default_config())
        assert {"learning_rate", "discount_factor", "epsilon", "lr", "gamma"} <= set(names)


#: A sweep without a preset over the reference's three parameters (what the rejections
#: below edit one key of).
BASE = {"name": "base", "algorithm": "ppo", "scenario": "testbed-4bs", "preset": None,
        "params": {"discount_factor": 0.9},
        "search_space": {"learning_rate": {"loguniform": [1.0e-4, 1.0e-3]},
                         "discount_factor": {"choice": [0.9, 0.95]},
                         "epsilon": {"uniform": [0.1, 0.3]}},
        "search": {"algorithm": "random", "num_samples": 4, "max_concurrent_trials": 2},
        "scheduler": {"type": "asha", "grace_period": 3},
        "stop": {"training_iteration": 12}}


def base() -> dict:
    return sweep_from_dict(BASE).to_dict()


def with_(path: str, value) -> dict:
    d = copy.deepcopy(base())
    *parents, last = path.split(".")
    cur = d
    for p in parents:
        cur = cur[p]
    cur[last] = value
    return d


@pytest.mark.parametrize(("path", "value", "message"), [
    ("algorithm", "sarsa", "algorithm: algorithm must be one of"),
    ("env", "CartPole-v1", "env must be one of"),
    ("scenario", "mars-1", "scenario"),
    ("search_space.learning_rate", {"loguniform": [-1.0, 1e-3]},
     "search_space.learning_rate.loguniform: low must be > 0"),
    ("search_space.learning_rate", {"uniform": [1e-3, 1e-4]},
     "search_space.learning_rate.uniform: low must be < high"),
    ("search_space.discount_factor", {"uniform": [0.9, 1.5]},
     "search_space.discount_factor: discount_factor must be a number >= 0.0 and <= 1.0"),
    ("search_space.epsilon", {"choice": [0.1, -0.2]}, "search_space.epsilon: epsilon"),
    ("search_space.learning_rate", {"normal": [0, 1]}, "search_space.learning_rate must be"),
    ("search_space.learning_rate", {"uniform": [1e-4]}, "must be [low, high]"),
    ("search_space.warp_speed", {"uniform": [0, 1]}, "unknown parameter search_space.warp_speed"),
    ("params.learning_rate", 0.0, "params.learning_rate: learning_rate must be a number > 0"),
    ("params.warp", 1, "unknown parameter params.warp"),
    ("search.algorithm", "bohb", "search.algorithm must be one of"),
    ("search.num_samples", 0, "search.num_samples must be an integer >= 1"),
    ("search.colour", "red", "unknown key search.colour"),
    ("scheduler.type", "pbt", "scheduler.type must be one of"),
    ("scheduler.reduction_factor", 1, "scheduler.reduction_factor must be > 1"),
    ("stop", {"episodes": 3}, "unknown key stop.episodes"),
    ("stop", {"training_iteration": -1}, "stop.training_iteration must be a number > 0"),
    ("stop", {}, "stop must name at least one of"),
    ("resources", {"gpu": 1}, "unknown key resources.gpu"),
    ("mode", "best", "mode must be 'max' or 'min'"),
    ("checkpoint.frequency", 0, "checkpoint.frequency must be an integer >= 1"),
    ("evaluation.trace", "c", "evaluation.trace must be 'a' or 'b'"),
    ("evaluation.baselines", ["oracle", "magic"], "evaluation.baselines: 'magic'"),
    ("colour", "red", "unknown key 'colour'"),
    ("load_jitter", 1.0, "load_jitter must be a number in [0, 1)"),
    ("shuffle_stations", "yes", "shuffle_stations must be True or False"),
    # Strict types: a bool is not an integer, a string or nan is not a number.
    ("search.num_samples", True, "search.num_samples must be an integer >= 1, got True"),
    ("seed", 1.5, "seed must be an integer, got 1.5"),
    ("resources", {"cpu": "1"}, "resources.cpu must be a number > 0, got '1'"),
    ("stop", {"time_s": float("nan")}, "stop.time_s must be a number > 0, got nan"),
    ("evaluation.enabled", "no", "evaluation.enabled must be True or False, got 'no'"),
    ("register", 1, "register must be True or False, got 1"),
    ("search", 5, "search must be a mapping of ['algorithm', 'num_samples'"),
    ("params", {1: 0.5}, "params keys must be strings, got 1"),
    ("search_space.learning_rate", {"uniform": [True, 1]}, "must be [low, high] (numbers)"),
])
def test_bad_sweeps_name_the_key(path, value, message):
    with pytest.raises(SweepError) as err:
        sweep_from_dict(with_(path, value))
    assert message in str(err.value)


def test_grid_and_model_based_search_constraints():
    d = with_("search.algorithm", "grid")
    with pytest.raises(SweepError, match=r"search_space\.learning_rate is loguniform"):
        sweep_from_dict(d)
    d = with_("search.algorithm", "optuna")
    d["search_space"]["learning_rate"] = {"grid": [1e-4, 1e-3]}
    with pytest.raises(SweepError, match="cannot search a grid"):
        sweep_from_dict(d)
    d = with_("scheduler.max_t", 2)
    with pytest.raises(SweepError, match=r"scheduler\.max_t must be an integer >= grace_period"):
        sweep_from_dict(d)


def test_to_dict_is_the_file_format():
    cfg = load_sweep(Path(CONFIGS[0]).parent / "smoke.yaml")
    d = cfg.to_dict()
    assert list(d)[-1] == "register" and d["register"] is True
    assert d["stop"] == {"training_iteration": 2}
    assert type(d["stop"]["training_iteration"]) is int
    assert sweep_from_dict(d) == cfg


@pytest.mark.parametrize("name", ["default.yaml", "ppo.yaml", "dqn.yaml"])
def test_a_written_sweep_trains_the_same_env_when_read_back(name):
    # `sweep.yaml`, `--resume` and every command-line override (`make run` passes
    # `--name`) go through to_dict and back: the preset's training days must survive.
    from lwmecps_rllib.tune.__main__ import build_parser, build_sweep

    path = Path(CONFIGS[0]).parent / name
    cfg = load_sweep(path)
    assert sweep_from_dict(cfg.to_dict()).env_options() == cfg.env_options()
    renamed = build_sweep(build_parser().parse_args(["--config", str(path), "--name", "x"]))
    assert renamed.name == "x" and renamed.env_options() == cfg.env_options()
    assert base_config(renamed).env_config == base_config(cfg).env_config


def test_command_line_overrides_are_checked(capsys):
    from lwmecps_rllib import tune

    assert tune.main(["--num-samples", "0"]) == 2
    assert "search.num_samples must be an integer >= 1, got 0" in capsys.readouterr().err


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlearning_rat: 0.1\n")
    with pytest.raises(SweepError, match=r"bad.yaml: unknown key 'learning_rat'"):
        load_sweep(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="not valid YAML"):
        load_sweep(bad)


def test_a_preset_gives_the_recommended_settings_under_the_files() -> None:
    from lwmecps_rllib.presets import recommended

    cfg = load_sweep(Path(__file__).resolve().parents[1] / "tune_configs" / "ppo.yaml")
    preset = recommended("ppo", "testbed-4bs-peak")
    assert cfg.training().params == preset.params
    opts = cfg.env_options()
    assert opts.shuffle_stations is True and opts.load_jitter == preset.load_jitter == 0.2
    own = sweep_from_dict({**cfg.to_dict(), "params": {"entropy_coeff": 0.01},
                           "load_jitter": 0.0})
    assert own.training().params["entropy_coeff"] == 0.01
    assert own.training().params["minibatch_size"] == preset.params["minibatch_size"]
    assert own.env_options().load_jitter == 0.0
    with pytest.raises(SweepError, match="preset"):
        sweep_from_dict({"preset": "fastest"})


def test_our_algorithms_own_settings_are_sweep_parameters() -> None:
    cfg = sweep_from_dict({"preset": None, "params": {"views": "local", "mask_actions": False}})
    assert cfg.training().params == {"views": "local", "mask_actions": False}
    with pytest.raises(SweepError, match="mask_actions must be true or false"):
        sweep_from_dict({"params": {"mask_actions": "no"}})
