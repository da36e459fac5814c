"""`reprolab-agent --server URL --token TOKEN [--concurrency N]`: run a ReproLab compute node."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys
from pathlib import Path

from . import __version__, protocol
from .agent import DEFAULT_GRACE_SECONDS, Agent
from .client import Client, Interrupted
from .envs import EnvironmentCache
from .gpus import GpuSampler, GpuSlots
from .limits import Limits, default_limits
from .pool import WarmPool
from .probe import _memory_total_mb, probe_capabilities, summarize
from .sandbox import LEVELS, SANDBOXED, Unavailable, detect
from .template import TemplateFailed

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
    parser.add_argument(
        "--environments-dir",
        type=Path,
        default=Path(os.environ.get("REPROLAB_ENVIRONMENTS_DIR", Path.home() / ".reprolab/environments")),
        help="where declared environments are built, one per lock (runs see only their own, read-only)",
    )
    parser.add_argument(
        "--environment-cache-mb",
        type=int,
        default=int(os.environ.get("REPROLAB_ENVIRONMENT_CACHE_MB") or 20480),
        help="MiB the built environments may take; past it the least recently used are removed (0: no bound)",
    )
    parser.add_argument(
        "--index-url",
        default=os.environ.get("REPROLAB_INDEX_URL") or os.environ.get("UV_INDEX_URL") or None,
        help="the package index environments are installed from, e.g. a mirror this node can reach (default: PyPI)",
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
    add_run_options(parser)
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
    # Not the environments folder: runs read their own environment in it (EnvironmentCache keeps
    # the rest closed to them; a bwrap sandbox mounts only the run's own).
    protect = [args.work_dir, args.cache_dir, *args.protect] + ([args.token_file] if args.token_file else [])
    try:
        sandbox = detect(args.isolation, protect=protect, work_root=args.work_dir)
    except Unavailable as error:
        parser.exit(2, f"reprolab-agent: isolation {args.isolation} is not available here: {error}\n")
    for note in sandbox.notes:
        logging.warning("isolation %s", note)
    log = logging.warning if sandbox.level == "none" else logging.info
    log("isolation %s", sandbox.describe)

    # One number per GPU everywhere (probe, NVML, runs): PCI bus order, set before CUDA starts here.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    capabilities = probe_capabilities()
    limits = run_limits(args)
    environments = EnvironmentCache(
        args.environments_dir, index_url=args.index_url, max_bytes=max(0, args.environment_cache_mb) * 2**20
    )
    if not environments.available:
        logging.warning("uv is not installed beside the agent: runs with a declared environment go to other nodes")
    pool = WarmPool(
        sandbox,
        work_root=args.work_dir,
        limits=limits,
        concurrency=args.concurrency,
        spare=args.warm_spare,
        environments=environments,
    )
    try:
        pool.start()
    except TemplateFailed as error:
        parser.exit(2, f"reprolab-agent: {error}\n")
    agent = Agent(
        Client(args.server, args.token),
        concurrency=args.concurrency,
        work_root=args.work_dir,
        cache_root=args.cache_dir,
        wait=args.wait,
        grace=args.grace_seconds,
        pool=pool,
        network=args.allow_network,
        gpus=GpuSlots(capabilities.get("gpus") or [], sharing=args.gpu_sharing),
        gpu_sampler=GpuSampler(),
        environments=environments,
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
    capabilities |= {
        protocol.CAP_CONCURRENCY: args.concurrency,
        protocol.CAP_ISOLATION: sandbox.level,
        protocol.CAP_NETWORK: args.allow_network,
        protocol.CAP_GPU_SHARING: args.gpu_sharing,
        protocol.CAP_WARM_KERNELS: pool.warm_kernels,
        protocol.CAP_LIMITS: limits.as_capability(),
        protocol.CAP_ENVIRONMENTS: environments.available,
        protocol.CAP_PYTHON: platform.python_version(),
        protocol.CAP_RUN_KINDS: list(protocol.RUN_KINDS),
    }
    try:
        try:
            hello = agent.hello(capabilities)
        except Interrupted:
            return 0  # stopped before the site ever answered
        logging.info("node %s on %s: %s", hello.get("node"), args.server, summarize(capabilities))
        agent.serve(max_runs=args.max_runs)
    finally:
        pool.close()
    return 0


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """What runs on this node may do and use (each also from an environment variable)."""

    def number(name: str) -> int | None:
        value = os.environ.get(name, "")
        return int(value) if value else None

    parser.add_argument(
        "--allow-network",
        action="store_true",
        default=os.environ.get("REPROLAB_ALLOW_NETWORK", "") in ("1", "true", "yes"),
        help="runs that ask for the network (requirements.network) get it; others never do",
    )
    parser.add_argument(
        "--gpu-sharing",
        action="store_true",
        default=os.environ.get("REPROLAB_GPU_SHARING", "") in ("1", "true", "yes"),
        help="let several runs use one GPU (otherwise each GPU belongs to one run at a time)",
    )
    parser.add_argument(
        "--warm-spare",
        type=int,
        default=number("REPROLAB_WARM_SPARE") if number("REPROLAB_WARM_SPARE") is not None else 1,
        help="ready kernels kept beyond one per free run slot",
    )
    limits = [
        ("--memory-limit", "memory_mb", "REPROLAB_RUN_MEMORY_MB", "MiB of memory a run may use (default: 3/4 of RAM)"),
        ("--cpu-limit", "cpu_seconds", "REPROLAB_RUN_CPU_SECONDS", "CPU seconds a run may use (default: none)"),
        ("--process-limit", "processes", "REPROLAB_RUN_PROCESSES", "processes a run may have (default: 512)"),
        ("--output-limit", "output_mb", "REPROLAB_RUN_OUTPUT_MB", "MiB a run may print or display (default: 64)"),
        ("--workdir-limit", "workdir_mb", "REPROLAB_RUN_WORKDIR_MB", "MiB a run may write (default: 10240)"),
    ]
    for flag, dest, variable, text in limits:
        parser.add_argument(flag, dest=dest, type=int, default=number(variable), help=f"{text}; 0: no limit")


def run_limits(args: argparse.Namespace) -> Limits:
    """The limits the options give, the defaults for those they do not."""
    defaults = default_limits(_memory_total_mb())
    given = {name: getattr(args, name) for name in defaults.to_json() if getattr(args, name, None) is not None}
    if any(value < 0 for value in given.values()):
        raise SystemExit("reprolab-agent: limits are 0 (none) or positive")
    return Limits(**{**defaults.to_json(), **given})
