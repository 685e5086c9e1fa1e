"""Several ``python -m balancer`` instances sharing one Redis, as real processes over real sockets.

Every test owns its redis-server (``tests/support/redis_process.py``): the agreement,
propagation and concurrent-add tests share one per module (three instances on it); the others,
which kill instances or Redis itself, start their own.

  1. every instance routes every key to the same server (same epoch and fingerprint);
  2. a change reaches every other instance within 100 ms (p99);
  3. concurrent ``/add`` on two instances: both land, nothing lost;
  4. leader failover within lease TTL + 0.5 s, replicas adopted (same pids), a dead replica
     replaced, the last instance out stops every replica;
  5. a Redis outage under load: no failed request, ``/add`` 503, convergence after restart;
  6. a leader crash during a Redis outage: the next leader still controls the replicas
     (with a persistent Redis, and with one that restarted empty: the replicas' pids live in the
     membership document too, so the ring the survivor writes back still lets it adopt them);
  7. the last instance out right after its peer crashed (a crashed peer's announcement outlives
     it, so the instance checks that the announcement still moves before leaving replicas).

The harness (instances, cluster, cleanup by tagged pid) is ``tests/support/cluster.py``.

Each test prints what it measured (visible with ``pytest -s``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aredis

from tests.support.cluster import (
    ANNOUNCE_TTL_S,
    LEASE_TTL_S,
    MEMBERSHIP_KEY,
    Cluster,
    ClusterFactory,
    Instance,
    Json,
    Load,
    call,
    is_contract_error,
    percentile,
    pid_alive,
    rep_of,
    replica_processes,
    running_cluster,
    served_by,
    session,
    status_of,
    wait_converged,
    wait_gone,
)
from tests.support.redis_process import redis_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        redis_binary() is None, reason="needs the redis-server binary (CI installs it)"
    ),
]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three instances on one (non-persistent) Redis, shared by the tests that keep them up."""
    with running_cluster(tmp_path_factory.mktemp("trio"), 3, persistent=False) as cluster:
        yield cluster


# -- 1. agreement ------------------------------------------------------------------------------


async def test_every_instance_routes_every_key_to_the_same_server(trio: Cluster) -> None:
    with trio.logs_on_failure():
        async with session() as s:
            took, statuses = await wait_converged(s, trio.instances, 20.0)
            print(
                f"\n[agreement] converged {took * 1000:.0f} ms after startup: "
                f"epoch {statuses[0]['epoch']}, fingerprint {statuses[0]['fingerprint']}"
            )
            seed = random.randrange(2**32)
            rng = random.Random(seed)
            keys = [f"{rng.getrandbits(48):012x}" for _ in range(1000)]
            answers: dict[tuple[int, str], str] = {}
            failures: list[str] = []
            gate = asyncio.Semaphore(50)

            async def one(index: int, key: str) -> None:
                async with gate:
                    try:
                        code, body = await call(
                            s, "GET", f"{trio.instances[index].url}/home?id={key}"
                        )
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        failures.append(f"{key}@{index}: {exc!r}")
                        return
                    if code != 200:
                        failures.append(f"{key}@{index}: {code} {body}")
                        return
                    answers[(index, key)] = served_by(body)

            started = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(one(i, k) for k in keys for i in range(len(trio.instances)))),
                90,
            )
            elapsed = time.monotonic() - started
            after = await asyncio.gather(*(status_of(s, i) for i in trio.instances))
        assert not failures, failures[:10]
        # The ring did not change under the comparison.
        assert {st["epoch"] for st in after} == {statuses[0]["epoch"]}
        disagreeing = {
            k: [answers[(i, k)] for i in range(len(trio.instances))]
            for k in keys
            if len({answers[(i, k)] for i in range(len(trio.instances))}) != 1
        }
        spread = collections.Counter(answers[(0, k)] for k in keys)
        print(
            f"[agreement] {len(answers)} requests ({len(keys)} keys x {len(trio.instances)} "
            f"instances, seed {seed}) in {elapsed:.2f}s; disagreements: {len(disagreeing)}; "
            f"spread {dict(spread)}"
        )
        assert not disagreeing, list(disagreeing.items())[:10]
        # Non-trivial: the keys really spread over every member of the ring.
        assert set(spread) == {r["server_id"] for r in statuses[0]["replicas"]}


