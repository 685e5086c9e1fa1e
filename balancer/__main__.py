"""``lb-balancer``: parse settings once, set up logging, serve until SIGINT/SIGTERM.

The only reader of env and argv.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from balancer.app import BalancerService
from balancer.cluster import redact
from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.http.workers import ADMIN_ENV, ID_ENV, INTERNAL_ENV, quiet_gc, run_worker
from balancer.runtimes.base import ReplicaRuntime
from balancer.runtimes.registry import RUNTIMES
from balancer.runtimes.static import StaticSettings
from balancer.state.backends import memory_backend

log = logging.getLogger("balancer")


async def serve(settings: Settings) -> None:
    runtime = _runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        if settings.state.shared:  # a Redis URL or Sentinels
            service = await _shared_service(settings, runtime, stack)
        else:
            service = BalancerService.on(
                settings, memory_backend(), runtime, worker_argv=sys.argv[1:]
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await service.start()
        quiet_gc()
        try:
            await stop.wait()
            log.info("shutting down")
        finally:
            await service.stop()


def _runtime(settings: Settings) -> ReplicaRuntime:
    return RUNTIMES.build(settings.runtime, settings.runtime_settings)


async def _shared_service(
    settings: Settings, runtime: ReplicaRuntime, stack: contextlib.AsyncExitStack
) -> BalancerService:
    """A balancer instance whose state lives in Redis, next to other instances."""
    # redis only in shared mode
    from balancer.state.redis_backend import redis_backend
    from balancer.state.sentinel import describe, sentinel_backend

    state = settings.state
    instance_id = state.instance_id or f"{socket.gethostname()}:{settings.http.port}"
    state = dataclasses.replace(state, instance_id=instance_id)
    settings = dataclasses.replace(settings, state=state)
    answer_timeout_s = 2 * settings.health.spawn_timeout_s + 5.0
    if state.sentinels:
        backend = sentinel_backend(
            state.sentinels,
            master_name=state.redis_master_name,
            url=state.redis_url,
            instance_id=instance_id,
            leader_ttl_s=state.leader_ttl_s,
            timeout_s=state.redis_timeout_s,
            answer_timeout_s=answer_timeout_s,
        )
        where = describe(state.sentinels, state.redis_master_name)
    else:
        backend = redis_backend(
            state.redis_url,
            instance_id=instance_id,
            leader_ttl_s=state.leader_ttl_s,
            timeout_s=state.redis_timeout_s,
            answer_timeout_s=answer_timeout_s,
        )
        where = redact(state.redis_url)
    stack.push_async_callback(backend.aclose)
    log.info("instance %s sharing state at %s", instance_id, where)
    return BalancerService.on(settings, backend, runtime, worker_argv=sys.argv[1:])


def main(argv: list[str] | None = None) -> None:
    try:
        settings = configured(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        sys.exit(f"lb-balancer: {exc}")
    logging.basicConfig(
        level=settings.log.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    admin, internal = os.environ.get(ADMIN_ENV), os.environ.get(INTERNAL_ENV)
    main_coro = (
        run_worker(settings, admin, internal, os.environ.get(ID_ENV, "?"))
        if admin and internal
        else serve(settings)
    )
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, only slower
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)


def configured(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """The settings ``argv`` and ``env`` give; a list of backends (the static runtime) also
    sets the number of replicas, unless a flag or variable does.

    Raises:
        ConfigError: as ``load_settings``.
    """
    settings = load_settings(argv, env)
    chosen = settings.runtime_settings
    given = {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    given |= {k[3:].lower() for k in env if k.startswith("LB_")}
    if isinstance(chosen, StaticSettings) and chosen.backend_list and "replicas" not in given:
        count = len(chosen.backend_list)
        replicas = dataclasses.replace(settings.replicas, count=count)
        settings = dataclasses.replace(settings, replicas=replicas)
    return settings


if __name__ == "__main__":
    main()
