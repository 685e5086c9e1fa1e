"""The OpenAPI description of the admin API (``balancer.openapi``), kept honest, and the admin API
fuzzed from it.

The spec lists exactly the routes the admin app registers (worker-only ones aside) and every one
of them reaches the admin app from the public port. The fuzz (hypothesis, strategies built from
the spec's schemas; schemathesis is not on the offline package mirror) sends schema-valid,
mutated and arbitrary query strings and bodies to every operation of a running balancer and
requires: no answer ≥ 500 (503 only where the spec documents it), every answer conforms to the
spec (status documented, JSON body valid against its schema), and after every 4xx ``/rep`` and
``/lb/settings`` are byte-for-byte unchanged. Deterministic (``derandomize``), sized for CI.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import io
import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs on the mirror
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balancer.http.client import ADMIN_PREFIXES, WORKER_ONLY, is_admin
from balancer.openapi import INT_LIMITS, PATH, spec
from balancer.store import _INT_LIMITS
from tests.conftest import BalancerFactory

JSON = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
FUZZ_EXAMPLES = 100  # per operation: 16 operations, ~1,600 requests, about 6 s
WORKER_ONLY_PATHS = {p.decode() for p in WORKER_ONLY}


def operations() -> list[tuple[str, str, JSON]]:
    return [
        (path, method, op)
        for path, item in spec()["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def resolve(schema: JSON) -> JSON:
    while "$ref" in schema:
        node: Any = spec()
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


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


# -- strategies from schemas ------------------------------------------------------------------

INITIAL_NAMES = ["Server 1", "Server 2", "Server 3"]
INITIAL_SETTINGS = {"algorithm": "slots", "hash_name": "xxh3", "balance_factor": 0}
KNOWN_NAMES = [*INITIAL_NAMES, "1", "S5", "Server 1 ", "server 1"]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def from_schema(schema: JSON) -> st.SearchStrategy[Any]:
    """Values valid against ``schema`` (the subset of JSON Schema ``balancer.openapi`` uses)."""
    if "$ref" in schema:
        if schema["$ref"].endswith("/Hostname"):  # names that exist now, too
            return st.sampled_from(KNOWN_NAMES[:5]) | from_schema(resolve(schema))
        return from_schema(resolve(schema))
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        base = {k: v for k, v in schema.items() if k != "anyOf"}
        return st.one_of([from_schema({**base, **sub}) for sub in schema["anyOf"]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    build = _BY_TYPE.get(kind)
    return json_values if build is None else build(schema)


def _number(schema: JSON) -> st.SearchStrategy[Any]:
    return st.floats(
        schema.get("minimum"),
        schema.get("exclusiveMaximum", schema.get("maximum")),
        exclude_max="exclusiveMaximum" in schema,
        allow_nan=False,
        allow_infinity=False,
    )


def _string(schema: JSON) -> st.SearchStrategy[Any]:
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    return st.text(max_size=30)


def _array(schema: JSON) -> st.SearchStrategy[Any]:
    return st.lists(
        from_schema(schema.get("items", {})),
        max_size=min(schema.get("maxItems", 4), 4),
        unique_by=(lambda x: json.dumps(x)) if schema.get("uniqueItems") else None,
    )


def _object(schema: JSON) -> st.SearchStrategy[Any]:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: from_schema(v) for k, v in props.items() if k in required},
        optional={k: from_schema(v) for k, v in props.items() if k not in required},
    )


_BY_TYPE: dict[Any, Callable[[JSON], st.SearchStrategy[Any]]] = {
    "integer": lambda s: st.integers(s.get("minimum"), s.get("maximum")),
    "number": _number,
    "string": _string,
    "boolean": lambda _: st.booleans(),
    "null": lambda _: st.none(),
    "array": _array,
    "object": _object,
}


def bodies(schema: JSON) -> st.SearchStrategy[bytes]:
    """Request bodies: schema-valid, mutated (one field of any JSON type), arbitrary JSON, raw
    bytes, and hand-picked ones (strict-JSON violations, unicode, deep, over 64 KiB)."""
    valid = from_schema(schema)
    fields = sorted(resolve(schema).get("properties", {}))
    mutated = st.tuples(valid, st.sampled_from(fields) | st.text(max_size=10), json_values)
    return st.one_of(
        valid.map(lambda v: json.dumps(v).encode()),
        mutated.map(
            lambda t: json.dumps({**t[0], t[1]: t[2]} if isinstance(t[0], dict) else t[0]).encode()
        ),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=64),
        st.sampled_from(
            [
                b"",
                b'{"n": 1, "n": 2}',
                b'{"balance_factor": NaN}',
                b'{"weight": 1e400, "hostname": "Server 1"}',
                b"[" * 60_000,  # deep, under the size limit
                b'{"n": 1, "hostnames": ["\xff"]}',
                '{"n": 1, "hostnames": ["Ｓ１"]}'.encode(),
                b'{"n": 1, "hostnames": ["\\ud800"]}',
                b"\xef\xbb\xbf{}",
                b" " * (64 * 1024) + b"{}",  # over the size limit
            ]
        ),
    )


def queries(op: JSON) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Query strings: each declared parameter absent, schema-valid or arbitrary text; plus
    an occasional undeclared one."""
    parts: list[st.SearchStrategy[list[tuple[str, str]]]] = []
    for param in op.get("parameters", []):
        value = from_schema(param["schema"]).map(str) | st.text(max_size=12)
        parts.append(st.lists(st.tuples(st.just(str(param["name"])), value), max_size=2))
    parts.append(st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=1))
    return st.tuples(*parts).map(lambda lists: [pair for chunk in lists for pair in chunk])


