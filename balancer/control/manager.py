"""Membership changes: add, remove and replace replicas, one change at a time.

Owns ``ReplicaManager``, the only writer of membership. It acts only while this instance is the
leader, and every commit carries the leader's fencing token, so a leader that lost its lease
cannot overwrite its successor's changes. It checks a change against the current membership
(names taken, names unknown, limits), starts replicas through the runtime (recording each in the
store, so the next leader can adopt it) and lets them into the ring only after their first
passed heartbeat, commits with the epoch it read (retrying a lost race against another writer),
and stops replicas only after they have left the ring.
Must not import: aiohttp (the session arrives as a ready-made probe function), redis, docker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

from balancer.errors import (
    ConflictError,
    NotLeaderError,
    RequestError,
    RuntimeFailure,
    StoreUnavailable,
)
from balancer.hashing import RingSettings, next_state
from balancer.names import generate_name, server_id
from balancer.runtimes.base import ReplicaHandle, ReplicaRuntime
from balancer.state.coordination import Leadership, SoloLeadership
from balancer.state.store import Membership, Replica, Store

log = logging.getLogger(__name__)

# The next membership, given the latest (its epoch and ring state are filled in by the commit).
Change = Callable[[Membership], Membership]
WaitReady = Callable[[str], Awaitable[None]]  # address → returns once it passed a heartbeat
OnChange = Callable[[], Awaitable[object]]
OnCommit = Callable[[str, Membership, Membership], None]  # (kind, before, after)

_COMMIT_ATTEMPTS = 5
_SPAWN_CONCURRENCY = 8


class ReplicaManager:
    """Serialises membership changes of this instance (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        runtime: ReplicaRuntime,
        wait_ready: WaitReady,
        on_change: OnChange,
        *,
        max_replicas: int,
        alive_ttl_s: float,
        leadership: Leadership | None = None,
        rng: random.Random | None = None,
        ring_settings: RingSettings | None = None,
        on_commit: OnCommit | None = None,
    ) -> None:
        """``ring_settings`` are pinned into the shared state by the first commit; after that
        the stored settings rule (``set_settings`` changes them)."""
        self._store = store
        self._runtime = runtime
        self._wait_ready = wait_ready
        self._on_change = on_change
        self._max_replicas = max_replicas
        self._alive_ttl_s = alive_ttl_s
        self._leadership = leadership or SoloLeadership()
        self._rng = rng or random.Random()
        self._ring_settings = ring_settings or RingSettings()
        self._on_commit = on_commit
        self._lock = asyncio.Lock()
        self._spawn_slots = asyncio.Semaphore(_SPAWN_CONCURRENCY)

    async def add(self, n: int, hostnames: Sequence[str], *, grow: bool = True) -> Membership:
        """Start ``n`` replicas (``hostnames`` first, generated names for the rest) and add them.

        ``grow`` raises the target N by ``n`` (``/add``); a replacement leaves it as it is.

        Raises:
            RequestError: a name is taken, or the total would exceed ``max_replicas``.
            RuntimeFailure: a replica did not start; none of the ``n`` is added.
            NotLeaderError: this instance is not the leader.
        """
        async with self._lock:
            self._require_leader()
            current = await self._store.membership()
            if len(current.replicas) + n > self._max_replicas:
                raise RequestError(
                    f"Adding {n} instances would exceed the limit of {self._max_replicas} replicas"
                )
            names = self._new_names(current, n, hostnames)
            handles = await self._spawn_ready(names)
            try:
                return await self._commit(
                    "add" if grow else "replace",
                    lambda m: _with(
                        m, self._with_added(m, handles), target=_grown(m, n if grow else 0)
                    ),
                )
            except BaseException:
                await self._stop_all(h.name for h in handles)
                raise

    async def remove(self, n: int, hostnames: Sequence[str]) -> Membership:
        """Remove ``hostnames`` plus ``n - len(hostnames)`` random others, then stop them.

        Raises:
            RequestError: an unknown name, or more replicas than exist.
            NotLeaderError: this instance is not the leader.
        """
        async with self._lock:
            self._require_leader()
            current = await self._store.membership()
            if n > len(current.replicas):
                raise RequestError(
                    f"Cannot remove {n} instances: only {len(current.replicas)} replicas exist"
                )
            unknown = [h for h in hostnames if current.get(h) is None]
            if unknown:
                raise RequestError(f"Unknown replica hostname(s): {', '.join(unknown)}")
            others = [name for name in current.names if name not in hostnames]
            victims = list(hostnames) + self._rng.sample(others, n - len(hostnames))
            result = await self._commit(
                "remove",
                lambda m: _with(m, self._without(m, victims), target=_grown(m, -len(victims))),
            )
            await self._stop_all(victims)
            return result

    async def evict(self, name: str) -> bool:
        """Take a failed replica out of the ring and stop it.

        Returns:
            False when it was no longer a member (removed by ``/rm`` meanwhile): no replacement
            is owed then.
        """
        async with self._lock:
            self._require_leader()
            if (await self._store.membership()).get(name) is None:
                return False
            await self._commit("evict", lambda m: _with(m, self._without(m, [name])))
            await self._stop_all([name], force=True)
            return True

    async def join(self, handles: Sequence[ReplicaHandle], *, timeout_s: float) -> list[str]:
        """Let in replicas another system runs (``Policy.discovered``) once each passes its
        first health check. The checks run concurrently, each for at most ``timeout_s`` and
        outside the lock; those that passed are committed together, up to ``max_replicas``.

        Returns:
            The names that joined (the others did not answer in time, or are members already).

        Raises:
            NotLeaderError: this instance is not the leader.
        """
        passed = await asyncio.gather(*(self._answers(h, timeout_s) for h in handles))
        ready = [h for h, ok in zip(handles, passed, strict=True) if ok]
        if not ready:
            return []
        async with self._lock:
            self._require_leader()
            current = await self._store.membership()
            room = max(0, self._max_replicas - len(current.replicas))
            fresh = [h for h in ready if current.get(h.name) is None][:room]
            if len(fresh) < len(ready) and room < len(ready):
                log.warning("max_replicas=%d: not joining every listed replica", self._max_replicas)
            for handle in fresh:
                await self._store.mark_alive(handle.name, self._alive_ttl_s)
            if fresh:
                await self._commit(
                    "join",
                    lambda m: _with(
                        m, self._with_added(m, [h for h in fresh if m.get(h.name) is None])
                    ),
                )
            return [h.name for h in fresh]

    async def _answers(self, handle: ReplicaHandle, timeout_s: float) -> bool:
        """Whether ``handle`` passes a first health check within ``timeout_s``."""
        async with self._spawn_slots:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wait_ready(handle.address)
            except (TimeoutError, RuntimeFailure):
                return False
            return True

    async def set_target(self, n: int) -> Membership:
        """Set N without starting anything (the leader's reconciliation starts what is owed)."""
        async with self._lock:
            self._require_leader()
            return await self._commit("target", lambda m: dataclasses.replace(m, target=n))

    async def set_settings(self, settings: RingSettings) -> Membership:
        """Route with ``settings`` from now on, on every instance (one commit)."""
        async with self._lock:
            self._require_leader()
            return await self._commit(
                "settings", lambda m: dataclasses.replace(m, settings=settings)
            )

    async def set_weight(self, name: str, weight: int) -> Membership:
        """Give a member ``weight`` shares of the keys (0 drains it: no keys, still running).

        Raises:
            RequestError: ``name`` is not a member.
        """
        async with self._lock:
            self._require_leader()
            if (await self._store.membership()).get(name) is None:
                raise RequestError(f"Unknown replica hostname: {name}")
            return await self._commit(
                "weight",
                lambda m: _with(
                    m,
                    [
                        dataclasses.replace(r, weight=weight) if r.name == name else r
                        for r in m.replicas
                    ],
                ),
            )

    async def stop_strays(self, names: Collection[str]) -> list[str]:
        """Stop the replicas among ``names`` that are not members (a leader died between starting
        one and committing it, or someone started one behind our back). Checked under the lock
        against the latest membership, so a replica an ``add`` has just committed is kept.

        Returns:
            The names stopped.
        """
        async with self._lock:
            self._require_leader()
            members = set((await self._store.membership()).names)
            strays = [name for name in names if name not in members]
            if strays:
                log.warning("stopping replicas that are not members: %s", ", ".join(strays))
                await self._stop_all(strays, force=True)
            return strays

    async def restore(self, known: Membership) -> bool:
        """Write ``known`` back if the store lost its data (its epoch is older than ours).

        Also records the replicas this runtime tracks again, so they can still be adopted.

        Returns:
            True when the store was behind and has been restored.
        """
        async with self._lock:
            token = self._require_leader()
            if (await self._store.membership()).epoch >= known.epoch:
                return False
            restored = dataclasses.replace(known, epoch=known.epoch + 1)
            if not await self._store.restore(restored, fence_token=token):
                return False
            for handle in await self._runtime.list():
                await self._store.record_handle(handle)
            log.warning("the store had lost its data; restored epoch %d", restored.epoch)
        await self._on_change()
        return True

    async def remove_all(self) -> None:
        """Empty the ring and stop every replica (the last instance shutting down)."""
        async with self._lock:
            self._require_leader()
            # An empty document: the next start boots N afresh with its own settings.
            await self._commit("clear", lambda m: Membership())
            names = {h.name for h in await self._store.handles()}
            names.update(h.name for h in await self._runtime.list())
            await self._stop_all(names)

    # -- helpers ---------------------------------------------------------------------------

    def _new_names(self, current: Membership, n: int, hostnames: Sequence[str]) -> list[str]:
        taken = {server_id(name) for name in current.names}
        clashes = [h for h in hostnames if server_id(h) in taken]
        if clashes:
            raise RequestError(f"Replica hostname(s) already in use: {', '.join(clashes)}")
        names = list(hostnames)
        taken.update(server_id(h) for h in names)
        while len(names) < n:
            names.append(generate_name(taken))
            taken.add(server_id(names[-1]))
        return names

    async def _spawn_ready(self, names: Sequence[str]) -> list[ReplicaHandle]:
        results = await asyncio.gather(
            *(self._spawn_one(name) for name in names), return_exceptions=True
        )
        handles = [r for r in results if isinstance(r, ReplicaHandle)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self._stop_all(h.name for h in handles)
            for err in errors:
                if not isinstance(err, Exception):
                    raise err  # cancellation and friends propagate as they are
            raise RuntimeFailure(f"failed to start replicas: {errors[0]}") from errors[0]
        return handles

    async def _spawn_one(self, name: str) -> ReplicaHandle:
        async with self._spawn_slots:
            handle = await self._runtime.spawn(name, server_id(name))
            try:
                await self._store.record_handle(handle)
                await self._wait_ready(handle.address)
            except BaseException:
                await self._stop_all([name])
                raise
            await self._store.mark_alive(name, self._alive_ttl_s)
            return handle

    def _with_added(self, current: Membership, handles: Sequence[ReplicaHandle]) -> list[Replica]:
        replicas = list(current.replicas)
        taken = {server_id(r.name) for r in replicas}
        for handle in handles:
            if server_id(handle.name) in taken:
                raise RequestError(f"Replica hostname(s) already in use: {handle.name}")
            index = Membership(0, tuple(replicas)).free_index()
            replicas.append(Replica(handle.name, index, handle.address, locator=handle.locator))
        return replicas

    @staticmethod
    def _without(current: Membership, names: Sequence[str]) -> list[Replica]:
        return [r for r in current.replicas if r.name not in names]

    async def _commit(self, kind: str, change: Change) -> Membership:
        """Apply ``change`` to the latest membership, retrying if another writer got there first.

        ``kind`` names the change for the movement log (add, replace, remove, evict, weight,
        settings, target, clear)."""
        for _ in range(_COMMIT_ATTEMPTS):
            # The token of the term this change was decided in: read after the awaits below, a
            # lease lost meanwhile would read None, an unfenced write the store lets through.
            token = self._require_leader()
            current = await self._store.membership()
            new = change(current)
            settings = new.settings
            if settings is None and new.replicas:
                settings = current.settings or self._ring_settings
            ring_state = ""
            if settings is not None:  # tens of ms of CPU: off the loop, which keeps serving
                ring_state = await asyncio.to_thread(
                    next_state, current.members(), current.ring_state, new.members(), settings
                )
            committed = await self._store.commit(
                new.replicas,
                expected_epoch=current.epoch,
                fence_token=token,
                target=new.target,
                settings=settings,
                ring_state=ring_state,
            )
            if committed is not None:
                log.info("membership epoch %d: %s", committed.epoch, ", ".join(committed.names))
                if self._on_commit is not None:
                    self._on_commit(kind, current, committed)
                try:
                    await self._on_change()
                except Exception:  # the change is committed; the ring watcher catches up
                    log.exception("ring refresh after epoch %d failed", committed.epoch)
                return committed
        raise ConflictError("membership kept changing under this update; try again")

    def _require_leader(self) -> int | None:
        """The fencing token of this leader's term (None: a solo instance, unfenced).

        Raises:
            NotLeaderError: this instance is not the leader.
        """
        if not self._leadership.is_leader:
            raise NotLeaderError("only the leader changes replicas, and this instance is not it")
        return self._leadership.token

    async def _stop_all(self, names: Iterable[str], *, force: bool = False) -> None:
        """Stop replicas (after they left the ring), then forget their runtime records."""
        names = list(names)
        await asyncio.gather(*(self._runtime.stop(n, force=force) for n in names))
        for name in names:
            try:
                await self._store.drop_handle(name)
            except StoreUnavailable as exc:  # the next leader's adoption finds it gone
                log.warning("could not forget the record of stopped replica %s: %s", name, exc)


def _grown(current: Membership, delta: int) -> int:
    """The target N after adding (``delta > 0``) or removing replicas."""
    base = len(current.replicas) if current.target is None else current.target
    return max(0, base + delta)


def _with(
    current: Membership, replicas: Iterable[Replica], *, target: int | None = None
) -> Membership:
    """``current`` with other replicas (and a new target N when given)."""
    return dataclasses.replace(
        current,
        replicas=tuple(replicas),
        target=current.target if target is None else target,
    )