# -- 2. propagation ----------------------------------------------------------------------------


async def _time_until_epoch(
    s: aiohttp.ClientSession, instance: Instance, epoch: int, since: float, timeout_s: float = 5.0
) -> float:
    """Seconds from ``since`` until ``instance`` routes on ``epoch`` (polled every ~2 ms)."""
    while True:
        seen = (await status_of(s, instance))["epoch"]
        now = time.monotonic()
        if seen == epoch:
            return now - since
        assert seen < epoch, f"{instance.name} jumped to epoch {seen}, past {epoch}"
        assert now - since < timeout_s, f"{instance.name} still on epoch {seen} after {timeout_s}s"
        await asyncio.sleep(0.002)


async def test_a_change_reaches_every_other_instance_within_100ms(trio: Cluster) -> None:
    """Alternating ``/add {"n":1}`` and ``/rm {"n":1}``, each sent to the next instance in turn
    (so leader and followers both take changes). The clock starts when the change's HTTP answer
    has arrived; the committed epoch is read from Redis right after; a sample is the time until
    the LAST of the other instances reports that epoch in ``/lb/status``."""
    rounds = 24
    client = aredis.Redis.from_url(trio.redis.url, socket_timeout=2)
    samples: list[float] = []
    try:
        with trio.logs_on_failure():
            async with session() as s:
                await wait_converged(s, trio.instances, 20.0, replicas=None)
                for n in range(rounds):
                    target = trio.instances[n % len(trio.instances)]
                    others = [i for i in trio.instances if i is not target]
                    before = int(await client.hget(MEMBERSHIP_KEY, "epoch") or 0)
                    if n % 2 == 0:
                        code, body = await call(s, "POST", f"{target.url}/add", {"n": 1})
                    else:
                        code, body = await call(s, "DELETE", f"{target.url}/rm", {"n": 1})
                    answered = time.monotonic()
                    assert code == 200, (n, target.name, body)
                    epoch = int(await client.hget(MEMBERSHIP_KEY, "epoch") or 0)
                    assert epoch == before + 1, (before, epoch)
                    took = await asyncio.gather(
                        *(_time_until_epoch(s, o, epoch, answered) for o in others)
                    )
                    samples.append(max(took))
    finally:
        await client.aclose()
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    print(
        f"\n[propagation] {rounds} changes: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(samples) * 1000:.1f} ms; samples (ms) "
        f"{[round(x * 1000, 1) for x in samples]}"
    )
    assert p99 <= 0.100


# -- 3. concurrent changes ---------------------------------------------------------------------


async def test_concurrent_adds_on_two_instances_both_land(trio: Cluster) -> None:
    rounds = 3
    with trio.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, trio.instances, 20.0, replicas=None)
            start = await rep_of(s, trio.instances[0])
            added: list[str] = []
            for r in range(rounds):
                first = trio.instances[r % len(trio.instances)]
                second = trio.instances[(r + 1) % len(trio.instances)]
                names = (f"A{r + 1}", f"B{r + 1}")
                (code_a, body_a), (code_b, body_b) = await asyncio.gather(
                    call(s, "POST", f"{first.url}/add", {"n": 1, "hostnames": [names[0]]}),
                    call(s, "POST", f"{second.url}/add", {"n": 1, "hostnames": [names[1]]}),
                )
                print(
                    f"\n[concurrent] round {r + 1}: {first.name} +{names[0]} -> {code_a}, "
                    f"{second.name} +{names[1]} -> {code_b}"
                )
                assert (code_a, code_b) == (200, 200), (body_a, body_b)
                assert names[0] in body_a["message"]["replicas"], body_a
                assert names[1] in body_b["message"]["replicas"], body_b
                added.extend(names)
            expected_n = start["N"] + 2 * rounds
            _, statuses = await wait_converged(s, trio.instances, 10.0, replicas=expected_n)
            reps = [await rep_of(s, i) for i in trio.instances]
        print(f"[concurrent] N {start['N']} -> {reps[0]['N']}; replicas {reps[0]['replicas']}")
        for rep in reps:
            assert rep["N"] == expected_n, rep
            assert sorted(rep["replicas"]) == sorted([*start["replicas"], *added]), rep
        assert statuses[0]["target"] == expected_n