CONTENT_TYPES = [
    None,
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=utf-16",
]


# -- the fuzz ---------------------------------------------------------------------------------


class Http:
    """A keep-alive HTTP/1.1 client for the fuzz thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        for attempt in range(2):
            try:
                self.conn.request(method, target, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.getheader("Content-Type") or "", resp.read()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                self.conn.close()  # the balancer closed an idle keep-alive connection
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def state(self) -> tuple[bytes, bytes]:
        return self.request("GET", "/rep")[2], self.request("GET", "/lb/settings")[2]

    def call(self, method: str, target: str, doc: Any = None) -> Any:
        body = None if doc is None else json.dumps(doc).encode()
        status, _, answer = self.request(method, target, body)
        assert status == 200, (method, target, status, answer)
        return json.loads(answer)["message"]

    def reset(self, names: list[str], ring_settings: JSON) -> None:
        """Back to these replicas and routing settings, so each operation starts alike."""
        current = self.call("GET", "/rep")["replicas"]
        extra = [n for n in current if n not in names]
        if extra:
            self.call("DELETE", "/rm", {"n": len(extra), "hostnames": extra})
        missing = [n for n in names if n not in current]
        if missing:
            self.call("POST", "/add", {"n": len(missing), "hostnames": missing})
        for name in names:
            self.call("PUT", "/lb/weight", {"hostname": name, "weight": 1})
        self.call("PUT", "/lb/settings", ring_settings)


def check_answer(path: str, method: str, op: JSON, status: int, ctype: str, body: bytes) -> None:
    where = f"{method.upper()} {path} → {status} {body[:300]!r}"
    assert status < 500 or (status == 503 and "503" in op["responses"]), where
    answer = op["responses"].get(str(status))
    if answer is None:  # 404/405 from the admin app for what the operation did not declare
        assert status in (404, 405), where
        answer = {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        }
    media, schema = next(iter(answer["content"].items()))
    assert ctype.split(";")[0].strip() == media, where
    if media == "application/json":
        validator = jsonschema.Draft202012Validator({**schema, "components": spec()["components"]})
        errors = [e.message for e in validator.iter_errors(json.loads(body))]
        assert not errors, (where, errors)


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


def _wrong_methods() -> Iterator[tuple[str, str]]:
    for path, item in spec()["paths"].items():
        for method in ("GET", "PUT", "POST", "DELETE", "PATCH"):
            if method.lower() not in item:
                yield path, method


async def test_every_other_method_is_a_clean_4xx(make_balancer: BalancerFactory) -> None:
    """Other methods on /lb/ paths: the admin app's 405 in the error shape, with Allow. On the
    contract's paths they are not admin routes: the replicas answer (the contract's 400 for a
    path they do not serve). Nothing changes either way."""
    lb = await make_balancer(replicas=1)
    before = (await (await lb.client.get("/rep")).read(), await lb.names())
    for path, method in _wrong_methods():
        async with lb.client.request(method, path, data=b'{"n": 1}') as resp:
            assert 400 <= resp.status < 500, (method, path, resp.status)
            if path.startswith("/lb/"):
                assert resp.status == 405 and resp.headers["Allow"], (method, path)
                body = await resp.json()
                assert body["status"] == "failure" and body["message"].startswith("<Error> ")
    assert (await (await lb.client.get("/rep")).read(), await lb.names()) == before


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
        assert "rendezvous is simulated for at most 64 replicas" in (await resp.json())["message"]
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
