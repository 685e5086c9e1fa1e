"""``lb-loadgen``: drive traffic at a running balancer and report what it did."""

from __future__ import annotations

import argparse
import asyncio
import sys

from loadgen.spread import measure_spread


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lb-loadgen", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:5555/home", help="target URL")
    parser.add_argument("-n", "--requests", type=int, default=10_000, help="requests to send")
    parser.add_argument("-c", "--connections", type=int, default=100, help="connection pool size")
    args = parser.parse_args(argv)
    spread = asyncio.run(measure_spread(args.url, args.requests, connections=args.connections))
    ok = sum(spread.per_replica.values())
    print(
        f"{ok}/{spread.requests} ok in {spread.seconds:.2f}s "
        f"({spread.requests / spread.seconds:.0f} req/s); peak/mean {spread.peak_to_mean:.3f}"
    )
    for replica, count in sorted(spread.per_replica.items()):
        print(f"  Server {replica:<12} {count:>7}  {100 * count / max(ok, 1):5.1f}%")
    for reason, count in spread.failures.items():
        print(f"  failed: {reason} × {count}")
    sys.exit(1 if spread.failures else 0)


if __name__ == "__main__":
    main()
