"""What the admin API fuzz (``test_fuzz_admin.py``) is built from: the operations of the OpenAPI
document (``balancer.api.openapi``), hypothesis strategies for the JSON Schema subset it uses,
request bodies and query strings (valid, mutated, arbitrary), a keep-alive HTTP client for the
fuzz thread, and the check that an answer conforms to the document.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs on the mirror
from hypothesis import strategies as st

from balancer.api.openapi import spec

JSON = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


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
    """Values valid against ``schema`` (the subset of JSON Schema ``balancer.api.openapi`` uses)."""
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
