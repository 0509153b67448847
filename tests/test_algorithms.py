"""Our algorithms: config checks (no Ray), then build/train/checkpoint and real learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lwmecps_rllib.algorithms import build_config as build_from_specs
from lwmecps_rllib.algorithms import get_algorithm_class
from lwmecps_rllib.scenarios import NodeSpec, Scenario, StationSpec
from lwmecps_rllib.spec import EnvOptions, Resources, TrainingSpec


def build_config(algo: str, env: str = "LWMECPSEnv3", *, params: dict | None = None,
                 seed: int = 0, num_envs: int | None = None, **options: object) -> object:
    """`build_config` of the run specs these loose test settings make."""
    return build_from_specs(TrainingSpec(algorithm=algo, params=params or {}, seed=seed,
                                         resources=Resources(num_envs=num_envs)),
                            env, EnvOptions(**options))

ALGOS = ("ppo", "dqn", "qlearning")


def tiny_scenario() -> Scenario:
    """Two stations of 60 users each, always: one pod throttles and times out, two do not.

    The optimum of LWMECPSEnv3 is therefore known: 2 replicas each (reward -10.4 a step;
    [1, 2] costs about 30 ms more latency, 0 replicas fail requests over).
    """
    users = np.full((60, 2), 60, dtype=np.int64)
    return Scenario(
        name="tiny-2bs",
        nodes=(NodeSpec("n1"), NodeSpec("n2")),
        stations=(StationSpec("bs1", "n1", "d1"), StationSpec("bs2", "n2", "d2")),
        delay_ms=np.array([[10.0, 20.0], [20.0, 10.0]]),
        traces={"a": users, "b": users},
        max_replicas=2,
        episode_length=5,
    )


@pytest.mark.parametrize(("params", "name"), [
    ({"learning_rate": -1e-3}, "learning_rate"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"discount_factor": 1.5}, "discount_factor"),
    ({"discount_factor": -0.1}, "discount_factor"),
    ({"epsilon": 2.0}, "epsilon"),
])
@pytest.mark.parametrize("algo", ALGOS)
def test_bad_hyper_parameters_fail_fast(algo: str, params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_config(algo, params=params)


def test_unknown_algorithm_and_parameter_are_named() -> None:
    with pytest.raises(ValueError, match=r"algorithm must be one of .*lwmecps-ppo"):
        get_algorithm_class("a2c")
    with pytest.raises(ValueError, match="unknown parameter for ppo"):
        build_config("ppo", params={"learning_rat": 1e-3})


def test_reference_names_map_to_rllib() -> None:
    cfg = build_config("ppo", params={"learning_rate": 1e-3, "discount_factor": 0.9,
                                      "epsilon": 0.3})
    assert (cfg.lr, cfg.gamma, cfg.clip_param) == (1e-3, 0.9, 0.3)
    dqn = build_config("dqn", params={"epsilon": 0.02})
    assert dqn.epsilon == 0.02 and dqn.model_config["epsilon"] == 0.02


def test_training_augmentation_reaches_the_batched_env() -> None:
    from lwmecps_rllib.envs import make_env

    cfg = build_config("ppo", scenario="testbed-4bs-peak", shuffle_stations=True,
                       load_jitter=0.2)
    assert cfg.env_config["shuffle_stations"] is True and cfg.env_config["load_jitter"] == 0.2
    # What RLlib's vector_entry_point mode builds from that env_config.
    venv = make_env("LWMECPSEnv3", {**cfg.env_config, "num_envs": 2})
    assert len(venv.trace) == 24 * 2 * venv.scenario.n_slots
    assert "shuffle_stations" not in build_config("ppo").env_config


SMALL = {
    "ppo": {"train_batch_size_per_learner": 256, "minibatch_size": 64, "num_epochs": 2},
    "dqn": {"learning_starts": 64, "updates_per_iteration": 2},
    "qlearning": {},
}


@pytest.mark.integration
@pytest.mark.parametrize("algo", ALGOS)
def test_train_checkpoint_restore(ray_session, algo: str, tmp_path: Path) -> None:
    from ray.rllib.algorithms.algorithm import Algorithm

    from lwmecps_rllib.algorithms.inference import greedy_actions, load_module
    from lwmecps_rllib.envs import make_env
    from lwmecps_rllib.train import save_atomic

    cfg = build_config(algo, scenario="testbed-4bs", params=SMALL[algo], num_envs=4)
    algo_obj = cfg.build_algo()
    for _ in range(2):
        result = algo_obj.train()
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] > 0
    env = make_env("LWMECPSEnv3", {})
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    before = greedy_actions(algo_obj.learner_group._learner.module["default_policy"], obs)
    ckpt = save_atomic(algo_obj, tmp_path / "ckpt")
    algo_obj.stop()
    restored = Algorithm.from_checkpoint(str(ckpt))
    after = greedy_actions(restored.learner_group._learner.module["default_policy"], obs)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(before, greedy_actions(load_module(ckpt), obs))
    restored.stop()


@pytest.mark.integration
def test_ppo_iteration_samples_one_train_batch(ray_session) -> None:
    cfg = build_config("ppo", scenario="testbed-4bs", params=SMALL["ppo"], num_envs=4)
    algo_obj = cfg.build_algo()
    try:
        for _ in range(2):
            sampled = algo_obj.train()["env_runners"]["num_env_steps_sampled"]
            assert sampled == 256
    finally:
        algo_obj.stop()


@pytest.mark.integration
@pytest.mark.parametrize("algo", ALGOS)
def test_same_seed_trains_the_same_weights(ray_session, algo: str) -> None:
    """Seeded runs are reproducible: env episodes, exploration and (DQN) replay draws."""
    import torch

    def weights(seed: int) -> list[torch.Tensor]:
        algo_obj = build_config(algo, scenario="testbed-4bs", params=SMALL[algo], seed=seed,
                                num_envs=4).build_algo()
        try:
            for _ in range(4):
                algo_obj.train()
            module = algo_obj.learner_group._learner.module["default_policy"]
            return [p.detach().clone() for p in module.parameters()]
        finally:
            algo_obj.stop()

    first, again, other = weights(0), weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


LEARN = {
    "ppo": ({"train_batch_size_per_learner": 512, "minibatch_size": 128, "num_epochs": 8,
             "learning_rate": 3e-3, "entropy_coeff": 0.0}, 40),
    "dqn": ({"learning_starts": 256, "epsilon_timesteps": 2000, "updates_per_iteration": 16,
             "target_network_update_freq": 500, "learning_rate": 2e-3}, 60),
    "qlearning": ({"learning_rate": 0.5, "epsilon_timesteps": 2000, "bins": 2,
                   "table_size": 4096}, 120),
}


@pytest.mark.integration
@pytest.mark.parametrize(("algo", "costs"), [(a, False) for a in ALGOS]
                         + [("dqn", True), ("qlearning", True)])
def test_learns_the_known_optimum(ray_session, algo: str, costs: bool) -> None:
    params, budget = LEARN[algo]
    params = {**params, "action_costs": True} if costs else params
    sc = tiny_scenario()
    algo_obj = build_config(algo, scenario=sc, params=params, seed=0, num_envs=8).build_algo()
    module = algo_obj.learner_group._learner.module["default_policy"]
    try:
        learned, actions = train_until_optimal(algo_obj, module, sc, budget)
    finally:
        algo_obj.stop()
    assert learned, f"{algo} did not learn [2, 2] within {budget} iterations: {actions}"


def train_until_optimal(algo_obj: object, module: object, sc: Scenario, budget: int,
                        after_iteration: object = None) -> tuple[bool, list]:
    """Train until the greedy policy of `module` keeps [2, 2] on the tiny scenario (its
    optimum), at most `budget` iterations; (learned, the last greedy actions).

    `after_iteration()`, when given, is called after each iteration.
    """
    from lwmecps_rllib.algorithms.inference import greedy_actions
    from lwmecps_rllib.envs import make_env

    env = make_env("LWMECPSEnv3", {"scenario": sc})
    actions: list = []
    for _ in range(budget):
        algo_obj.train()
        if after_iteration is not None:
            after_iteration()
        obs, _ = env.reset(seed=1)
        actions = []
        for _ in range(4):
            a = greedy_actions(module, obs[None])[0]
            actions.append(a.tolist())
            obs, *_ = env.step(a)
        if all(a == [2, 2] for a in actions):
            return True, actions
    return False, actions


@pytest.mark.integration
def test_docs_example_algorithm_registers_and_trains(ray_session) -> None:
    import importlib.util

    from lwmecps_rllib.algorithms import ALGORITHMS, register_algorithm
    from lwmecps_rllib.train import train

    path = Path(__file__).parent.parent / "examples" / "my_vpg.py"
    spec = importlib.util.spec_from_file_location("my_vpg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    register_algorithm("my-vpg", mod.VPG)
    try:
        algo, history = train(TrainingSpec(algorithm="my-vpg", params={"learning_rate": 1e-3},
                                           resources={"num_envs": 4},
                                           budget={"iterations": 2}))
        assert history[-1]["env/env_steps_lifetime"] >= 1024
        assert np.isfinite(history[-1]["env/total_reward"])
        algo.stop()
    finally:
        ALGORITHMS.pop("my-vpg", None)


def test_qtable_acts_with_the_column_mean_in_unvisited_entries():
    """Never-updated entries act with the mean of their column's updated entries, and
    the cached mean follows every change of the table."""
    import torch

    from lwmecps_rllib.algorithms import get_algorithm_class
    from lwmecps_rllib.envs import make_env

    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs"})
    cfg = get_algorithm_class("qlearning").get_default_config()
    spec = cfg.get_default_rl_module_spec()
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = {**cfg._model_config, "table_size": 64}
    module = spec.build()
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(8)]))
    rows = module.state_index(obs)
    other = int((set(range(64)) - set(rows.tolist())).pop())
    with torch.no_grad():  # one visited state elsewhere: value 2 best for every head
        module.q[other] = -1.0
        for d in range(4):
            module.q[other, d * 5 + 2] = -0.1
    assert module._greedy(obs).tolist() == [[2, 2, 2, 2]] * 8
    with torch.no_grad():  # the table changes: the prior follows
        for d in range(4):
            module.q[other, d * 5 + 2] = -5.0
            module.q[other, d * 5 + 3] = -0.1
    assert module._greedy(obs).tolist() == [[3, 3, 3, 3]] * 8


@pytest.mark.parametrize("dims", [[5, 5, 5, 5], [2], [3, 4]])
def test_module_sampling_matches_rllibs_multi_categorical(dims):
    """PPO's module draws actions itself: same log-probabilities and greedy actions as
    RLlib's distribution, and sampling frequencies follow the softmax."""
    import torch
    from ray.rllib.core.distribution.torch.torch_distribution import TorchMultiCategorical

    from lwmecps_rllib.algorithms.distributions import (
        categorical_logp_entropy,
        sample_categoricals,
    )

    torch.manual_seed(0)
    discrete = len(dims) == 1
    logits = torch.randn(64, sum(dims))
    dist = TorchMultiCategorical.get_partial_dist_cls(input_lens=dims).from_logits(logits)
    actions, logp = sample_categoricals(logits, dims, discrete)
    as_multi = actions[:, None] if discrete else actions
    torch.testing.assert_close(logp, dist.logp(as_multi), atol=1e-5, rtol=1e-5)
    # The loss's log-probability and entropy: RLlib's values, gradients included.
    fast_in = logits.clone().requires_grad_(True)
    rl_in = logits.clone().requires_grad_(True)
    fast_logp, fast_ent = categorical_logp_entropy(fast_in, dims, actions)
    rl_dist = TorchMultiCategorical.get_partial_dist_cls(input_lens=dims).from_logits(rl_in)
    torch.testing.assert_close(fast_logp, rl_dist.logp(as_multi), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_ent, rl_dist.entropy(), atol=1e-5, rtol=1e-5)
    (fast_logp.sum() + fast_ent.sum()).backward()
    (rl_dist.logp(as_multi).sum() + rl_dist.entropy().sum()).backward()
    torch.testing.assert_close(fast_in.grad, rl_in.grad, atol=1e-5, rtol=1e-5)
    greedy, _ = sample_categoricals(logits, dims, discrete, greedy=True)
    greedy = greedy[:, None] if discrete else greedy
    assert torch.equal(greedy, dist.to_deterministic().sample())
    one = logits[:1].repeat(100_000, 1)
    drawn, _ = sample_categoricals(one, dims, discrete)
    drawn = drawn[:, None] if discrete else drawn
    for d, part in enumerate(torch.split(logits[0], dims)):
        freq = np.bincount(drawn[:, d].numpy(), minlength=dims[d]) / 100_000
        np.testing.assert_allclose(freq, torch.softmax(part, 0).numpy(), atol=0.01)


