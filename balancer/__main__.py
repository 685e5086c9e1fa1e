"""``lb-balancer``: parse settings once, set up logging, serve. The only reader of env and argv."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiohttp import web

from balancer.app import create_app
from balancer.config import load_settings
from balancer.errors import ConfigError
from balancer.process_runtime import ProcessRuntime
from balancer.store import InMemoryStore


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        sys.exit(f"lb-balancer: {exc}")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # optional: plain asyncio works, only slower
        loop = asyncio.new_event_loop()
    app = create_app(settings, store=InMemoryStore(), runtime=ProcessRuntime(settings.replica_host))
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        loop=loop,
        print=lambda msg: logging.getLogger("balancer").info("%s", msg.strip()),
        shutdown_timeout=5.0,
    )


if __name__ == "__main__":
    main()
