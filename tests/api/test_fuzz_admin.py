"""The OpenAPI description of the admin API (``balancer.api.openapi``), kept honest, and the
admin API fuzzed from it.

The spec lists exactly the routes the admin app registers (worker-only ones aside) and every one
of them reaches the admin app from the public port; its schemas accept what the server accepts
and nothing it refuses for a reason a schema can state. The fuzz (hypothesis, strategies built
from the spec's schemas in ``tests.api.openapi_fuzz``; ``test_schemathesis.py`` runs
schemathesis too) sends schema-valid, mutated and arbitrary query strings and bodies to every
operation of a running balancer and requires: no answer ≥ 500 (503 only where the spec
documents it), every answer conforms to the spec (status documented, JSON body valid against its
schema), and after every 4xx ``/rep`` and ``/lb/settings`` are byte-for-byte unchanged.
Deterministic (``derandomize``), sized for CI.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs on the mirror
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.api.admin import GUARDED
from balancer.api.openapi import HOSTNAME_PATTERN, INT_LIMITS, PATH, spec
from balancer.http.request_head import ADMIN_PREFIXES, WORKER_ONLY, is_admin
from balancer.names import is_valid_name
from balancer.state.codec import _INT_LIMITS
from tests.api.openapi_fuzz import (
    CONTENT_TYPES,
    INITIAL_NAMES,
    INITIAL_SETTINGS,
    JSON,
    Http,
    bodies,
    check_answer,
    operations,
    queries,
    resolve,
)
from tests.conftest import BalancerFactory

FUZZ_EXAMPLES = 100  # per operation: 16 operations, ~1,600 requests, about 6 s
WORKER_ONLY_PATHS = {p.decode() for p in WORKER_ONLY}


# -- the spec itself --------------------------------------------------------------------------


async def test_every_admin_route_is_described_and_reachable(
    make_balancer: BalancerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps: list[web.Application] = []

    class Recording(web.AppRunner):
        def __init__(self, app: web.Application, **kwargs: Any) -> None:
            apps.append(app)
            super().__init__(app, **kwargs)

    monkeypatch.setattr(web, "AppRunner", Recording)
    lb = await make_balancer(replicas=1)
    admin_app = next(app for app in apps if any(r.method == "PUT" for r in app.router.routes()))
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in admin_app.router.routes()
        if route.method != "HEAD" and route.resource is not None  # HEAD: GET's twin
    }
    described = {(path, method) for path, method, _ in operations()}
    assert registered - {(p, m) for p, m in registered if p in WORKER_ONLY_PATHS} == described
    for path, method in described:  # every described route reaches the admin app
        raw_path, raw_method = path.encode(), method.upper().encode()
        assert raw_path.startswith(ADMIN_PREFIXES) and is_admin(raw_path, raw_method), path
    async with lb.client.get(PATH) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == json.loads(json.dumps(spec()))


def test_spec_is_openapi_31_with_valid_schemas() -> None:
    doc = spec()
    assert doc["openapi"].startswith("3.1")
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    for path, method, op in operations():
        assert op["responses"], (path, method)
        for status, answer in op["responses"].items():
            assert status.isdigit(), (path, method, status)
            for media in answer.get("content", {}).values():
                jsonschema.Draft202012Validator.check_schema(media["schema"])
                resolve(media["schema"])  # every $ref resolves
        for param in op.get("parameters", []):
            jsonschema.Draft202012Validator.check_schema(param["schema"])
    assert INT_LIMITS == _INT_LIMITS  # the limits settings_from_json enforces
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(set(ids)) == len(ids)
    for path, method, op in operations():  # links name operations that exist
        for answer in op["responses"].values():
            for link in answer.get("links", {}).values():
                assert link["operationId"] in ids, (path, method, link)


# -- the spec agrees with the server ----------------------------------------------------------


async def test_the_served_document_says_whether_changes_need_the_token(
    make_balancer: BalancerFactory,
) -> None:
    for token in ("", "t0ken"):
        lb = await make_balancer(replicas=1, admin_token=token)
        async with lb.client.get(PATH) as resp:
            served = await resp.json()
        assert served == json.loads(json.dumps(spec(admin_token=bool(token))))
        for path, method, _ in operations():
            secured = bool(token) and (method.upper(), path) in GUARDED
            document = served["paths"][path][method]
            assert ("security" in document, "401" in document["responses"]) == (secured, secured)


async def test_a_whole_number_is_an_integer_however_it_is_written(
    make_balancer: BalancerFactory,
) -> None:
    """JSON Schema's ``integer`` (the document's) is a value: 2916.0 and 1.4e14 are integers."""
    lb = await make_balancer(replicas=1, max_replicas=3)
    for method, target, body, status, message in [
        ("PUT", "/lb/settings", b'{"vnodes": 2916.0, "points_per_weight": 1.6e2}', 200, ""),
        ("PUT", "/lb/settings", b'{"hash_seed": 12345678901234567890.0}', 200, ""),
        ("PUT", "/lb/weight", b'{"hostname": "Server 1", "weight": 2.0}', 200, ""),
        ("POST", "/add", b'{"n": 1.0, "hostnames": ["S7"]}', 200, ""),
        ("DELETE", "/rm", b'{"n": 1e0, "hostnames": ["S7"]}', 200, ""),
        ("POST", "/add", b'{"n": 1.4e14}', 400, "Adding 140000000000000 instances would exceed"),
        ("POST", "/add", b'{"n": 1.5}', 400, "'n' must be a positive integer"),
        ("PUT", "/lb/settings", b'{"vnodes": 9.5}', 400, "'vnodes' must be an integer in 1.."),
        ("PUT", "/lb/weight", b'{"hostname": "Server 1", "weight": true}', 400, "'weight' must"),
    ]:
        async with lb.client.request(method, target, data=body) as resp:
            answer = await resp.json()
        assert resp.status == status, (body, answer)
        if message:
            assert answer["message"].startswith(f"<Error> {message}"), (body, answer)
    async with lb.client.get("/lb/settings") as resp:
        shown = (await resp.json())["message"]["settings"]
    assert (shown["vnodes"], shown["points_per_weight"]) == (2916, 160)
    assert shown["hash_seed"] == 12345678901234567890  # the written value, not a float's


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(
    st.from_regex(HOSTNAME_PATTERN)  # anchored, yet Python's "$" took a final "\n" too
    | st.text(max_size=12)
    | st.sampled_from(["S5\n", "Server 1\n", "Server  1", "\nS5", "s" * 64, "Server " + "s" * 63])
)
def test_the_hostname_pattern_is_the_servers_rule(name: str) -> None:
    schema = resolve({"$ref": "#/components/schemas/Hostname"})
    assert jsonschema.Draft202012Validator(schema).is_valid(name) == is_valid_name(name), name


async def test_a_body_is_required_where_an_empty_one_is_refused(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=1)
    for path, method, op in operations():
        if "requestBody" in op:
            async with lb.client.request(method, path, data=b"") as resp:
                assert op["requestBody"]["required"] == (resp.status == 400), (method, path)


def fuzz_operation(
    port: int, path: str, method: str, op: JSON, examples: int
) -> collections.Counter[int]:
    """Run the fuzz of one operation (in a thread); how many answers of each status."""
    client = Http(port)
    client.reset(INITIAL_NAMES, INITIAL_SETTINGS)
    seen: collections.Counter[int] = collections.Counter()
    body_schema = None
    if "requestBody" in op:
        body_schema = next(iter(op["requestBody"]["content"].values()))["schema"]
    body_strategy = bodies(body_schema) if body_schema is not None else st.none()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(queries(op), body_strategy, st.sampled_from(CONTENT_TYPES))
    def one(query: list[tuple[str, str]], body: bytes | None, ctype: str | None) -> None:
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": ctype} if ctype and body is not None else {}
        before = client.state()
        status, got_type, answer = client.request(method.upper(), target, body, headers)
        seen[status] += 1
        check_answer(path, method, op, status, got_type, answer)
        if 400 <= status < 500:
            assert client.state() == before, f"{method.upper()} {target} {body!r:.200} → {status}"

    try:
        one()
    finally:
        client.conn.close()
    return seen


@pytest.mark.timeout(300)
async def test_fuzz_admin_api_from_its_spec(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(
        replicas=3,
        max_replicas=6,  # /add succeeds a few times, then is refused: bounded work
        # Slow heartbeats: under fuzz load no replica may be replaced (that changes /rep).
        heartbeat_interval_s=1.0,
        heartbeat_timeout_s=2.0,
        heartbeat_fails=5,
    )
    started = time.monotonic()
    sent = 0
    for path, method, op in operations():
        seen = await asyncio.to_thread(
            fuzz_operation, lb.service.port, path, method, op, FUZZ_EXAMPLES
        )
        sent += seen.total()
        print(f"  {method.upper()} {path}: {dict(sorted(seen.items()))}")
    took = time.monotonic() - started
    print(f"admin fuzz: {sent} requests over {len(operations())} operations in {took:.1f}s")
    async with lb.client.get("/rep") as resp:  # still serving
        assert resp.status == 200


# -- methods a path does not list ------------------------------------------------------------

# The contract's GET /<path> row: GET of a path it does not define for GET goes to a replica.
FORWARDED_GET = {("/add", "GET"), ("/add", "HEAD"), ("/rm", "GET"), ("/rm", "HEAD")}


def contract_400(path: str) -> bytes:
    """SPEC's answer for a GET of a path no replica serves."""
    message = f"<Error> '{path}' endpoint does not exist in server replicas"
    return json.dumps({"message": message, "status": "failure"}).encode()