@pytest.mark.parametrize("algo", ALGOS)
def test_local_views_share_one_function_across_deployments(algo):
    """With `views="local"` every deployment's head is the same function of its own
    features (and, for PPO, the whole observation): two deployments in the same local
    state get the same values, and a head ignores the other deployments' features."""
    import torch

    env_cfg = build_config(algo, scenario="testbed-4bs-peak", params={"views": "local"})
    views = env_cfg.model_config["head_features"]
    assert views == [[28 + d, 20 + d, 24 + d, 5 * d + 4] for d in range(4)]
    spec = env_cfg.get_default_rl_module_spec()
    from lwmecps_rllib.envs import make_env

    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs-peak"})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = env_cfg.model_config
    module = spec.build()
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(6)]))
    assert obs.shape[1] == 34
    for a, b in ((0, 1), (2, 3)):  # deployment b in the same local state as a
        obs[:, views[b]] = obs[:, views[a]]
    if algo == "ppo":
        heads = module.logits(obs).view(6, 4, 5)
    else:
        if algo == "qlearning":
            with torch.no_grad():
                module.q.uniform_(-1, 0)
        heads = torch.stack(module.heads(obs), 1)
    torch.testing.assert_close(heads[:, 0], heads[:, 1])
    torch.testing.assert_close(heads[:, 2], heads[:, 3])
    assert not torch.allclose(heads[:, 0], heads[:, 2])
    with pytest.raises(ValueError, match="views must be one of"):
        build_config(algo, params={"views": "sideways"})
    with pytest.raises(ValueError, match="views='local' needs an env with per-head views"):
        _ = build_config(algo, env="LWMECPSEnv2", params={"views": "local"}).model_config