async def test_settings_and_weights_switch_on_every_instance_together(trio: Cluster) -> None:
    """A settings change sent to a follower is applied by the leader, and every instance then
    routes every key alike under the new algorithm; a weight change likewise."""
    with trio.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, trio.instances, 20.0, replicas=None)
            follower = next(
                i for i, st in zip(trio.instances, statuses, strict=True) if not st["leader"]
            )
            for settings in ({"algorithm": "maglev"}, {"algorithm": "slots"}):
                started = time.monotonic()
                code, body = await call(s, "PUT", f"{follower.url}/lb/settings", settings)
                assert code == 200, body
                epoch = body["message"]["epoch"]
                while True:  # every instance at the new epoch, with one fingerprint
                    _, statuses = await wait_converged(s, trio.instances, 10.0, replicas=None)
                    if statuses[0]["epoch"] >= epoch or time.monotonic() - started > 10:
                        break
                    await asyncio.sleep(0.005)
                algorithms = {st["algorithm"] for st in statuses}
                print(
                    f"\n[settings] {settings} via {follower.name}: every instance on it "
                    f"{(time.monotonic() - started) * 1000:.0f} ms after the request"
                )
                assert algorithms == {settings["algorithm"]}, statuses
                lookups = [
                    [
                        (await call(s, "GET", f"{i.url}/lb/lookup?key=k{n}"))[1]["message"]["owner"]
                        for n in range(100)
                    ]
                    for i in trio.instances
                ]
                assert all(found == lookups[0] for found in lookups), "instances disagree"
            name = statuses[0]["replicas"][0]["name"]
            code, body = await call(
                s, "PUT", f"{follower.url}/lb/weight", {"hostname": name, "weight": 0}
            )
            assert code == 200, body
            started = time.monotonic()
            while True:
                _, statuses = await wait_converged(s, trio.instances, 10.0, replicas=None)
                if statuses[0]["epoch"] >= body["message"]["epoch"]:
                    break
                assert time.monotonic() - started < 10, "the weight change did not arrive"
                await asyncio.sleep(0.005)
            for st in statuses:
                weights = {r["name"]: r["weight"] for r in st["replicas"]}
                assert weights[name] == 0
            owners = {
                (await call(s, "GET", f"{i.url}/lb/lookup?key=k{n}"))[1]["message"]["owner"]
                for i in trio.instances
                for n in range(200)
            }
            assert name not in owners  # drained everywhere
            code, body = await call(
                s, "PUT", f"{follower.url}/lb/weight", {"hostname": name, "weight": 1}
            )
            assert code == 200, body
            await wait_converged(s, trio.instances, 10.0, replicas=None)


# -- 4. leader failover ------------------------------------------------------------------------


async def _wait_for(
    what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.01
) -> tuple[float, Any]:
    """Poll the coroutine function ``check`` until it returns a truthy value: (seconds, value)."""
    started = time.monotonic()
    last: Any = None
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            last = await check()
            if last:
                return time.monotonic() - started, last
        await asyncio.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s}s (last: {last!r})")


