"""`reprolab-agent --server URL --token TOKEN [--concurrency N]`: run a ReproLab compute node."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .client import Client
from .probe import probe_capabilities, summarize
from .runner import Agent


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
    )
    hello = agent.hello(capabilities | {"concurrency": args.concurrency})
    logging.info("node %s on %s: %s", hello.get("node"), args.server, summarize(capabilities))

    def stop(signum: int, frame: object) -> None:
        logging.info("stopping after the current runs (signal %s)", signum)
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.serve(max_runs=args.max_runs)
    return 0
