"""The controller's command line: parse, build, run until SIGTERM or SIGINT.

    python -m lwmecps_rllib.control --backend-config k8s/testbed/backend-config.yaml \\
        --policy-url http://127.0.0.1:8000 [--mode shadow|live] [--fallback hpa|threshold|none]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from lwmecps_rllib.cli import load_backend_config
from lwmecps_rllib.control.build import build_controller, period_of
from lwmecps_rllib.control.options import FALLBACKS, MODES, ControlOptions
from lwmecps_rllib.control.telemetry import StatusServer

log = logging.getLogger("lwmecps_rllib.control")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m lwmecps_rllib.control",
                                description="Run a placement policy against a cluster.")
    p.add_argument("--backend-config", required=True,
                   help="YAML of the Kubernetes backend (namespace, deployments, bounds, "
                        "scale-down rate limit, dry_run, metrics)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--policy-url", help="the Serve app, e.g. http://127.0.0.1:8000")
    who.add_argument("--model", help="a model in process: checkpoint folder, id or stage")
    p.add_argument("--registry", default=None, help="model registry of --model")
    p.add_argument("--scenario", default="testbed-4bs", help="the cluster's scenario")
    p.add_argument("--mode", default="shadow", choices=MODES,
                   help="shadow: decide and log only (default); live: apply")
    p.add_argument("--fallback", default="hpa", choices=FALLBACKS,
                   help="rule used when the policy cannot be (default hpa)")
    p.add_argument("--period", type=float, default=None, metavar="S",
                   help="seconds between decisions (default: the scenario's step)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S",
                   help="policy answer timeout over HTTP (default 2)")
    p.add_argument("--dry-run", action="store_true",
                   help="live mode logs the patches instead of sending them")
    p.add_argument("--metrics-host", default="127.0.0.1")
    p.add_argument("--metrics-port", type=int, default=9108,
                   help="/metrics and /healthz port (0: a free one; -1: none)")
    p.add_argument("--decision-log", default=None, metavar="FILE",
                   help="JSON-lines decision log (default: standard output)")
    p.add_argument("--periods", type=int, default=None, help="stop after this many periods")
    return p.parse_args(argv)


def options_from_args(args: argparse.Namespace) -> ControlOptions:
    """The checked options of the flags."""
    return ControlOptions.parse({
        "policy_url": args.policy_url, "model": args.model, "registry": args.registry,
        "scenario": args.scenario, "mode": args.mode, "fallback": args.fallback,
        "period_s": args.period, "timeout_s": args.timeout, "metrics_host": args.metrics_host,
        "metrics_port": None if args.metrics_port == -1 else args.metrics_port,
        "decision_log": args.decision_log, "periods": args.periods})


def main(argv: list[str] | None = None) -> int:
    """Run; 0 after a stop by signal or after `--periods`, 2 on bad options."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        options = options_from_args(args)
        backend_config = load_backend_config(args.backend_config, args.dry_run)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    controller = build_controller(options, backend_config, stop)
    server = None
    if options.metrics_port is not None:
        server = StatusServer(controller.telemetry, options.metrics_host, options.metrics_port)
        log.info("metrics on http://%s:%d/metrics", options.metrics_host, server.start())
    try:
        n = controller.run(stop, period_of(options, controller.backend.spec.scenario),
                           options.periods)
    finally:
        controller.close()
        if server is not None:
            server.stop()
    log.info("stopped after %d periods", n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
