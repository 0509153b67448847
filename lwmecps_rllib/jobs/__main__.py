"""The training-jobs command line: submit a task or a sweep, read status and logs, stop.

    python -m lwmecps_rllib.jobs submit --name ppo-1 --model-type ppo --total-episodes 2000
    python -m lwmecps_rllib.jobs submit --name sweep-1 --sweep tune_configs/smoke.yaml
    python -m lwmecps_rllib.jobs status ppo-1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from lwmecps_rllib.cli import add_resource_arguments
from lwmecps_rllib.jobs.kuberay import RayJobCRLauncher
from lwmecps_rllib.jobs.service import (
    DEFAULT_DASHBOARD,
    CallPolicy,
    JobError,
    Launcher,
    RayJobsLauncher,
    TrainingService,
    TrainingTask,
)


def build_launcher(args: argparse.Namespace) -> Launcher:
    """The launcher the command-line flags describe."""
    policy = CallPolicy(timeout_s=args.timeout, submit_timeout_s=args.submit_timeout,
                        retries=args.retries)
    if args.kuberay:
        import yaml
        from kubernetes import client, config

        if args.in_cluster:
            config.load_incluster_config()
        else:
            config.load_kube_config(context=args.context)
        spec = None
        if args.cluster_spec:
            docs = list(yaml.safe_load_all(Path(args.cluster_spec).read_text()))
            clusters = [d for d in docs if d and d.get("kind") == "RayCluster"]
            if not clusters:
                raise JobError(f"--cluster-spec {args.cluster_spec}: no RayCluster in it")
            spec = clusters[0]["spec"]
        return RayJobCRLauncher(client.ApiClient(), args.namespace, cluster_spec=spec,
                                cluster_selector=None if spec else {"ray.io/cluster":
                                                                    args.cluster},
                                python=args.python, dashboard=args.address, policy=policy)
    runtime_env = json.loads(args.runtime_env) if args.runtime_env else None
    return RayJobsLauncher(args.address or DEFAULT_DASHBOARD, runtime_env=runtime_env,
                           python=args.python, policy=policy)


def build_parser() -> argparse.ArgumentParser:
    """Command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.jobs",
                                description="Run training and sweeps as Ray jobs.")
    p.add_argument("--address", default=None,
                   help=f"Ray dashboard URL (default {DEFAULT_DASHBOARD}; with --kuberay, "
                        "where logs and stops go instead of KubeRay's in-cluster address)")
    p.add_argument("--timeout", type=float, default=CallPolicy().timeout_s,
                   help="timeout of every request, seconds")
    p.add_argument("--submit-timeout", type=float, default=CallPolicy().submit_timeout_s,
                   help="timeout of a submission, seconds")
    p.add_argument("--retries", type=int, default=CallPolicy().retries,
                   help="retries of a status read that got no answer")
    p.add_argument("--python", default="python", help="interpreter on the cluster")
    p.add_argument("--runtime-env", default=None, help="Ray runtime env as JSON")
    p.add_argument("--kuberay", action="store_true", help="use RayJob resources instead")
    p.add_argument("--namespace", default="default", help="RayJob namespace")
    p.add_argument("--context", default=None, help="kubeconfig context")
    p.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    p.add_argument("--cluster", default="lwmecps", help="existing RayCluster to run on")
    p.add_argument("--cluster-spec", default=None,
                   help="RayCluster manifest: a new cluster per job instead")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("submit", help="submit a training task or a sweep")
    s.add_argument("--name", required=True)
    s.add_argument("--model-type", default="ppo")
    s.add_argument("--total-episodes", type=int, default=1000)
    s.add_argument("--env", default="LWMECPSEnv3")
    s.add_argument("--scenario", default="testbed-4bs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sweep", default=None, help="sweep file (runs lwmecps_rllib.tune)")
    s.add_argument("--output", default="runs/jobs")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    s.add_argument("--preset", default=None, help="recommended: start from the preset")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the run already in OUTPUT/NAME (training only)")
    s.add_argument("--wait", action="store_true", help="wait for the job to end")
    add_resource_arguments(s, defaults="default: a sweep file's, else")
    for name in ("status", "logs", "stop"):
        sp = sub.add_parser(name)
        sp.add_argument("job_id")
    return p


async def run_command(args: argparse.Namespace, service: TrainingService) -> int:
    """Carry out one command; the exit code."""
    if args.command == "submit":
        from lwmecps_rllib.cli import parse_params, resource_flags

        task = await service.create_task(TrainingTask(
            name=args.name, model_type=args.model_type, total_episodes=args.total_episodes,
            env=args.env, scenario=args.scenario, seed=args.seed, sweep=args.sweep,
            output=args.output, parameters=parse_params(args.param), preset=args.preset,
            overwrite=args.overwrite, **resource_flags(args)))
        job_id = await service.start_training(task.name)
        print(f"submitted {job_id}")
        if args.wait:
            state = await service.wait(job_id, timeout=24 * 3600)
            print(await service.get_logs(job_id))
            print(f"{job_id}: {state}")
            return 0 if state == "SUCCEEDED" else 1
    elif args.command == "status":
        print(await service.get_status(args.job_id))
    elif args.command == "logs":
        print(await service.get_logs(args.job_id), end="")
    elif args.command == "stop":
        stopped = await service.stop(args.job_id)
        print(f"{args.job_id}: {'stopping' if stopped else 'not running'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(run_command(args, TrainingService(build_launcher(args))))
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"error: {'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
    except (JobError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