async def test_leader_failover_adopts_the_replicas_and_keeps_n(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(2, persistent=False)
    with cluster.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, cluster.instances, 20.0)
            leader_index = next(i for i, st in enumerate(statuses) if st["leader"])
            leader = cluster.instances[leader_index]
            survivor = cluster.instances[1 - leader_index]
            pids = {r["name"]: r["pid"] for r in statuses[leader_index]["replicas"]}
            assert all(pids.values()) and all(map(pid_alive, pids.values())), pids
            assert sorted(replica_processes(cluster.tag)) == sorted(pids.values())
            rep_before = await rep_of(s, survivor)

            leader.kill()
            killed = time.monotonic()

            async def survivor_leads() -> bool:
                return (await status_of(s, survivor))["leader"] is True

            await _wait_for("survivor became leader", survivor_leads, 5.0)
            failover = time.monotonic() - killed
            print(
                f"\n[failover] {survivor.name} leader {failover:.3f}s after SIGKILL of "
                f"{leader.name} (lease TTL {LEASE_TTL_S}s)"
            )
            assert failover <= LEASE_TTL_S + 0.5

            async def adopted() -> dict[str, int] | None:
                st = await status_of(s, survivor)
                found = {r["name"]: r["pid"] for r in st["replicas"]}
                return found if all(found.values()) else None

            took, found = await _wait_for("replicas adopted", adopted, 5.0)
            print(f"[failover] replicas adopted {took:.3f}s after the takeover: {found}")
            assert found == pids  # same names, same processes
            assert all(map(pid_alive, pids.values()))
            # Nothing was started twice: the only replica processes are the original ones.
            assert sorted(replica_processes(cluster.tag)) == sorted(pids.values())
            assert await rep_of(s, survivor) == rep_before

            victim = sorted(pids)[0]
            os.kill(pids[victim], signal.SIGKILL)
            shot = time.monotonic()

            async def replaced() -> Json | None:
                rep = await rep_of(s, survivor)
                ok = victim not in rep["replicas"] and rep["N"] == rep_before["N"]
                return rep if ok else None

            _, rep = await _wait_for("victim replaced", replaced, 5.0)
            took = time.monotonic() - shot
            new = sorted(set(rep["replicas"]) - set(rep_before["replicas"]))
            print(f"[failover] {victim} (pid {pids[victim]}) replaced by {new} in {took:.3f}s")
            assert len(new) == 1 and re.fullmatch(r"Server [0-9a-f]+", new[0]), new

            st = await status_of(s, survivor)
            final = {r["name"]: r["pid"] for r in st["replicas"]}
            assert set(final) == set(rep["replicas"]) and all(final.values()), final
            assert sorted(replica_processes(cluster.tag)) == sorted(final.values())

            # The dead instance's announcement expires (TTL 3 s); only then is the survivor the
            # last instance, which is what makes it stop the replicas on the way out.
            async def alone() -> bool:
                st = await status_of(s, survivor)
                return [i["id"] for i in st["instances"]] == [survivor.name]

            await _wait_for("dead instance's announcement expired", alone, ANNOUNCE_TTL_S + 3)

        code = await asyncio.to_thread(survivor.terminate)
        assert code == 0
        left = await asyncio.to_thread(wait_gone, list(final.values()), 3.0)
        print(f"[failover] last instance stopped (exit {code}); replicas still alive: {left}")
        assert not left


# -- 5. Redis outage under load ----------------------------------------------------------------


