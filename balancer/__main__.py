"""``lb-balancer``: parse settings once, set up logging, serve until SIGINT/SIGTERM.

The only reader of env and argv.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from balancer.app import BalancerService
from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.process_runtime import ProcessRuntime
from balancer.store import InMemoryStore

log = logging.getLogger("balancer")


async def serve(settings: Settings) -> None:
    service = BalancerService(
        settings, store=InMemoryStore(), runtime=ProcessRuntime(settings.replica_host)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
        log.info("shutting down")
    finally:
        await service.stop()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        sys.exit(f"lb-balancer: {exc}")
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, only slower
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
