"""``lb-server``: run one replica. Reads ``SERVER_ID`` and the listening address; nothing else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from aiohttp import web

from server.app import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lb-server", description=__doc__)
    parser.add_argument("--id", default=os.environ.get("SERVER_ID"), help="default: $SERVER_ID")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=5000, help="listen port (default 5000)")
    parser.add_argument("--fd", type=int, help="serve on this inherited listening socket instead")
    args = parser.parse_args(argv)
    if not args.id:
        parser.error("a server id is required: set SERVER_ID or pass --id")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        app = create_app(args.id)
    except ValueError as exc:
        parser.error(str(exc))
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        loop = asyncio.new_event_loop()
    sock = socket.socket(fileno=args.fd) if args.fd is not None else None
    web.run_app(
        app,
        host=None if sock else args.host,
        port=None if sock else args.port,
        sock=sock,
        access_log=None,
        print=None,
        handle_signals=True,
        loop=loop,
    )


if __name__ == "__main__":
    main()