def _unlisted(path: str) -> Iterator[tuple[str, str]]:
    """(method, the Allow header) for each method ``path`` does not list."""
    item = spec()["paths"][path]
    listed = {m.upper() for m in item} | ({"HEAD"} if "get" in item else set())
    for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        if method not in listed and (path, method) not in FORWARDED_GET:
            yield method, ", ".join(sorted(listed))


@pytest.mark.parametrize("path", list(spec()["paths"]))
async def test_a_method_the_path_does_not_list_is_405_with_allow(
    make_balancer: BalancerFactory, path: str
) -> None:
    """The admin app's 405 in the contract's error shape, with Allow listing what the path
    serves (schemathesis' unsupported_method check). Nothing changes."""
    lb = await make_balancer(replicas=1)
    before = (await (await lb.client.get("/rep")).read(), await lb.names())
    for method, allow in _unlisted(path):
        async with lb.client.request(method, path, data=b'{"n": 1}') as resp:
            assert (resp.status, resp.headers.get("Allow")) == (405, allow), (method, path)
            assert resp.content_type == "application/json", (method, path)
            if method != "HEAD":
                message = f"<Error> '{method}' is not allowed on '{path}'; allowed: {allow}"
                assert await resp.json() == {"message": message, "status": "failure"}
    assert (await (await lb.client.get("/rep")).read(), await lb.names()) == before


