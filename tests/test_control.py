"""The autoscaler controller end to end against the emulated Kubernetes API (kmock): shadow
mode changes nothing and logs both decisions, live mode scales as the policy answers,
refused answers (out of bounds, infeasible, errors, timeouts) fall back to the rule and
say why, the metrics and /healthz, SIGTERM mid-period; and one test against a real
`serve run` of the placement app stopped and restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from conftest import free_port, stop_process_group
from test_k8s_backend import (
    DEPS,
    NS,
    FakeMetrics,
    _LoadGen,
    api_client,
    controller,
    nothing_deleted,
    patches,
    requests_seen,
    running,
    seed_cluster,
)
from test_serving_policy import fresh_module

from lwmecps_rllib.backends.config import KubernetesConfig
from lwmecps_rllib.control import (
    ControlOptions,
    HttpPolicy,
    LocalPolicy,
    PolicyError,
    build_controller,
)
from lwmecps_rllib.control.__main__ import main as control_main
from lwmecps_rllib.control.telemetry import StatusServer
from lwmecps_rllib.serving import PlacementPolicy, PlacementRequest, PlacementResponse
from lwmecps_rllib.serving.schema import Decision

ROOT = Path(__file__).resolve().parents[1]
SCENARIO_DEPS = DEPS  # the testbed's cluster names are the scenario's


class FakePolicy:
    """A policy answering `answers` in turn (the last one repeatedly); an exception in the
    list is raised instead."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.asked: list[dict] = []

    def describe(self) -> dict:
        return {"model_id": "fake", "env": "LWMECPSEnv3", "scenario": "testbed-4bs",
                "history_slots": 0}

    def decide(self, body: dict) -> PlacementResponse:
        self.asked.append(body)
        a = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(a, Exception):
            raise a
        if isinstance(a, PlacementResponse):
            return a
        return PlacementResponse(decisions=[Decision(deployment=d, replicas=int(n))
                                            for d, n in zip(SCENARIO_DEPS, a, strict=True)],
                                 model_id="fake", env="LWMECPSEnv3", decision_time_ms=0.1)

    def close(self) -> None:
        pass


def backend_config(**cfg) -> KubernetesConfig:
    return KubernetesConfig.from_dict({"namespace": NS, "min_replicas": 1, "max_replicas": 4,
                                       "backoff_s": 0.01, "request_timeout_s": 2.0, **cfg})


def make(kmock, tmp_path, policy, mode="shadow", fallback="hpa", **cfg):
    options = ControlOptions(policy_url="http://policy.invalid", mode=mode, fallback=fallback,
                             decision_log=str(tmp_path / "decisions.jsonl"))
    return build_controller(options, backend_config(**cfg), threading.Event(), policy=policy,
                            api_client=api_client(kmock.url), metrics=FakeMetrics())


def records(tmp_path) -> list[dict]:
    path = tmp_path / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spec_replicas(kmock) -> list[int]:
    return [kmock.objects["apps/v1/deployments", NS, d]["spec"]["replicas"] for d in DEPS]


