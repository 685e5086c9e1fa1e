"""``lb-loadgen``: drive traffic at a running balancer, and run the assignment's analyses.

  lb-loadgen run  …   load driver: rate, concurrency, key distribution, CSV, summary
  lb-loadgen a1   …   A-1: 10,000 requests at N=3, requests per replica (a1.png)
  lb-loadgen a2   …   A-2: N = 2..6, mean and spread of load per replica (a2.png)
  lb-loadgen a3   …   A-3: every endpoint checked, a replica killed, time to recovery (a3.png)
  lb-loadgen a4   …   A-4: A-1 and A-2 under the assignment's hash scheme vs the default
  lb-loadgen all  …   a1, a2, a3, a4 in sequence

Without a subcommand, ``lb-loadgen [options]`` is ``lb-loadgen run [options]`` (so
``lb-loadgen -n 10000 --url http://127.0.0.1:5555/home`` works as before). Loadgen speaks only
HTTP to a balancer URL: the embedded default (``make run``: 127.0.0.1:5555 and :5556) and the
Docker deployment alike. Owns the command line and the dispatch to the modules that do the work.
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadgen import a1, a2, a3, a4
from loadgen.admin import AdminError, base_url
from loadgen.driver import DriveConfig, drive
from loadgen.keys import KEYS_HELP, parse_keys
from loadgen.kill import KillError
from loadgen.progress import Progress, wanted
from loadgen.records import write_csv
from loadgen.stats import format_summary, summarize

DEFAULT_URL = "http://127.0.0.1:5555"
COMMANDS = ("run", "a1", "a2", "a3", "a4", "all")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _keys(text: str) -> Any:
    try:
        return parse_keys(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="load driver: send GETs, print a summary (also the default without a subcommand)",
        description="Send GET requests at a balancer and print requests, ok, failures by "
        "reason, req/s, p50/p99 latency and requests per replica (peak/mean). Bounded by -n, "
        "--duration or both (whichever ends first); -n 10000 when neither is given.",
    )
    p.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="the balancer (default %(default)s); a URL with a path (…/home) is the target "
        "itself and --path is ignored",
    )
    p.add_argument("--path", default="/home", help="path to request (default %(default)s)")
    p.add_argument("-n", "--requests", type=_positive_int, help="number of requests")
    p.add_argument("-d", "--duration", type=float, help="seconds to send for")
    p.add_argument(
        "-r",
        "--rate",
        type=float,
        default=0.0,
        help="requests per second, open loop (sends on schedule whatever the answers do); "
        "0 = as fast as possible (default)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        "--connections",
        type=_positive_int,
        default=100,
        help="most requests in flight = connection pool size (default %(default)s)",
    )
    p.add_argument("--keys", type=_keys, default=parse_keys("none"), help=KEYS_HELP)
    p.add_argument("--seed", type=int, help="seed for the key draws (reproducible runs)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, s (default 10)")
    p.add_argument(
        "--csv",
        type=Path,
        help="write one row per request: t_start, latency_s, status, replica, key, error",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_run)


def _common(p: argparse.ArgumentParser, *, requests: bool = True) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help="the balancer (default %(default)s)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("analysis"),
        help="directory for the PNG, JSON and CSV files (default %(default)s/)",
    )
    if requests:
        p.add_argument(
            "-n",
            "--requests",
            type=_positive_int,
            default=10_000,
            help="requests per batch (default %(default)s, as the assignment)",
        )


def _a3_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kill-cmd",
        help="command that kills the replica, run without a shell; {name} = its /rep name, "
        "{id} = its one-token id, {pid}. Docker deployment: 'docker rm -f chlb-{id}'. Default: "
        "SIGKILL to the pid /lb/status lists, when the balancer URL is on loopback",
    )
    p.add_argument("--victim", help="replica to kill (default: the first /rep lists)")
    p.add_argument(
        "--recovery-timeout",
        type=float,
        default=60.0,
        help="give up waiting for recovery after this many s (default %(default)s)",
    )


def _add_analyses(sub: Any) -> None:
    p = sub.add_parser(
        "a1",
        help="A-1: requests at N=3, requests per replica (a1.png/.json/.csv)",
        description="A-1: 10,000 async GET /home at N=3 as the reference client sends them "
        "(one ClientSession, one asyncio.gather, connector limit 100); bar chart of requests "
        "per replica with the mean. Scales to N=3 first if needed and puts the original "
        "replicas back after.",
    )
    _common(p)
    p.set_defaults(handler=cmd_a1)
    p = sub.add_parser(
        "a2",
        help="A-2: N=2..6, mean and spread of load per replica (a2.png/.json/.csv)",
        description="A-2: for N = 2..6 (POST /add {n, hostnames: []}, DELETE /rm {n}), "
        "10,000 requests each; mean, min/max and stdev of requests per replica against the "
        "ideal 10000/N. Puts the original replicas back after.",
    )
    _common(p)
    p.set_defaults(handler=cmd_a2)
    p = sub.add_parser(
        "a3",
        help="A-3: check every endpoint, kill a replica, time to recovery (a3.png/.json)",
        description="A-3: check /rep, /add, /rm (and both exact length errors), /home, "
        "/heartbeat and an unknown path; then kill one replica and poll /rep every 50 ms "
        "until it is gone and N is back.",
    )
    _common(p, requests=False)
    _a3_options(p)
    p.set_defaults(handler=cmd_a3)
    p = sub.add_parser(
        "a4",
        help="A-4: A-1 and A-2, assignment scheme vs the default (a4_a1.png, a4_a2.png)",
        description="A-4: switch to the assignment's literal hash scheme (PUT /lb/settings), "
        "run A-1 and A-2, switch back, run them again, compare. The original algorithm and "
        "replicas are always put back.",
    )
    _common(p)
    p.add_argument(
        "--compare",
        help="algorithm to compare with (default: the one in force; slots if that is assignment)",
    )
    p.set_defaults(handler=cmd_a4)
    p = sub.add_parser(
        "all",
        help="a1, a2, a3 and a4 in sequence",
        description="Run a1, a2, a3 and a4 in sequence, all into --out.",
    )
    _common(p)
    _a3_options(p)
    p.add_argument("--compare", help="a4's comparison algorithm (see a4 --help)")
    p.set_defaults(handler=cmd_all)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lb-loadgen",
        description=__doc__.split("\n\nWithout")[0] if __doc__ else None,
        epilog="Without a subcommand, the options are run's: lb-loadgen -n 10000 is "
        "lb-loadgen run -n 10000. See lb-loadgen <command> --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(title="commands", metavar="{run,a1,a2,a3,a4,all}")
    _add_run(sub)
    _add_analyses(sub)
    return p


def target_url(url: str, path: str) -> str:
    """``url`` itself when it has a path (legacy ``--url …/home``), else the base + ``path``."""
    if urlsplit(url).path not in ("", "/"):
        return url
    return base_url(url) + "/" + path.lstrip("/")


async def cmd_run(args: argparse.Namespace) -> int:
    count = args.requests if args.requests or args.duration else 10_000
    config = DriveConfig(
        target=target_url(args.url, args.path),
        count=count,
        duration_s=args.duration,
        rate=args.rate,
        concurrency=args.concurrency,
        keys=args.keys,
        seed=args.seed,
        timeout_s=args.timeout,
    )
    progress = Progress(config.expected, enabled=wanted(args.quiet))
    try:
        result = await drive(config, on_done=progress.update)
    finally:
        progress.close()
    summary = summarize(result.records, result.seconds, result.max_lag_s)
    print(
        f"{config.target}  keys {config.keys}  rate {config.rate or 'max'}  "
        f"concurrency {config.concurrency}"
    )
    print(format_summary(summary))
    if args.csv is not None:
        rows = write_csv(args.csv, result.records)
        print(f"wrote {rows} rows to {args.csv}")
    return 1 if summary.failures else 0


def _report(name: str, started: float, paths: list[Path]) -> None:
    print(f"{name}: {time.monotonic() - started:.1f} s; wrote {', '.join(map(str, paths))}\n")


async def cmd_a1(args: argparse.Namespace) -> int:
    started = time.monotonic()
    result = await a1.run_a1(args.url, args.requests)
    print(f"A-1  {result.url}\n{a1.table_a1(result.run)}")
    _report("a1", started, a1.write_a1(result, args.out))
    return 1 if result.run.failed or len(result.restored) != len(result.original) else 0


async def cmd_a2(args: argparse.Namespace) -> int:
    started = time.monotonic()
    result = await a2.run_a2(args.url, args.requests)
    print(f"A-2  {result.url}, {args.requests} requests per N\n{a2.table_a2(result.runs)}")
    print(f"N restored: {len(result.restored)} (was {len(result.original)})")
    _report("a2", started, a2.write_a2(result, args.out))
    failed = sum(run.failed for run in result.runs)
    return 1 if failed or len(result.restored) != len(result.original) else 0


async def cmd_a3(args: argparse.Namespace) -> int:
    started = time.monotonic()
    result = await a3.run_a3(
        args.url,
        kill_cmd=args.kill_cmd,
        victim=args.victim,
        limit_s=args.recovery_timeout,
    )
    print(f"A-3  {result.url}\n{a3.table_a3(result)}")
    _report("a3", started, a3.write_a3(result, args.out))
    return 0 if result.passed else 1


async def cmd_a4(args: argparse.Namespace) -> int:
    started = time.monotonic()
    result = await a4.run_a4(args.url, args.requests, compare=args.compare)
    print(f"A-4  {result.url}, {args.requests} requests per batch\n{a4.table_a4(result)}")
    _report("a4", started, a4.write_a4(result, args.out))
    failed = sum(r.a1.failed + sum(run.failed for run in r.a2) for r in result.results)
    restored = result.restored_algorithm == result.original_algorithm and len(
        result.restored
    ) == len(result.original)
    return 1 if failed or not restored else 0


async def cmd_all(args: argparse.Namespace) -> int:
    codes = [await step(args) for step in (cmd_a1, cmd_a2, cmd_a3, cmd_a4)]
    return max(codes)


Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def normalize_argv(argv: list[str]) -> list[str]:
    """Without a subcommand it is ``run`` (the original ``lb-loadgen -n 10000 --url …``)."""
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        return ["run", *argv]
    return argv


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(normalize_argv(sys.argv[1:] if argv is None else list(argv)))
    handler: Handler = args.handler
    try:
        code = asyncio.run(handler(args))
    except (AdminError, KillError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"lb-loadgen: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 2
    except ValueError as exc:
        print(f"lb-loadgen: error: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
