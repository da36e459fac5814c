"""`reprolab-agent --server URL --token TOKEN [--concurrency N]`: run a ReproLab compute node."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .client import Client, Interrupted
from .probe import probe_capabilities, summarize
from .runner import DEFAULT_GRACE_SECONDS, Agent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reprolab-agent", description=__doc__)
    parser.add_argument(
        "--server", default=os.environ.get("REPROLAB_SERVER"), help="the site, e.g. https://reprolab.example.org"
    )
    parser.add_argument(
        "--token", default=os.environ.get("REPROLAB_NODE_TOKEN"), help="the node token (rln_…); or REPROLAB_NODE_TOKEN"
    )
    parser.add_argument("--concurrency", type=int, default=1, help="runs at a time")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(os.environ.get("REPROLAB_WORK_DIR", Path.home() / ".reprolab/work"))
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("REPROLAB_CACHE_DIR", Path.home() / ".reprolab/cache"))
    )
    parser.add_argument("--wait", type=float, default=25.0, help="long-poll seconds per claim")
    parser.add_argument("--max-runs", type=int, default=None, help="exit after this many runs per worker")
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=float(os.environ.get("REPROLAB_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)),
        help="on SIGTERM or SIGINT, how long runs in flight may finish before they are released"
        " (requeued at once, costing no attempt); a second signal releases them now",
    )
    parser.add_argument("--version", action="version", version=f"reprolab-agent {__version__}")
    args = parser.parse_args(argv)
    if not args.server or not args.token:
        parser.error("--server and --token (or REPROLAB_SERVER and REPROLAB_NODE_TOKEN) are required")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s", stream=sys.stderr
    )

    capabilities = probe_capabilities()
    agent = Agent(
        Client(args.server, args.token),
        concurrency=args.concurrency,
        work_root=args.work_dir,
        cache_root=args.cache_dir,
        wait=args.wait,
        grace=args.grace_seconds,
    )

    def stop(signum: int, frame: object) -> None:
        # Like a CI runner: the first signal stops claiming and lets the runs in flight finish
        # within the grace period; a second one releases them now.
        now = agent.stopping.is_set()
        name = signal.Signals(signum).name
        if now:
            logging.info("%s again: releasing the runs in flight now", name)
        else:
            logging.info("%s: no new runs; runs in flight have %g s to finish", name, args.grace_seconds)
        agent.stop(now=now)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        hello = agent.hello(capabilities | {"concurrency": args.concurrency})
    except Interrupted:
        return 0  # stopped before the site ever answered
    logging.info("node %s on %s: %s", hello.get("node"), args.server, summarize(capabilities))
    agent.serve(max_runs=args.max_runs)
    return 0