async def periods(ctl, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        out.append(await asyncio.to_thread(ctl.run_period))
    return out


async def test_shadow_mode_changes_nothing_and_logs_both_decisions(kmock, tmp_path):
    seed_cluster(kmock, replicas=2)
    ctl = make(kmock, tmp_path, FakePolicy([3, 1, 4, 2]), mode="shadow")
    async with running(controller(kmock)):
        await periods(ctl, 3)
    ctl.close()
    assert patches(kmock) == [] and nothing_deleted(kmock)
    assert spec_replicas(kmock) == [2, 2, 2, 2]
    logged = records(tmp_path)
    assert [r["period"] for r in logged] == [1, 2, 3]
    for r in logged:
        assert r["mode"] == "shadow" and r["source"] == "policy" and "asked" not in r
        assert r["policy"] == dict(zip(DEPS, [3, 1, 4, 2], strict=True))
        assert set(r["fallback"]) == set(DEPS)  # the rule's decision beside it
        assert r["cluster"] == {d: [2, 2] for d in DEPS}  # what the cluster runs
        assert r["terms"]["pod_count"] == 8 and np.isfinite(r["terms"]["reward"])
        assert r["cpu_ms"] > 0 and r["policy_latency_ms"] >= 0


async def test_live_mode_scales_the_deployments_as_the_policy_answers(kmock, tmp_path):
    seed_cluster(kmock, replicas=1)
    ctl = make(kmock, tmp_path, FakePolicy([3, 1, 4, 2]), mode="live")
    async with running(controller(kmock)):
        [first] = await periods(ctl, 1)
        await wait_for(lambda: all(  # the emulated Deployment controller caught up
            kmock.objects["apps/v1/deployments", NS, d].get("status", {}).get("readyReplicas")
            == n for d, n in zip(DEPS, [3, 1, 4, 2], strict=True)), "the replicas ready", 10)
        await periods(ctl, 1)
    assert first["asked"] == dict(zip(DEPS, [3, 1, 4, 2], strict=True))
    assert spec_replicas(kmock) == [3, 1, 4, 2]
    sent = patches(kmock)
    assert len(sent) == 3 and all(p.endswith("/scale") for _, p in sent)  # once each
    assert records(tmp_path)[1]["cluster"][DEPS[2]] == [4, 4]
    assert nothing_deleted(kmock)


async def test_live_mode_scales_down_at_the_backends_rate_limit(kmock, tmp_path):
    seed_cluster(kmock, replicas=4)
    ctl = make(kmock, tmp_path, FakePolicy([1, 1, 1, 1]), mode="live",
               scale_down={"policies": [{"type": "pods", "value": 1, "period_s": 600}]})
    async with running(controller(kmock)):
        r = (await periods(ctl, 1))[0]
    assert r["policy"] == dict.fromkeys(DEPS, 1) and r["asked"] == dict.fromkeys(DEPS, 3)
    assert spec_replicas(kmock) == [3, 3, 3, 3]


def answer(**changes) -> PlacementResponse:
    base = {"decisions": [Decision(deployment=d, replicas=2) for d in DEPS],
            "model_id": "fake", "env": "LWMECPSEnv3", "decision_time_ms": 0.1}
    return PlacementResponse(**{**base, **changes})


@pytest.mark.parametrize(("bad", "cause", "says"), [
    ([2, 9, 2, 2], "out_of_bounds", "9 replicas, allowed 1..4"),
    ([2, 0, 2, 2], "out_of_bounds", "0 replicas, allowed 1..4"),
    (answer(decisions=[Decision(deployment="other", replicas=2)]), "infeasible", "unknown"),
    (answer(decisions=[Decision(deployment=d, replicas=2) for d in DEPS[:3]]), "infeasible",
     "no decision for"),
    (answer(env="LWMECPSEnv2"), "infeasible", "LWMECPSEnv2"),
    (PolicyError("timeout", "no answer in 2 s"), "timeout", "no answer"),
    (PolicyError("error", "HTTP 503"), "error", "503"),
])
async def test_a_refused_answer_falls_back_to_the_rule_and_says_why(kmock, tmp_path, bad, cause,
                                                                    says):
    seed_cluster(kmock, replicas=2)
    ctl = make(kmock, tmp_path, FakePolicy(bad, [3, 3, 3, 3]), mode="live", fallback="threshold")
    async with running(controller(kmock)):
        refused, accepted = await periods(ctl, 2)
    assert refused["source"] == "fallback" and refused["cause"] == cause
    assert says in refused["policy_error"] and "policy" not in refused
    assert refused["asked"] == refused["fallback"]  # the rule's decision was applied
    assert accepted["source"] == "policy" and "cause" not in accepted
    assert spec_replicas(kmock) == [3, 3, 3, 3]
    assert 9 not in [p["body"]["spec"]["replicas"] for p in ctl.backend.sent]
    text = ctl.telemetry.exposition().decode()
    assert f'lwmecps_control_fallbacks_total{{cause="{cause}"}} 1.0' in text


async def test_without_a_fallback_a_refused_answer_changes_nothing(kmock, tmp_path):
    seed_cluster(kmock, replicas=2)
    ctl = make(kmock, tmp_path, FakePolicy([9, 9, 9, 9]), mode="live", fallback="none")
    async with running(controller(kmock)):
        r = (await periods(ctl, 1))[0]
    assert r["source"] == "none" and r["cause"] == "out_of_bounds" and r["fallback"] is None
    assert patches(kmock) == []


def test_an_infeasible_answer_is_refused():
    from lwmecps_rllib.control.check import checked_replicas
    from lwmecps_rllib.envs import LWMECPSEnv3

    spec = LWMECPSEnv3(scenario="testbed-4bs").spec_
    assert checked_replicas(answer(), spec, 1, 4).tolist() == [2, 2, 2, 2]
    small = spec.node_cap.copy()
    small[:, 0] = spec.pod_request[0] * 3  # three pods per node
    import dataclasses

    tight = dataclasses.replace(spec, node_cap=small)
    with pytest.raises(PolicyError, match="infeasible: 16 pods do not fit"):
        checked_replicas(answer(decisions=[Decision(deployment=d, replicas=4) for d in DEPS]),
                         tight, 1, 4)


async def test_a_cluster_read_failure_is_a_logged_period_and_the_next_reads_again(kmock,
                                                                                  tmp_path):
    seed_cluster(kmock, replicas=2)
    ctl = make(kmock, tmp_path, FakePolicy([3, 3, 3, 3]), mode="live", retries=0)
    kmock["get"][:1] << 500
    async with running(controller(kmock)):
        failed, ok = await periods(ctl, 2)
    assert failed["source"] == "none" and failed["stage"] == "read" and "500" in failed["error"]
    assert ok["source"] == "policy" and spec_replicas(kmock) == [3, 3, 3, 3]


async def test_the_model_in_process_decides(kmock, tmp_path):
    seed_cluster(kmock, replicas=2)
    module = fresh_module("LWMECPSEnv3", "testbed-4bs")
    model = PlacementPolicy(module, "LWMECPSEnv3", "testbed-4bs", "m1")
    ctl = make(kmock, tmp_path, LocalPolicy(model), mode="shadow", min_replicas=0,
               max_replicas=None)
    async with running(controller(kmock)):
        r = (await periods(ctl, 1))[0]
        snap = await asyncio.to_thread(ctl.reader.read)
    assert r["source"] == "policy" and r["model_id"] == "m1"
    # the decision is the model's for the cluster as read, as the endpoint would answer
    from lwmecps_rllib.serving import request_from_view

    body = request_from_view(snap.view)
    expected = model.decide([PlacementRequest(**body)])[0]
    assert r["policy"] == {d.deployment: d.replicas for d in expected.decisions}


async def test_metrics_and_healthz(kmock, tmp_path):
    seed_cluster(kmock, replicas=2)
    ctl = make(kmock, tmp_path, FakePolicy([3, 3, 3, 3], [9, 3, 3, 3]), mode="shadow")
    server = StatusServer(ctl.telemetry, "127.0.0.1", 0)
    port = server.start()
    try:
        async with running(controller(kmock)):
            await periods(ctl, 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = await client.get("/healthz")
            text = (await client.get("/metrics")).text
            assert (await client.get("/nope")).status_code == 404
    finally:
        server.stop()
    assert health.status_code == 200 and health.json()["periods"] == 2
    for line in ('lwmecps_control_decisions_total{source="policy"} 1.0',
                 'lwmecps_control_decisions_total{source="fallback"} 1.0',
                 'lwmecps_control_fallbacks_total{cause="out_of_bounds"} 1.0',
                 'lwmecps_control_fallbacks_total{cause="timeout"} 0.0',
                 f'lwmecps_control_replicas_asked{{deployment="{DEPS[0]}"}} 2.0',
                 f'lwmecps_control_replicas_ready{{deployment="{DEPS[0]}"}} 2.0',
                 'lwmecps_control_reward_term{term="pod_count"} 8.0',
                 "lwmecps_control_policy_latency_seconds_count 2.0",
                 "lwmecps_control_period_cpu_seconds_count 2.0"):
        assert line in text, line
    ctl.telemetry.last_period -= 100 * ctl.telemetry.period_s
    assert ctl.telemetry.health()[0] is False


def test_options_name_the_bad_field(capsys):
    with pytest.raises(ValueError, match="exactly one of policy_url"):
        ControlOptions()
    with pytest.raises(ValueError, match="exactly one of policy_url"):
        ControlOptions(policy_url="http://x", model="production")
    with pytest.raises(ValueError, match=r"control\.mode"):
        ControlOptions.parse({"model": "m", "mode": "yolo"})
    with pytest.raises(ValueError, match="policy_url must start with http"):
        ControlOptions(policy_url="localhost:8000")
    with pytest.raises(SystemExit):
        control_main(["--backend-config", "x.yaml", "--model", "m", "--fallback", "oracle"])
    assert "invalid choice: 'oracle'" in capsys.readouterr().err
    assert control_main(["--backend-config", "/nonexistent.yaml", "--model", "m"]) == 2


def test_nothing_connects_at_construction(tmp_path):
    options = ControlOptions(policy_url="http://127.0.0.1:9", decision_log=str(tmp_path / "d"))
    cfg = backend_config(kubeconfig=str(tmp_path / "missing-kubeconfig"))
    ctl = build_controller(options, cfg, threading.Event())
    assert ctl.backend._api_client is None and ctl.policy._client is None
    assert not (tmp_path / "d").exists()


def kubeconfig_for(kmock, folder: Path) -> Path:
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "emu", "user": {"token": "t"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "emu"}}]}))
    return path


