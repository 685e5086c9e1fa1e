"""Analysis A-3: exercise every endpoint of the contract, then kill a replica and time how
long until ``/rep`` shows it gone and N back.

Owns the contract checks (each answer's status and shape; the contract's error bodies compared
byte for byte), the kill-and-poll timeline (``GET /rep`` every 50 ms, bounded) and the outputs
``a3.json`` (every check with pass/fail, the recovery time, the timeline) and ``a3.png`` (N
over time, the kill marked). The kill itself is ``loadgen.kill``'s.
Must not import anything from ``balancer`` or ``server``: it speaks only HTTP.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadgen import output, plots
from loadgen.admin import Admin, Answer
from loadgen.contract import (
    ADD_TOO_MANY,
    RM_TOO_MANY,
    failure_body,
    name_for_id,
    replica_id,
    replicas_shape_error,
    server_id,
    unknown_path_error,
)
from loadgen.kill import kill_replica

POLL_TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the kill began (negative: before)
    n: int | None  # N from /rep; None when the poll failed
    victim_listed: bool


@dataclass
class Recovery:
    victim: str
    how: str
    target: int
    recovery_s: float | None  # victim gone and N back; None: not within the time limit
    gone_s: float | None  # the victim first missing from /rep
    replacement: list[str]
    samples: list[Sample] = field(default_factory=list)


@dataclass
class A3Result:
    url: str
    checks: list[Check]
    recovery: Recovery | None
    error: str | None = None  # why the kill or the polling could not be done

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        rec = self.recovery
        return {
            "analysis": "A-3",
            "url": self.url,
            "all_passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "error": self.error,
            "kill": None
            if rec is None
            else {
                "victim": rec.victim,
                "how": rec.how,
                "target_N": rec.target,
                "recovery_s": None if rec.recovery_s is None else round(rec.recovery_s, 3),
                "victim_gone_s": None if rec.gone_s is None else round(rec.gone_s, 3),
                "replacement": rec.replacement,
                "timeline": [asdict(s) for s in rec.samples],
            },
        }


class Checker:
    """Runs the contract checks, collecting one ``Check`` each."""

    def __init__(self, admin: Admin) -> None:
        self.admin = admin
        self.checks: list[Check] = []

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, passed, "" if passed else detail))
        return passed

    def exact_failure(self, name: str, answer: Answer, message: str) -> bool:
        """400 and the body byte for byte ``{"message": message, "status": "failure"}``."""
        want = json.dumps(failure_body(message))
        ok = answer.status == 400 and answer.text == want
        return self.check(name, ok, f"{answer.status} {answer.text!r}, want 400 {want!r}")

    def replicas_answer(self, name: str, answer: Answer, want: list[str] | None) -> list[str]:
        """200 with the ``/rep`` shape (and, when given, exactly the names ``want``)."""
        why = replicas_shape_error(answer.body) if answer.status == 200 else answer.text
        names: list[str] = answer.body["message"]["replicas"] if why is None else []
        if why is None and want is not None and sorted(names) != sorted(want):
            why = f"replicas {names}, want {want}"
        self.check(name, why is None, f"{answer.status}: {why}")
        return names

    async def run(self) -> list[Check]:
        admin = self.admin
        names = self.replicas_answer(
            "GET /rep: 200 {N, replicas}", await admin.call("GET", "/rep"), None
        )
        if not names:
            return self.checks
        tag = secrets.token_hex(3)
        extra = [f"A3x{tag}", f"A3y{tag}"]
        self.exact_failure(
            "POST /add len(hostnames) > n: 400 exact error",
            await admin.call("POST", "/add", {"n": 1, "hostnames": extra}),
            ADD_TOO_MANY,
        )
        self.exact_failure(
            "DELETE /rm len(hostnames) > n: 400 exact error",
            await admin.call("DELETE", "/rm", {"n": 1, "hostnames": extra}),
            RM_TOO_MANY,
        )
        await self._add_rm(names, extra)
        await self._data_path(names)
        after = await admin.call("GET", "/rep")
        self.replicas_answer("GET /rep after the checks: the original replicas", after, names)
        return self.checks

    async def _add_rm(self, names: list[str], extra: list[str]) -> None:
        admin = self.admin
        added = self.replicas_answer(
            "POST /add n=2 with 1 hostname: 200 {N, replicas}",
            await admin.call("POST", "/add", {"n": 2, "hostnames": extra[:1]}),
            None,
        )
        new = [x for x in added if x not in names]
        self.check(
            "POST /add: lists that name, 1 generated name and every earlier replica",
            len(added) == len(names) + 2 and set(names) <= set(added) and extra[0] in new,
            f"{added}",
        )
        if new:
            self.replicas_answer(
                "DELETE /rm by hostnames: 200, the remaining replicas",
                await admin.call("DELETE", "/rm", {"n": len(new), "hostnames": new}),
                names,
            )
        self.replicas_answer(
            "POST /add n=1 hostname: 200",
            await admin.call("POST", "/add", {"n": 1, "hostnames": extra[1:]}),
            [*names, extra[1]],
        )
        self.replicas_answer(
            "POST /rm (alias of DELETE /rm): 200",
            await admin.call("POST", "/rm", {"n": 1, "hostnames": extra[1:]}),
            names,
        )

    async def _data_path(self, names: list[str]) -> None:
        admin = self.admin
        async with admin.session.get(admin.base + "/home") as resp:
            text, ctype = await resp.text(), resp.content_type
            status = resp.status
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        rid = replica_id(body.get("message")) if isinstance(body, dict) else None
        self.check(
            "GET /home: 200 application/json {message: 'Hello from Server: <ID>', successful}",
            status == 200
            and ctype == "application/json"
            and isinstance(body, dict)
            and body.get("status") == "successful"
            and body.get("message") == f"Hello from Server: {rid}"
            and rid is not None
            and name_for_id(rid, names) in names,
            f"{status} {ctype} {text!r} (replicas {names})",
        )
        seen = {await _home_id(admin, "123456") for _ in range(5)}
        self.check(
            "GET /home?id=123456 ×5: the same replica each time",
            len(seen) == 1 and None not in seen,
            f"{seen}",
        )
        heartbeat = await admin.call("GET", "/heartbeat")
        self.check(
            "GET /heartbeat (passed through to a replica): 200, empty body",
            heartbeat.status == 200 and heartbeat.text == "",
            f"{heartbeat.status} {heartbeat.text!r}",
        )
        self.exact_failure(
            "GET /other: 400 exact '<Error> '/other' endpoint does not exist…'",
            await admin.call("GET", "/other"),
            unknown_path_error("/other"),
        )


async def _home_id(admin: Admin, key: str) -> str | None:
    """The replica id that answers ``GET /home?id=key``; None on any error."""
    try:
        async with admin.session.get(admin.base + "/home", params={"id": key}) as resp:
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return replica_id(body.get("message")) if isinstance(body, dict) else None


async def _poll(admin: Admin, t_kill: float, victim: str) -> Sample:
    try:
        async with admin.session.get(admin.base + "/rep", timeout=POLL_TIMEOUT) as resp:
            body = await resp.json(content_type=None)
        names = body["message"]["replicas"]
        return Sample(time.monotonic() - t_kill, len(names), victim in names)
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return Sample(time.monotonic() - t_kill, None, True)


async def kill_and_time(
    admin: Admin,
    victim: str | None,
    kill_cmd: str | None,
    *,
    poll_s: float = 0.05,
    limit_s: float = 60.0,
    before_s: float = 0.5,
    after_s: float = 1.0,
) -> Recovery:
    """Kill ``victim`` (default: the first replica ``/rep`` lists) and poll ``/rep`` every
    ``poll_s`` until it is gone and N is back, at most ``limit_s``."""
    names = await admin.replicas()
    victim = victim or names[0]
    if victim not in names:
        raise ValueError(f"--victim {victim!r} is not a replica: {names}")
    target = len(names)
    samples: list[Sample] = []
    start = time.monotonic() + before_s
    while time.monotonic() < start:  # a baseline before the kill
        samples.append(await _poll(admin, start, victim))
        await asyncio.sleep(poll_s)
    t_kill = time.monotonic()
    samples = [Sample(s.t + start - t_kill, s.n, s.victim_listed) for s in samples]
    how = await kill_replica(admin, victim, kill_cmd)
    recovered: float | None = None
    gone: float | None = None
    while time.monotonic() - t_kill < limit_s:
        sample = await _poll(admin, t_kill, victim)
        samples.append(sample)
        if gone is None and not sample.victim_listed:
            gone = sample.t
        if recovered is None and not sample.victim_listed and sample.n == target:
            recovered = sample.t
        if recovered is not None and sample.t > recovered + after_s:
            break
        await asyncio.sleep(poll_s)
    now = await admin.replicas()
    new = [x for x in now if x not in names]
    return Recovery(victim, how, target, recovered, gone, new, samples)


async def serves(admin: Admin, replicas: list[str], tries: int = 300) -> bool:
    """Whether keyed ``GET /home`` reaches every one of ``replicas`` within ``tries`` ids."""
    missing = {server_id(x) for x in replicas}
    for i in range(tries):
        if not missing:
            break
        missing.discard(await _home_id(admin, str(100_000 + i)) or "")
    return not missing


async def run_a3(
    url: str,
    *,
    kill_cmd: str | None = None,
    victim: str | None = None,
    limit_s: float = 60.0,
    poll_s: float = 0.05,
) -> A3Result:
    async with aiohttp.ClientSession() as session:
        admin = Admin(session, url)
        checker = Checker(admin)
        await checker.run()
        result = A3Result(admin.base, checker.checks, None)
        try:
            rec = await kill_and_time(admin, victim, kill_cmd, poll_s=poll_s, limit_s=limit_s)
        except (RuntimeError, ValueError) as exc:  # KillError, AdminError, a bad --victim
            result.error = f"{type(exc).__name__}: {exc}"
            return result
        result.recovery = rec
        checker.check(
            f"kill {rec.victim}: gone from /rep and N={rec.target} again within {limit_s:g} s",
            rec.recovery_s is not None,
            f"not recovered; last samples {rec.samples[-3:]}",
        )
        checker.check(
            "a replacement with a new name joined and serves GET /home",
            len(rec.replacement) == 1 and await serves(admin, rec.replacement),
            f"new replicas {rec.replacement}",
        )
    return result


def write_a3(result: A3Result, out: Path) -> list[Path]:
    paths = [output.write_json(out / "a3.json", result.to_json())]
    rec = result.recovery
    if rec is not None:
        took = "not recovered" if rec.recovery_s is None else f"recovered in {rec.recovery_s:.2f} s"
        paths.insert(
            0,
            plots.recovery_timeline(
                out / "a3.png",
                [s.t for s in rec.samples],
                [float("nan") if s.n is None else s.n for s in rec.samples],
                [s.victim_listed for s in rec.samples],
                rec.recovery_s,
                rec.target,
                f"A-3: kill {rec.victim} ({rec.how}); {took}",
            ),
        )
    return paths


def table_a3(result: A3Result) -> str:
    rows = [
        ["PASS" if c.passed else "FAIL", c.name + (f" — {c.detail}" if c.detail else "")]
        for c in result.checks
    ]
    text = output.table(["result", "check"], rows)
    rec = result.recovery
    if result.error:
        text += f"\nkill not done: {result.error}"
    elif rec is not None:
        took = "NOT within the limit" if rec.recovery_s is None else f"{rec.recovery_s:.3f} s"
        gone = "-" if rec.gone_s is None else f"{rec.gone_s:.3f} s"
        text += (
            f"\nkilled {rec.victim} via {rec.how}; out of /rep after {gone}; "
            f"victim gone and N={rec.target} again after {took}; "
            f"replacement {', '.join(rec.replacement) or '-'}; {len(rec.samples)} polls"
        )
    return text