async def test_get_of_add_and_rm_is_the_contracts_get_of_a_path(
    make_balancer: BalancerFactory,
) -> None:
    """SPEC's GET /<path>: forwarded to a replica, which serves no /add: the exact 400."""
    lb = await make_balancer(replicas=1)
    for path, method in sorted(FORWARDED_GET):
        async with lb.client.request(method, path) as resp:
            body = await resp.read()
        assert resp.status == 400 and "Allow" not in resp.headers, (method, path)
        assert body == (b"" if method == "HEAD" else contract_400(path)), body
    assert await lb.names() == ["Server 1"]


# -- hand-written bad input -------------------------------------------------------------------

NESTED = b'{"n": 1, "hostnames": ' + b"[" * 40 + b"]" * 40 + b"}"
BAD_INPUT = [
    ("POST", "/add", b"[" * 60_000, 400, "Request body is nested too deeply (more than 32 levels)"),
    ("POST", "/add", NESTED, 400, "Request body is nested too deeply (more than 32 levels)"),
    ("POST", "/add", b'{"n": 1, "n": 2}', 400, "Request body is not valid JSON: duplicate key 'n'"),
    (
        "DELETE",
        "/rm",
        b'{"n": 1, "n": 1}',
        400,
        "Request body is not valid JSON: duplicate key 'n'",
    ),
    (
        "PUT",
        "/lb/settings",
        b'{"balance_factor": NaN}',
        400,
        "Request body is not valid JSON: NaN is not a JSON number",
    ),
    (
        "PUT",
        "/lb/settings",
        b'{"balance_factor": -Infinity}',
        400,
        "Request body is not valid JSON: -Infinity is not a JSON number",
    ),
    (
        "PUT",
        "/lb/weight",
        b'{"hostname": "Server 1", "weight": 1e400}',
        400,
        "Request body is not valid JSON: number out of range: '1e400'",
    ),
    ("POST", "/add", b" " * 70_000 + b"{}", 413, "Request body is larger than 65536 bytes"),
    ("PUT", "/lb/weight", b"x" * 2_000_000, 413, "Request body is larger than 65536 bytes"),
    ("POST", "/add", '{"n": 1, "hostnames": ["Ｓ１"]}'.encode(), 400, "Invalid hostname(s): "),
    ("POST", "/add", b'{"n": 1, "hostnames": ["\\ud800"]}', 400, "Invalid hostname(s): "),
    ("POST", "/add", b'{"n": 1, "hostnames": ["\xff"]}', 400, "Request body is not valid JSON"),
    ("POST", "/add", b"--x\r\n\r\n--x--", 400, "Request body is not valid JSON"),
    ("GET", "/lb/nope", None, 404, "No admin endpoint '/lb/nope'"),
    ("DELETE", "/lb/settings", None, 405, "'DELETE' is not allowed on '/lb/settings'"),
    ("GET", "/lb/events?limit=" + "1" * 5000, None, 400, "'limit' must be an integer in 1..200"),
    ("GET", "/lb/events?limit=%D9%A3", None, 400, "'limit' must be an integer in 1..200"),  # ٣
    ("GET", "/lb/events?limit=+5", None, 400, "'limit' must be an integer in 1..200"),
    ("PUT", "/lb/settings", b'{"hash_name": {}}', 400, "'hash_name' must be one of"),
    ("PUT", "/lb/settings", b"\t", 400, "Request body is not valid JSON"),  # no body: {}
    (
        "PUT",
        "/lb/settings",
        b'{"algorithm": "assignment", "slots": 1048576, "vnodes": 1048576}',
        400,
        "Settings refused: 3145728 virtual servers",
    ),
    (
        "PUT",
        "/lb/settings",
        b'{"algorithm": "ring", "points_per_weight": 10000}',
        200,
        "",
    ),
    ("PUT", "/lb/weight", b'{"hostname": "Server 1", "weight": 1000}', 400, "Weight refused: "),
]