def test_action_costs_are_the_reward_besides_latency():
    """`action_costs` gives, per joint action, exactly what the step's reward charges for
    replicas and imbalance: with the latency weight at 0 the reward is minus that cost."""
    from lwmecps_rllib.envs import action_costs, make_env
    from lwmecps_rllib.scenarios import load_scenario

    sc = load_scenario("testbed-4bs-peak").replace(latency_weight=0.0)
    costs = np.asarray(action_costs("LWMECPSEnv3", {"scenario": sc}))
    assert costs.shape == (625,)
    env = make_env("LWMECPSEnv3", {"scenario": sc})
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.integers(0, 5, size=4)
        _, reward, *_ = env.step(a)
        assert reward == pytest.approx(-costs[np.ravel_multi_index(tuple(a), (5,) * 4)])
    # Four replicas everywhere: 16 pods and no imbalance; [4, 3, 3, 3] pays for imbalance.
    assert costs[-1] == pytest.approx(1.6)
    assert costs[np.ravel_multi_index((4, 3, 3, 3), (5,) * 4)] > 1.3
    assert action_costs("LWMECPSEnv2", {}) is None
    assert action_costs("LWMECPSEnv3", {"scenario": "testbed-4bs"}, limit=100) is None
    # Nodes of 6 CPUs hold 3 of the 2-CPU pods: 4 replicas would not fit, and such a
    # step gets `invalid_action_reward`, not a cost, so no table is given.
    small = tiny_scenario().replace(nodes=(NodeSpec("n1", cpu=6.0), NodeSpec("n2", cpu=6.0)),
                                    max_replicas=4)
    assert action_costs("LWMECPSEnv3", {"scenario": small}) is None
    assert len(action_costs("LWMECPSEnv3", {"scenario": tiny_scenario()})) == 9


