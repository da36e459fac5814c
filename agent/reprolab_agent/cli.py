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
from .sandbox import LEVELS, SANDBOXED, Unavailable, detect

TOKEN_VARIABLES = ("REPROLAB_NODE_TOKEN", "REPROLAB_NODE_TOKEN_FILE")


def take_token(given: str | None, token_file: Path | None) -> str | None:
    """The node token from --token, REPROLAB_NODE_TOKEN or a file, then gone from everywhere a
    run could look for it: the variables leave os.environ at once (no child inherits them), and
    the bytes are overwritten in the memory that /proc/<pid>/environ and cmdline show. (Runs
    cannot read this process's memory itself: they run as another uid or in another PID
    namespace; see reprolab_agent.sandbox.)"""
    token = given or os.environ.get("REPROLAB_NODE_TOKEN")
    if not token and token_file:
        token = token_file.read_text().strip()
    for name in TOKEN_VARIABLES:
        os.environ.pop(name, None)
    if token:
        wipe_from_proc(token)
    return token or None


def wipe_from_proc(secret: str) -> bool:
    """Overwrite `secret` in this process's original argument and environment blocks, which the
    kernel serves as /proc/<pid>/cmdline and /proc/<pid>/environ (what setproctitle does for the
    title). Nothing refers to those bytes any more: Python copied argv and the environment at
    start, and os.environ.pop removed the variable from the C environment. Best effort: False
    where /proc/self/mem cannot be written."""
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is stat field 3
        blocks = [(int(fields[45]), int(fields[46])), (int(fields[47]), int(fields[48]))]  # arg_*, env_*
        needle = secret.encode()
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in blocks:
                mem.seek(start)
                block = mem.read(end - start)
                if needle in block:
                    mem.seek(start)
                    mem.write(block.replace(needle, b"x" * len(needle)))
    except (OSError, ValueError, IndexError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reprolab-agent", description=__doc__)
    parser.add_argument(
        "--server", default=os.environ.get("REPROLAB_SERVER"), help="the site, e.g. https://reprolab.example.org"
    )
    parser.add_argument(
        "--token", default=None, help="the node token (rln_…); better REPROLAB_NODE_TOKEN or --token-file"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("REPROLAB_NODE_TOKEN_FILE"),
        help="a file holding the node token (or REPROLAB_NODE_TOKEN_FILE); runs never see it",
    )
    parser.add_argument(
        "--isolation",
        choices=["auto", SANDBOXED, *LEVELS],
        default=os.environ.get("REPROLAB_ISOLATION", "auto"),
        help="how runs are isolated from this machine: auto (the strongest that works), sandboxed (bwrap or uid,"
        " never none), bwrap, uid, none",
    )
    parser.add_argument(
        "--protect",
        type=Path,
        action="append",
        default=[],
        help="a path runs must never reach (repeatable), e.g. the site's folder on an embedded node;"
        " the agent's work dir, cache and token file always are",
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
    args.token = take_token(args.token, args.token_file)
    if not args.server or not args.token:
        parser.error("--server and a token (--token-file, REPROLAB_NODE_TOKEN or --token) are required")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s", stream=sys.stderr
    )
    if "--token" in sys.argv or any(a.startswith("--token=") for a in sys.argv):
        logging.warning("--token on the command line shows in `ps` while the agent starts; use --token-file")
    protect = [args.work_dir, args.cache_dir, *args.protect] + ([args.token_file] if args.token_file else [])
    try:
        sandbox = detect(args.isolation, protect=protect, work_root=args.work_dir)
    except Unavailable as error:
        parser.exit(2, f"reprolab-agent: isolation {args.isolation} is not available here: {error}\n")
    for note in sandbox.notes:
        logging.warning("isolation %s", note)
    log = logging.warning if sandbox.level == "none" else logging.info
    log("isolation %s", sandbox.describe)

    capabilities = probe_capabilities()
    agent = Agent(
        Client(args.server, args.token),
        concurrency=args.concurrency,
        work_root=args.work_dir,
        cache_root=args.cache_dir,
        wait=args.wait,
        grace=args.grace_seconds,
    )
    agent.executor.sandbox = sandbox

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
        hello = agent.hello(capabilities | {"concurrency": args.concurrency, "isolation": sandbox.level})
    except Interrupted:
        return 0  # stopped before the site ever answered
    logging.info("node %s on %s: %s", hello.get("node"), args.server, summarize(capabilities))
    agent.serve(max_runs=args.max_runs)
    return 0