def module_checkpoint(folder: Path) -> Path:
    """A tiny LWMECPSEnv3 module checkpoint of the testbed (random weights, seeded)."""
    path = folder / "model"
    fresh_module("LWMECPSEnv3", "testbed-4bs").save_to_path(str(path))
    return path


async def wait_for(check, what: str, timeout: float):
    """Poll `check()` (in a thread) until it returns a true value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(check)
        if got:
            return got
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def test_sigterm_mid_period_ends_cleanly(kmock, tmp_path):
    """The command, stopped with SIGTERM while a period waits out an API retry: exit 0, no
    traceback, whole lines in the log."""
    seed_cluster(kmock, replicas=2)
    loadgen = _LoadGen()
    cfg = tmp_path / "backend.yaml"
    cfg.write_text(yaml.safe_dump({
        "namespace": NS, "kubeconfig": str(kubeconfig_for(kmock, tmp_path)),
        "min_replicas": 0, "backoff_s": 30, "retries": 3,
        "metrics": {"type": "loadgen", "base_url": loadgen.url}}))
    log = tmp_path / "decisions.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lwmecps_rllib.control", "--backend-config", str(cfg),
         "--model", str(module_checkpoint(tmp_path)), "--mode", "live", "--period", "0.2",
         "--metrics-port", "0", "--decision-log", str(log)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        async with running(controller(kmock)):
            await wait_for(lambda: log.exists() and log.read_text().count("\n") >= 2,
                           "two periods", 120)
            seen = len(requests_seen(kmock))
            kmock["get"] << 503  # the next period's read waits out a 30 s back-off
            await wait_for(lambda: len(requests_seen(kmock)) > seen, "the failing read", 30)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _out, err = await asyncio.to_thread(proc.communicate, timeout=20)
        assert time.monotonic() - began < 10  # not after the back-off
    finally:
        loadgen.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped after" in err
    lines = log.read_text().splitlines()
    assert len(lines) >= 2 and all(json.loads(line)["period"] for line in lines)


def serve_run(folder: Path, model: Path, port: int, log_name: str) -> subprocess.Popen:
    """`serve run` of serve/config.yaml serving the checkpoint folder `model` on `port`."""
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"].update(model=str(model), registry=str(folder / "registry.sqlite"))
    app["deployments"][0]["user_config"]["model"] = str(model)
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", str(path)],
                            env=env, stdout=(folder / log_name).open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=folder)


def serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.integration
async def test_against_serve_run_falls_back_when_the_app_stops_and_back_when_it_returns(
        kmock, tmp_path):
    """Live against a real `serve run`: the policy decides; with the app stopped the next
    period is the rule's (no period without a decision); restarted, the policy again."""
    seed_cluster(kmock, replicas=2)
    model, port = module_checkpoint(tmp_path), free_port()
    options = ControlOptions(policy_url=f"http://127.0.0.1:{port}", mode="live",
                             fallback="hpa", timeout_s=2.0,
                             decision_log=str(tmp_path / "decisions.jsonl"))
    stop = threading.Event()
    ctl = build_controller(options, backend_config(min_replicas=0, max_replicas=None), stop,
                           api_client=api_client(kmock.url), metrics=FakeMetrics())
    assert isinstance(ctl.policy, HttpPolicy)
    serve = serve_run(tmp_path, model, port, "serve1.log")
    loop = None
    try:
        await wait_for(lambda: serving(port), "serve run to answer", 240)
        async with running(controller(kmock)):
            loop = asyncio.ensure_future(asyncio.to_thread(ctl.run, stop, 0.5))
            first = await wait_for(lambda: [r for r in records(tmp_path)
                                            if r["source"] == "policy"], "a policy period", 60)
            await asyncio.to_thread(stop_process_group, serve)
            # Stopped when it no longer answers (its Ray processes may outlive `serve run`).
            await wait_for(lambda: not serving(port), "the app to stop answering", 60)
            stopped_at = len(records(tmp_path))
            fell = await wait_for(lambda: [r for r in records(tmp_path)[stopped_at:]
                                           if r["source"] == "fallback"], "a fallback", 30)
            serve = serve_run(tmp_path, model, port, "serve2.log")
            await wait_for(lambda: serving(port), "serve run to answer again", 240)
            back_at = len(records(tmp_path))
            await wait_for(lambda: [r for r in records(tmp_path)[back_at:]
                                    if r["source"] == "policy"], "the policy again", 60)
            stop.set()
            await loop
    finally:
        stop.set()
        await asyncio.to_thread(stop_process_group, serve)
    logged = records(tmp_path)
    assert all(r["source"] in ("policy", "fallback") for r in logged)  # never undecided
    # the period right after the app stopped answering (at most the one under way) fell back
    assert fell[0]["period"] <= logged[stopped_at]["period"] + 1
    assert fell[0]["cause"] in ("error", "timeout") and fell[0]["asked"] == fell[0]["fallback"]
    last = logged[-1]
    assert last["source"] == "policy"
    assert last["model_id"] == first[0]["model_id"] == "checkpoint:model"
    assert spec_replicas(kmock) == [last["asked"][d] for d in DEPS]
    assert nothing_deleted(kmock)