@pytest.mark.parametrize("algo", ["dqn", "qlearning"])
def test_action_costs_enter_q_and_the_joint_argmax(algo):
    """With `action_costs`, `Q(s, a) = mean_d Q_d(s, a_d) - reward_scale * cost(a)` and
    the greedy action maximises it over all 625 joint actions (brute force agrees)."""
    import torch

    from lwmecps_rllib.envs import make_env

    cfg = build_config(algo, scenario="testbed-4bs-peak", params={"action_costs": True})
    spec = cfg.get_default_rl_module_spec()
    env = make_env("LWMECPSEnv3", {"scenario": "testbed-4bs-peak"})
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = cfg.model_config
    module = spec.build()
    if algo == "qlearning":
        with torch.no_grad():
            module.q.uniform_(-1, 0)
    obs = torch.as_tensor(np.stack([env.observation_space.sample() for _ in range(5)]))
    heads = module.heads(obs)
    joint = torch.as_tensor(np.indices((5,) * 4).reshape(4, -1).T.copy())
    costs = torch.as_tensor(cfg.model_config["action_costs"], dtype=torch.float32)
    for i in range(5):
        rows = [h[i:i + 1].expand(625, -1) for h in heads]
        q_all = module.q_value(rows, joint)
        expected = (torch.stack([rows[d][torch.arange(625), joint[:, d]] for d in range(4)])
                    .mean(0) - cfg.reward_scale * costs)
        torch.testing.assert_close(q_all, expected)
        best = module.best_actions([h[i:i + 1] for h in heads])[0]
        assert torch.equal(best, joint[q_all.argmax()])
    greedy = module.forward_inference({"obs": obs})["actions"]
    assert torch.equal(greedy, module.best_actions(heads))
    with pytest.raises(ValueError, match="action_costs must be true or false, got 'false'"):
        build_config(algo, params={"action_costs": "false"})
    with pytest.raises(ValueError, match="action_costs=True needs an env with known"):
        _ = build_config(algo, env="LWMECPSEnv2", params={"action_costs": True}).model_config