async def test_bad_admin_input_is_a_clean_4xx_and_changes_nothing(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer()
    for method, target, body, status, message in BAD_INPUT:
        before = [await (await lb.client.get(p)).read() for p in ("/rep", "/lb/settings")]
        data = io.BytesIO(body) if body and len(body) > 1 << 20 else body
        async with lb.client.request(method, target, data=data) as resp:
            answer = await resp.json()
            assert (resp.status, resp.content_type) == (status, "application/json"), target
        if status == 200:
            continue
        assert answer["status"] == "failure", (target, answer)
        assert answer["message"].startswith(f"<Error> {message}"), (target, answer)
        after = [await (await lb.client.get(p)).read() for p in ("/rep", "/lb/settings")]
        assert after == before, (method, target)
    assert lb.runtime.stopped == [] and len(lb.runtime.spawned) == 3


async def test_a_chunked_body_over_the_limit_is_413(make_balancer: BalancerFactory) -> None:
    lb = await make_balancer(replicas=1)

    async def chunks() -> Any:
        for _ in range(20):
            yield b" " * 8192

    async with lb.client.post("/add", data=chunks()) as resp:
        assert resp.status == 413
        assert (await resp.json())["message"] == "<Error> Request body is larger than 65536 bytes"
    assert await lb.names() == ["Server 1"]


async def test_a_json_body_is_read_whatever_its_content_type(
    make_balancer: BalancerFactory,
) -> None:
    """The contract's clients send JSON as curl -d does (form-urlencoded), or with no type."""
    lb = await make_balancer(replicas=1)
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "application/json"):
        async with lb.client.put(
            "/lb/weight",
            data=b'{"hostname": "Server 1", "weight": 2}',
            headers={"Content-Type": ctype},
        ) as resp:
            assert resp.status == 200, ctype


async def test_worker_only_routes_are_not_reachable_in_any_spelling(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=1, hash_name="siphash", hash_seed=12345678901234567890)
    for target in ("/lb/%6Dembership", "/lb/membership#x", "/lb/worker-stat%73?id=x"):
        async with lb.client.request("GET", target) as resp:
            text = await resp.text()
        assert resp.status == 400 and "endpoint does not exist in server replicas" in text, target
        assert "12345678901234567890" not in text
    async with lb.client.post("/lb/worker-stat%73?id=x", data=b"{}") as resp:
        assert resp.status == 400
    assert "x" not in lb.service.stats.remote


async def test_costly_simulations_are_refused_and_huge_keys_routed(
    make_balancer: BalancerFactory,
) -> None:
    lb = await make_balancer(replicas=1, algorithm="rendezvous")
    async with lb.client.get("/lb/simulate?add=1000") as resp:
        assert resp.status == 400
        assert "max_replicas=64" in (await resp.json())["message"]
    # A decimal key too long for int() is hashed like any other key (in the assignment scheme
    # a short decimal key is its own request id): looked up and routed alike, no error.
    lb = await make_balancer(replicas=1, algorithm="assignment")
    key = "1" * 5000
    async with lb.client.get("/lb/lookup", params={"key": key}) as resp:
        assert resp.status == 200
        owner = (await resp.json())["message"]["owner"]
    async with lb.client.get("/home", params={"id": key}) as resp:
        assert resp.status == 200
        assert f"Server {(await resp.json())['message'].split()[-1]}" == owner