async def _add_refused(s: aiohttp.ClientSession, instance: Instance, name: str) -> Json:
    code, body = await call(s, "POST", f"{instance.url}/add", {"n": 1, "hostnames": [name]})
    assert code == 503, (instance.name, code, body)
    assert is_contract_error(body), body
    return body


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
async def test_redis_outage_keeps_traffic_flowing_and_refuses_changes(
    make_cluster: ClusterFactory, persistent: bool
) -> None:
    """Redis stops (SIGTERM) for ~3 s under steady load, then restarts on the same port.

    ``aof`` is the expectation that matters: the redis-server persists (``--appendonly yes
    --appendfsync always``), as a production Redis does, so the restarted server has the
    membership, fencing counter and replica records it had, and the instances carry on at the
    SAME epoch with the same replicas (no new boot, nothing lost). ``no-persistence`` restarts
    Redis empty (``--save "" --appendonly no``): the leader writes the ring it routes on back
    (``ReplicaManager.restore``), so the members and fingerprint are the same and the epoch moves
    forward, never back.

    While Redis is down: every proxied request succeeds (routing needs no Redis), ``/add``
    answers 503 ``<Error> …`` with status ``failure`` on the leader and on the follower, both
    while the lease (1.5 s) still holds and after it ran out, and ``/rep`` answers 200 from the
    ring each instance holds. After the restart: the instances converge (one leader, same epoch
    and fingerprint), ``/add`` works again through the follower and on the leader, and the only
    replica processes are the ring's members (none started twice).
    """
    outage_s = 3.0
    cluster = make_cluster(2, persistent=persistent)
    redis = cluster.redis
    with cluster.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, cluster.instances, 20.0)
            leader = cluster.instances[next(i for i, st in enumerate(statuses) if st["leader"])]
            follower = next(i for i in cluster.instances if i is not leader)
            rep_before = await rep_of(s, leader)
            epoch_before = statuses[0]["epoch"]
            fingerprint_before = statuses[0]["fingerprint"]
            load = Load(cluster.instances, clients=4, max_requests=200_000)
            traffic = asyncio.create_task(load.run(s, duration_s=9.0))
            try:
                await asyncio.sleep(1.5)
                await asyncio.to_thread(redis.stop)  # SIGTERM by pid; waits for the exit
                down = time.monotonic()
                early = [
                    await _add_refused(s, i, f"X{n}") for n, i in enumerate((leader, follower))
                ]
                for instance in cluster.instances:
                    assert await rep_of(s, instance) == rep_before
                await asyncio.sleep(max(0.0, down + LEASE_TTL_S + 0.3 - time.monotonic()))
                late = [await _add_refused(s, i, f"Y{n}") for n, i in enumerate((leader, follower))]
                for instance in cluster.instances:
                    assert await rep_of(s, instance) == rep_before
                    assert (await status_of(s, instance))["store"] == "unavailable"
                await asyncio.sleep(max(0.0, down + outage_s - time.monotonic()))
                await asyncio.to_thread(redis.start)
                up = time.monotonic()
                print(
                    f"\n[outage] redis down {up - down:.2f}s; /add answers while down: "
                    f"{[b['message'][:60] for b in early + late]}"
                )
                converged, statuses = await wait_converged(s, cluster.instances, 15.0)
                while not persistent and statuses[0]["epoch"] <= epoch_before:
                    # An empty Redis: the instances agree on the ring they hold at once, and the
                    # leader writes it back (a new epoch) a moment later; wait for that.
                    assert time.monotonic() - up < 15.0, statuses
                    await asyncio.sleep(0.05)
                    _, statuses = await wait_converged(s, cluster.instances, 15.0)
                    converged = time.monotonic() - up
                print(
                    f"[outage] converged {converged:.3f}s after the restart: epoch "
                    f"{statuses[0]['epoch']}, leader "
                    f"{next(st['instance'] for st in statuses if st['leader'])}"
                )
                await asyncio.wait_for(asyncio.shield(traffic), 30.0)
            finally:
                load.stop.set()
                await asyncio.wait({traffic}, timeout=30.0)
            during = sum(1 for t in load.sent_at if down <= t < up)
            print(
                f"[outage] requests sent {load.sent} ({during} while Redis was down), "
                f"failures {len(load.failures)}"
            )
            assert not load.failures, load.failures[:10]
            assert during >= 100  # the load really ran through the outage
            # The same replicas and ring as before the outage; the same epoch if Redis kept it.
            assert statuses[0]["fingerprint"] == fingerprint_before
            if persistent:
                assert statuses[0]["epoch"] == epoch_before
            else:
                assert statuses[0]["epoch"] > epoch_before
            assert await rep_of(s, leader) == rep_before
            assert len(replica_processes(cluster.tag)) == rep_before["N"]
            # Changes work again, through the follower (relay) as well as on the leader.
            new_leader = cluster.instances[next(i for i, st in enumerate(statuses) if st["leader"])]
            new_follower = next(i for i in cluster.instances if i is not new_leader)
            for instance, name in ((new_follower, "Z1"), (new_leader, "Z2")):
                code, body = await call(
                    s, "POST", f"{instance.url}/add", {"n": 1, "hostnames": [name]}
                )
                assert code == 200, (instance.name, body)
                assert name in body["message"]["replicas"]
            await wait_converged(s, cluster.instances, 10.0, replicas=rep_before["N"] + 2)
            assert len(replica_processes(cluster.tag)) == rep_before["N"] + 2