@pytest.mark.parametrize("algo", ["ppo", "dqn", "qlearning"])
@pytest.mark.parametrize(("env_name", "scenario"), [
    ("LWMECPSEnv3", "metro-16"), ("LWMECPSEnv3", "city-64"), ("LWMECPSEnv2", "metro-16"),
    ("LWMECPSEnv2", "city-64"), ("LWMECPSEnv", "metro-16")])
def test_masked_actions_never_exceed_a_node(algo: str, env_name: str, scenario: str) -> None:
    """Heterogeneous nodes (some hold fewer pods than every deployment could ask of them):
    no sampled, exploring or greedy action of our algorithms asks for more than a node
    holds."""
    import torch

    from lwmecps_rllib.cluster import core
    from lwmecps_rllib.envs import make_env

    cfg = get_algorithm_class(algo).get_default_config()
    cfg.environment(env_name, env_config={"scenario": scenario})
    env = make_env(env_name, {"scenario": scenario})
    spec = cfg.get_default_rl_module_spec()
    spec.observation_space, spec.action_space = env.observation_space, env.action_space
    spec.model_config = cfg.model_config
    cluster = env.unwrapped.spec_
    rng = np.random.default_rng(0)
    obs = torch.as_tensor(rng.uniform(0, 1, (512, env.observation_space.shape[0])),
                          dtype=torch.float32)

    def fitting(actions: np.ndarray) -> np.ndarray:
        a = actions.reshape(len(obs), -1)
        if env_name == "LWMECPSEnv3":
            return core.fits(cluster, a, np.broadcast_to(cluster.home_node, a.shape))
        return core.fits(cluster, np.ones_like(a), a)

    torch.manual_seed(0)
    module = spec.build()
    for out in (module.forward_exploration({"obs": obs}, t=0),
                module.forward_inference({"obs": obs})):
        assert fitting(out["actions"].numpy()).all()
    # Without masking (the reference's penalty path) some sampled actions do not fit.
    cfg.training(mask_actions=False)
    spec.model_config = cfg.model_config
    free = spec.build().forward_exploration({"obs": obs}, t=0)["actions"].numpy()
    if env_name != "LWMECPSEnv":  # one pod fits on every node of metro-16
        assert not fitting(free).all()


