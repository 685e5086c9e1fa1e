"""schemathesis against the live admin API of a balancer, once without an admin token and once
with one (an authorized client), each from the document the balancer serves at
``/lb/openapi.json`` in that mode (``spec()``; ``test_fuzz_admin.py`` checks the two are the
same). The schema is loaded from the dict at import, with ``schemathesis.pytest.from_fixture``
out of reach: schemathesis 4.32 sets ``request.node._nodeid``, which pytest 9 no longer has.

The stateless run takes every phase (the spec's examples, coverage: boundary values, every
method a path does not list, missing and malformed parts; fuzzing) and every check, with two
documented exceptions:

- ``positive_data_acceptance`` is replaced by ``refused_only_for_reasons_a_schema_cannot_say``:
  the contract answers 400 for requests no schema can tell from good ones (an unknown or taken
  name, more names than ``n``, more replicas than exist or may run, a ring too costly to
  build), so a schema-valid request may be refused for exactly those reasons and no other.
- GET of ``/add`` and ``/rm`` is not an unexpected method: the contract's ``GET /<path>``
  forwards it to a replica (``test_fuzz_admin.py`` pins that answer).

The stateful run follows the document's links (``/add`` → ``/rep`` → ``/rm`` → ``/add``, and
``/lb/weight`` on a listed replica) with the same checks. Deterministic (``derandomize``, fixed
seed); sized to run in well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvloop
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, Response
from schemathesis.config import SchemathesisConfig

from balancer.api.openapi import spec
from balancer.app import BalancerService
from balancer.config import Settings
from balancer.state.memory import InMemoryStore
from balancer.wire import ADD_TOO_MANY_NAMES, RM_TOO_MANY_NAMES
from tests.support.runtime import InProcessRuntime

TOKEN = "st-Token_7"
MAX_EXAMPLES = 15  # per operation and phase
STATEFUL_EXAMPLES = 8  # scenarios
STATEFUL_STEPS = 8  # at most, per scenario
# What a schema-valid request may be refused for (400): the state it meets, or a rule between
# its fields that JSON Schema cannot state. Matched against the message after "<Error> ".
SCHEMA_CANNOT_SAY = [
    re.escape(ADD_TOO_MANY_NAMES),  # len(hostnames) > n
    re.escape(RM_TOO_MANY_NAMES),
    r"Duplicate hostname\(s\) in request",  # "Server 5" and "5" are one server id
    r"Adding \d+ instances would exceed the limit",  # --max-replicas, and how many run
    r"Cannot remove \d+ instances: only \d+ replicas exist",
    r"Unknown replica hostname",
    r"Replica hostname\(s\) already in use",
    r"Settings refused: ",  # ring cost; a keyed hash needs a secret seed
    r"Weight refused: ",  # ring cost
    r"'hash_seed' must be an integer in \[0, 2\*\*64\) for",  # the hash in force decides
    r"Not simulated: ",  # /lb/simulate: the ring after the change would cost too much
    r"give at least one of add=",  # /lb/simulate: at least one of three query parameters
    r"'weight' takes <name>:<weight> of a current replica",  # /lb/simulate
]
_REFUSAL = re.compile("<Error> (?:" + "|".join(SCHEMA_CANNOT_SAY) + ")")


@schemathesis.check
def refused_only_for_reasons_a_schema_cannot_say(
    ctx: CheckContext, response: Response, case: Case[Any]
) -> bool | None:
    """positive_data_acceptance, less the refusals ``SCHEMA_CANNOT_SAY`` lists."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if response.status_code == 400:
        message = response.json().get("message", "")
        assert _REFUSAL.match(message), f"a schema-valid request was refused: {message}"
    return None


# -- a balancer on its own event loop, for schemathesis' synchronous client -------------------