# -- 6. a leader that crashed while Redis was down -----------------------------------------------


@pytest.mark.parametrize(
    "persistent",
    [True, False],
    ids=["aof", "no-persistence"],
)
async def test_next_leader_still_controls_the_replicas_after_redis_restarts(
    make_cluster: ClusterFactory, persistent: bool
) -> None:
    """Redis goes down, the leader crashes (SIGKILL) meanwhile, Redis comes back on the same port.

    The survivor becomes leader and must own the replicas the dead leader started: it reports
    their pids, ``/rm`` of one stops that process, and as the last instance out it stops the
    rest. With a persistent Redis the replica records survive; with a Redis that restarted empty
    the survivor writes back the ring it routes on, whose members carry their pids.
    """
    cluster = make_cluster(2, persistent=persistent)
    redis = cluster.redis
    with cluster.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, cluster.instances, 20.0)
            lead = next(i for i, st in enumerate(statuses) if st["leader"])
            leader, survivor = cluster.instances[lead], cluster.instances[1 - lead]
            pids = {r["name"]: r["pid"] for r in statuses[lead]["replicas"]}
            assert all(pids.values()), pids

            await asyncio.to_thread(redis.stop)
            leader.kill()
            await asyncio.to_thread(redis.start)
            took, (status,) = await wait_converged(s, [survivor], 10.0)
            print(
                f"\n[restart] {survivor.name} leads {took:.2f}s after Redis came back; replicas "
                f"{[(r['name'], r['pid']) for r in status['replicas']]}"
            )
            assert sorted(r["name"] for r in status["replicas"]) == sorted(pids)

            code, body = await call(
                s, "DELETE", f"{survivor.url}/rm", {"n": 1, "hostnames": ["Server 1"]}
            )
            assert code == 200, body
            still = await asyncio.to_thread(wait_gone, [pids["Server 1"]], 3.0)
            print(f"[restart] /rm Server 1 -> {code}; its process still running: {bool(still)}")
            assert not still, "Server 1 left the ring but its process was never stopped"

            async def alone() -> bool:
                st = await status_of(s, survivor)
                return [i["id"] for i in st["instances"]] == [survivor.name]

            await _wait_for("dead instance's announcement expired", alone, ANNOUNCE_TTL_S + 3)
            assert {r["name"]: r["pid"] for r in (await status_of(s, survivor))["replicas"]} == {
                name: pid for name, pid in pids.items() if name != "Server 1"
            }
        assert await asyncio.to_thread(survivor.terminate) == 0
        left = await asyncio.to_thread(wait_gone, list(pids.values()), 3.0)
        print(f"[restart] last instance stopped; replica processes left running: {left}")
        assert not left


# -- 7. the last instance out, right after its peer crashed --------------------------------------


async def test_last_instance_stops_the_replicas_right_after_its_peer_crashed(
    make_cluster: ClusterFactory,
) -> None:
    """The follower crashes (SIGKILL); the leader, now the only instance, is stopped at once.

    As the last instance out it must stop every replica (nobody is left to route to them or
    adopt them), as it does once the dead peer's announcement has expired (the failover test).
    """
    cluster = make_cluster(2, persistent=False)
    with cluster.logs_on_failure():
        async with session() as s:
            _, statuses = await wait_converged(s, cluster.instances, 20.0)
            lead = next(i for i, st in enumerate(statuses) if st["leader"])
            leader, follower = cluster.instances[lead], cluster.instances[1 - lead]
            pids = [r["pid"] for r in statuses[lead]["replicas"]]
            assert len(pids) == 3 and all(map(pid_alive, pids)), pids
        follower.kill()
        assert await asyncio.to_thread(leader.terminate) == 0
        left = await asyncio.to_thread(wait_gone, pids, 3.0)
        print(
            f"\n[last-out] {leader.name} stopped right after {follower.name} crashed; "
            f"replica processes left running: {left}"
        )
        assert not left