def test_placement_quotas_keep_every_choice_within_the_nodes() -> None:
    """However the deployments pick among their allowed nodes, no node overflows."""
    from lwmecps_rllib.cluster import core
    from lwmecps_rllib.envs import make_env

    for scenario in ("testbed-4bs", "metro-16", "city-64"):
        cluster = make_env("LWMECPSEnv2", {"scenario": scenario}).unwrapped.spec_
        allowed = core.placement_allowed(cluster)
        assert allowed[np.arange(cluster.n_deployments), cluster.home_node].all()
        assert (allowed.sum(0) <= core.node_pods(cluster)).all()
        rng = np.random.default_rng(1)
        picks = np.array([[rng.choice(np.flatnonzero(row)) for row in allowed]
                          for _ in range(200)])
        assert core.fits(cluster, np.ones_like(picks), picks).all()


def periodic_scenario() -> Scenario:
    """One station whose users repeat 10, 10, 60, 60: one pod serves 10, 60 need two.

    Pods start at once, so a step's replicas serve the next slot. After a slot of 10 the
    next is 10 or 60 and after 60 it is 60 or 10, with equal odds: from the last slot
    alone the safe choice is always two pods (-10.2 a step). The slot before the last
    tells which comes next, and the optimum runs two pods only before a 60 (-10.15).
    """
    users = np.array([[10], [10], [60], [60]] * 30, dtype=np.int64)
    return Scenario(name="periodic-1bs", nodes=(NodeSpec("n1"),),
                    stations=(StationSpec("bs1", "n1", "d1"),), delay_ms=np.array([[10.0]]),
                    traces={"a": users, "b": users}, max_replicas=2, episode_length=8)


@pytest.mark.integration
def test_history_reveals_what_the_last_slot_cannot(ray_session) -> None:
    from lwmecps_rllib.algorithms.inference import TrainedPolicy
    from lwmecps_rllib.rollout import run_policy
    from lwmecps_rllib.spec import EnvOptions, TrainingSpec, observation_options
    from lwmecps_rllib.train import train

    scores = {}
    for history in (0, 1):
        options = EnvOptions(scenario=periodic_scenario(), history=history)
        spec = TrainingSpec(algorithm="qlearning", seed=0, resources={"num_envs": 4},
                            params={"learning_rate": 0.3, "discount_factor": 0.5,
                                    "epsilon": 0.02, "epsilon_timesteps": 3000},
                            budget={"env_steps": 8000})
        algo, _ = train(spec, "LWMECPSEnv3", options)
        policy = TrainedPolicy(algo.get_module(), "q",
                               observation_options(options.to_env_config()))
        algo.stop()
        day = EnvOptions(scenario=periodic_scenario(), trace="b")
        scores[history] = run_policy("LWMECPSEnv3", day, policy, seed=0, steps=100)
    assert scores[1]["mean_reward"] == pytest.approx(-10.15, abs=0.01)
    assert scores[1]["mean_pods"] == pytest.approx(1.5, abs=0.05)
    assert scores[0]["mean_reward"] <= -10.19