class LiveBalancer:
    """A whole balancer (in-process replicas) on a uvloop in a thread."""

    def __init__(self, **overrides: Any) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings_ = Settings.from_flat(
            port=0,
            replicas=3,
            max_replicas=6,  # /add succeeds a few times, then is refused: bounded work
            heartbeat_interval_s=0.2,
            heartbeat_timeout_s=1.0,
            heartbeat_fails=5,
            **overrides,
        )

        async def build() -> BalancerService:  # in its loop: it opens sessions and sockets there
            return BalancerService(settings_, store=InMemoryStore(), runtime=InProcessRuntime())

        self.service = self._run(build())
        try:
            self._run(self.service.start())
        except BaseException:
            self._end_loop()
            raise
        self.url = f"http://127.0.0.1:{self.service.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def __enter__(self) -> LiveBalancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        try:
            self._run(self.service.stop())
            self._run(_cancel_the_rest())  # e.g. replicas' handlers of keep-alive connections
        finally:
            self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _cancel_the_rest() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _operation(path: str) -> dict[str, Any]:
    """The exceptions for one path (none for most)."""
    section: dict[str, Any] = {"include-path": path}
    if path in ("/add", "/rm"):  # GET is the contract's GET /<path>, not an unexpected method
        unexpected = ["put", "delete", "patch", "trace", "options", "query"]
        section["phases"] = {"coverage": {"unexpected-methods": unexpected}}
    return section


def config(*, token: str = "") -> SchemathesisConfig:
    """What ``schemathesis.toml`` would say for this run."""
    generation = {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"}
    doc: dict[str, Any] = {
        "seed": 20261203,
        "suppress-health-check": ["all"],
        "generation": generation,
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            # 503 where the document says when (no replica to look a key up on, the shared
            # store unreachable); status_code_conformance holds every operation to it.
            "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
        },
        "phases": {
            "stateful": {
                "max-steps": STATEFUL_STEPS,
                "generation": {**generation, "max-examples": STATEFUL_EXAMPLES},
            }
        },
        "operations": [section for path in spec()["paths"] if len(section := _operation(path)) > 1],
    }
    if token:
        doc["auth"] = {"openapi": {"adminToken": {"bearer": token}}}
    return SchemathesisConfig.from_dict(doc)


# The documents the balancer serves at /lb/openapi.json, without and with an admin token
# (test_fuzz_admin.py checks that it serves exactly these), as copies: schemathesis changes the
# dict it is given, and spec() hands out the one the server serves.
OPEN = schemathesis.openapi.from_dict(copy.deepcopy(spec()), config=config())
SECURED = schemathesis.openapi.from_dict(
    copy.deepcopy(spec(admin_token=True)), config=config(token=TOKEN)
)


@pytest.fixture(scope="module")
def open_url() -> Iterator[str]:
    with LiveBalancer() as lb:
        yield lb.url


@pytest.fixture(scope="module")
def token_url() -> Iterator[str]:
    with LiveBalancer(admin_token=TOKEN) as lb:
        yield lb.url


@OPEN.parametrize()
def test_admin_api_without_a_token(case: Case[Any], open_url: str) -> None:
    case.call_and_validate(base_url=open_url)


@SECURED.parametrize()
def test_admin_api_with_a_token(case: Case[Any], token_url: str) -> None:
    case.call_and_validate(base_url=token_url)


def _stateful(api: schemathesis.BaseSchema, url: str) -> None:
    """Run the state machine; the changes must have been made, not only refused."""
    answers: collections.Counter[str] = collections.Counter()

    class Machine(api.as_state_machine()):  # type: ignore[misc]  # a class built at run time
        def get_call_kwargs(self, case: Case[Any]) -> dict[str, Any]:
            return {"base_url": url}

        def after_call(self, response: Response, case: Case[Any]) -> None:
            super().after_call(response, case)
            answers[f"{case.method} {case.path} {response.status_code}"] += 1

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=STATEFUL_STEPS,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    print(dict(sorted(answers.items())))
    # The links were followed and the changes made (with the token, when there is one).
    for change in ("POST /add", "DELETE /rm", "PUT /lb/weight"):
        assert answers[f"{change} 200"], (change, answers)


# Each on a balancer of its own: the stateless runs leave any settings and replicas behind.


def test_admin_api_stateful_without_a_token() -> None:
    with LiveBalancer() as lb:
        _stateful(OPEN, lb.url)


def test_admin_api_stateful_with_a_token() -> None:
    with LiveBalancer(admin_token=TOKEN) as lb:
        _stateful(SECURED, lb.url)
