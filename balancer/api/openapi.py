"""The OpenAPI 3.1 description of the admin API, served at ``GET /lb/openapi.json``.

Owns ``spec()`` (the document, a dict built once) and ``routes()``. It describes what the public
port answers on the admin paths: the contract's ``/rep``, ``/add``, ``/rm`` with their exact
bodies, and the operator endpoints under ``/lb/``, ``/metrics`` and ``/ui``, with request bodies,
query parameters and every answer, errors included (always ``{"message": "<Error> …", "status":
"failure"}``). Limits come from the modules that enforce them. ``tests/api/test_fuzz_admin.py``
keeps it honest: every route the admin app registers is described (worker-only routes aside),
and fuzzed answers must conform. Pure apart from the handler.
Must not import: redis, docker.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from aiohttp import web

from balancer.api.admin import ADMIN_TOKEN_SET, GUARDED
from balancer.api.admin_input import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_WEIGHT
from balancer.api.routing import MAX_CANDIDATES, MAX_SIMULATED_ADDS
from balancer.api.ui import MAX_BINS
from balancer.control.movement_log import KEEP_EVENTS
from balancer.hashing import ALGORITHMS, HASH_NAMES, PROBINGS, RingSettings
from balancer.hashing.arcs import DEFAULT_BINS
from balancer.wire import ADD_TOO_MANY_NAMES, CONTENT_TYPE, RM_TOO_MANY_NAMES

PATH = "/lb/openapi.json"
# balancer.names' rule. The end is "(?![\s\S])", not "$": in Python's re (the jsonschema package,
# hypothesis' from_regex) "$" also matches before a final newline, and "S5\n" is no hostname.
HOSTNAME_PATTERN = r"^(Server )?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(?![\s\S])"
# RingSettings fields with integer limits (balancer.state.codec.settings_from_json enforces them).
INT_LIMITS = {"points_per_weight": (1, 10_000), "slots": (1, 1 << 20), "vnodes": (1, 1 << 20)}
MAX_SEED = 2**128 - 1  # siphash's key; the other hashes take seeds below 2**64

JSON = dict[str, Any]


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON, description: str) -> JSON:
    return {"description": description, "content": {CONTENT_TYPE: {"schema": schema}}}


def _ok(message: JSON, description: str = "Success") -> JSON:
    """A success answer ``{"message": …, "status": "successful"}``."""
    return _json(
        {
            "type": "object",
            "required": ["message", "status"],
            "properties": {"message": message, "status": {"const": "successful"}},
            "additionalProperties": False,
        },
        description,
    )


def _error(description: str) -> JSON:
    return _json(_ref("Error"), description)


def _int(low: int, high: int | None = None, **extra: Any) -> JSON:
    schema: JSON = {"type": "integer", "minimum": low, **extra}
    if high is not None:
        schema["maximum"] = high
    return schema


def _query(name: str, schema: JSON, description: str, *, required: bool = False) -> JSON:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def _body(schema: JSON, description: str, *, required: bool) -> JSON:
    """``required``: the server refuses an empty body (read as ``{}``)."""
    # Any content type is read as JSON (curl -d sends application/x-www-form-urlencoded).
    return {
        "required": required,
        "description": description,
        "content": {CONTENT_TYPE: {"schema": schema}},
    }


_BAD = _error(
    "The request is invalid; nothing changed. The body must be one strict JSON object (no "
    f"duplicate keys, no NaN/Infinity, at most {MAX_JSON_DEPTH} levels deep)."
)
_TOO_LARGE = _error(f"The request body is larger than {MAX_BODY_BYTES} bytes; nothing changed.")
_UNAUTHORIZED = {
    **_error(
        "The balancer runs with an admin token (--admin-token / LB_ADMIN_TOKEN) and the request "
        "carries none or a wrong one; nothing changed."
    ),
    "headers": {
        "WWW-Authenticate": {"schema": {"const": "Bearer"}, "description": "Always Bearer."}
    },
}
_DISCOVERED = _error(
    "The replicas are discovered (--runtime dns): another system runs them, and the message "
    "names it (e.g. the DNS name); add or remove replicas there. Nothing changed."
)
_UNAVAILABLE = _error(
    "The change cannot be made now (shared store unreachable, no leader, a replica failed to "
    "start); nothing changed unless the message says it may still be applied."
)


def _change(summary: str, description: str, body: JSON, success: JSON) -> JSON:
    """A state-changing operation (``spec`` adds the admin token's requirement and its 401 when
    the balancer runs with one)."""
    return {
        "summary": summary,
        "description": description,
        "requestBody": body,
        "responses": {"200": success, "400": _BAD, "413": _TOO_LARGE, "503": _UNAVAILABLE},
    }


def _read(
    summary: str, description: str, responses: JSON, parameters: list[JSON] | None = None
) -> JSON:
    op: JSON = {"summary": summary, "description": description, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    return op


def _closed(properties: JSON, optional: JSON | None = None) -> JSON:
    """An object the server always builds whole: every property, the ``optional`` ones where
    they apply, nothing else."""
    return {
        "type": "object",
        "required": list(properties),
        "properties": {**properties, **(optional or {})},
        "additionalProperties": False,
    }


def _schemas() -> JSON:
    share = {"type": "number", "minimum": 0, "maximum": 1}
    settings_props: JSON = {
        "algorithm": {"enum": list(ALGORITHMS)},
        "hash_name": {"enum": list(HASH_NAMES)},
        "probing": {"enum": list(PROBINGS)},
        **{name: _int(low, high) for name, (low, high) in INT_LIMITS.items()},
        "balance_factor": {
            "type": "number",
            "anyOf": [{"const": 0}, {"minimum": 1, "exclusiveMaximum": 100}],
            "description": "Bounded loads: 0 = off, else c in [1, 100).",
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["message", "status"],
            "properties": {
                "message": {"type": "string", "pattern": "^<Error> "},
                "status": {"const": "failure"},
            },
            "additionalProperties": False,
        },
        "Hostname": {
            "type": "string",
            "pattern": HOSTNAME_PATTERN,
            "description": "A replica name: 'Server <token>' or one hostname-like token.",
        },
        "Replicas": {
            "type": "object",
            "required": ["N", "replicas"],
            "properties": {
                "N": _int(0),
                "replicas": {"type": "array", "items": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "Change": {
            "type": "object",
            "required": ["n"],
            "properties": {
                "n": _int(1),
                "hostnames": {
                    "type": ["array", "null"],
                    "items": _ref("Hostname"),
                    "uniqueItems": True,
                    "description": "At most n names, no two with the same server id ('Server 5' "
                    "and '5' are the same replica); the rest are chosen by the balancer. Absent, "
                    "null or [] all mean none.",
                },
            },
            "description": "Other fields are ignored. n is a JSON number: 2.0 is the integer 2.",
        },
        "RingSettings": {
            "type": "object",
            "required": [f.name for f in dataclasses.fields(RingSettings)],
            "properties": {
                **settings_props,
                "hash_seed": {
                    "anyOf": [_int(0, MAX_SEED), {"const": "(secret)"}],
                    "description": "'(secret)' for the keyed hashes (siphash, blake2b).",
                },
            },
            "additionalProperties": False,
        },
        "SettingsChange": {
            "type": "object",
            "properties": {**settings_props, "hash_seed": _int(0, MAX_SEED)},
            "additionalProperties": False,
            "description": "Only the fields to change. hash_seed must be below 2**64 (2**128 "
            "for siphash), given as a JSON number: 2916.0 is the integer 2916. A keyed hash "
            "(siphash, blake2b) runs only on a secret seed: a switch to one from xxh3 must send "
            "a random hash_seed (not the default), else 400; a switch back to xxh3 without one "
            "goes back to the default seed.",
        },
        "WeightChange": {
            "type": "object",
            "required": ["hostname", "weight"],
            "properties": {"hostname": _ref("Hostname"), "weight": _int(0, MAX_WEIGHT)},
            "description": "Other fields are ignored.",
        },
        "Settings": {
            "type": "object",
            "required": ["epoch", "settings"],
            "properties": {
                "epoch": _int(0),
                "shared": {
                    "type": "boolean",
                    "description": "GET only: whether the settings come from the shared store.",
                },
                "settings": _ref("RingSettings"),
            },
            "additionalProperties": False,
        },
        "Weights": {
            "type": "object",
            "required": ["epoch", "weights"],
            "properties": {
                "epoch": _int(0),
                "weights": {"type": "object", "additionalProperties": _int(0, MAX_WEIGHT)},
            },
        },
        "Status": _closed(
            {
                "instance": {"type": "string"},
                "leader": {"type": "boolean"},
                "store": {"enum": ["ok", "unavailable"]},
                "epoch": _int(0),
                "fingerprint": {"type": "string"},
                "target": {"type": ["integer", "null"]},
                "algorithm": {"enum": list(ALGORITHMS)},
                "settings": _ref("RingSettings"),
                "shared_settings": {"type": "boolean"},
                "replicas": {
                    "type": "array",
                    "items": _closed(
                        {
                            "name": {"type": "string"},
                            "server_id": {"type": "string"},
                            "index": _int(0),
                            "weight": _int(0, MAX_WEIGHT),
                            "address": {"type": "string"},
                            "alive": {"type": "boolean"},
                            # what the runtime describes (ReplicaRuntime.describe): the
                            # process runtime's pid (null elsewhere), a Docker container's id,
                            # a Swarm service's id
                            "pid": {"type": ["integer", "null"]},
                        },
                        optional={"container": {"type": "string"}, "service": {"type": "string"}},
                    ),
                },
                "instances": {"type": "array", "items": {"type": "object"}},
            }
        ),
        "Event": {
            "type": "object",
            "required": ["epoch", "kind", "moved_share", "ideal_share"],
            "properties": {
                "epoch": _int(0),
                "time": {"type": "number"},
                "kind": {"type": "string"},
                "algorithm": {"type": "string"},
                "replicas_before": _int(0),
                "replicas_after": _int(0),
                "added": {"type": "array", "items": {"type": "string"}},
                "removed": {"type": "array", "items": {"type": "string"}},
                "moved_share": {"type": "number"},
                "ideal_share": {"type": "number"},
                "excess": {"type": ["number", "null"]},
            },
        },
        "Lookup": {
            "type": "object",
            "required": ["key", "epoch", "algorithm", "owner", "address", "candidates"],
            "properties": {
                "key": {"type": "string"},
                "epoch": _int(0),
                "algorithm": {"enum": list(ALGORITHMS)},
                "owner": {"type": "string"},
                "address": {"type": "string"},
                "candidates": {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 1,
                    "maxItems": MAX_CANDIDATES,
                },
            },
        },
        "Simulation": {
            "type": "object",
            "required": ["epoch", "algorithm", "replicas_before", "replicas_after", "excess"],
            "properties": {
                "epoch": _int(0),
                "algorithm": {"enum": list(ALGORITHMS)},
                "replicas_before": _int(0),
                "replicas_after": _int(0),
                "moved_share": {"type": "number", "minimum": 0, "maximum": 1},
                "ideal_share": {"type": "number", "minimum": 0, "maximum": 1},
                "excess": {"type": ["number", "null"]},
            },
        },
        "Ring": _closed(
            {
                "epoch": _int(0),
                "algorithm": {"enum": list(ALGORITHMS)},
                "fingerprint": {"type": "string"},
                "bins": _int(1, MAX_BINS),
                "method": {"enum": ["table", "points", "assignment", "sampled", "empty"]},
                "exact": {"type": "boolean"},
                "arcs": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "prefixItems": [share, share, {"type": "string"}],
                        "minItems": 3,
                        "maxItems": 3,
                    },
                    "description": "[start, end, owner] covering [0, 1) in order.",
                },
                "shares": {"type": "object", "additionalProperties": share},
                "replicas": {
                    "type": "array",
                    "items": _closed(
                        {
                            "name": {"type": "string"},
                            "weight": _int(0, MAX_WEIGHT),
                            "address": {"type": "string"},
                            "share": share,
                            "requests": _int(0),
                            "in_flight": _int(0),
                        }
                    ),
                },
            }
        ),
        "TargetGroup": {
            "type": "object",
            "required": ["targets", "labels"],
            "properties": {
                "targets": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }


def _paths() -> JSON:
    no_replicas = _error("No replica is in the ring.")
    change_body = _body(
        _ref("Change"),
        "clients send it on DELETE too; other fields are ignored",
        required=True,
    )
    # The contract forwards GET of any path it does not define to a replica: GET /add and
    # GET /rm are the replicas' (the contract's 400 when none serves them), not 405.
    forwarded = (
        " GET (and HEAD) of this path is not this API's: like any path the contract does not "
        "define for GET, it goes to a replica ('<Error> '{}' endpoint does not exist in server "
        "replicas' when none serves it). Other methods answer 405."
    )
    rm = _change(
        "Remove n replicas (never respawned)",
        "Removes the named replicas and, when fewer than n are named, random others. "
        f"More names than n: 400 '<Error> {RM_TOO_MANY_NAMES}'." + forwarded.format("/rm"),
        change_body,
        _ok(_ref("Replicas"), "The replicas that remain"),
    )
    rm["responses"]["409"] = _DISCOVERED
    add = _change(
        "Add n replicas",
        "Starts n replicas (named ones first, generated names for the rest) and adds "
        "them to the ring once each passed its first heartbeat; all or none. More "
        f"names than n: 400 '<Error> {ADD_TOO_MANY_NAMES}'." + forwarded.format("/add"),
        change_body,
        _ok(_ref("Replicas"), "Every replica after the add"),
    )
    add["responses"]["409"] = _DISCOVERED
    return {
        "/rep": {
            "get": _read(
                "The replicas",
                "N and the replica names, in join order (the contract's exact body).",
                {"200": _ok(_ref("Replicas"))},
            )
        },
        "/add": {"post": add},
        "/rm": {"delete": rm, "post": {**rm, "summary": "Remove n replicas (POST alias)"}},
        "/lb/status": {
            "get": _read(
                "This instance, its ring, the replicas and every instance",
                "Operator view (not wrapped in message/status).",
                {"200": _json(_ref("Status"), "Status")},
            )
        },
        "/lb/events": {
            "get": _read(
                "The latest membership changes and the share of keys each moved",
                "Newest first.",
                {
                    "200": _ok(
                        {
                            "type": "object",
                            "required": ["events"],
                            "properties": {"events": {"type": "array", "items": _ref("Event")}},
                        }
                    ),
                    "400": _BAD,
                    "503": _error("The shared store is unreachable."),
                },
                [_query("limit", _int(1, KEEP_EVENTS, default=50), "How many events")],
            )
        },
        "/lb/settings": {
            "get": _read(
                "The routing settings in force",
                "A keyed hash's seed shows as '(secret)'.",
                {"200": _ok(_ref("Settings"))},
            ),
            "put": _change(
                "Change the routing settings of every instance",
                "Only the given fields change; settings whose ring would be too costly to "
                "build are refused (400).",
                _body(
                    _ref("SettingsChange"),
                    'e.g. {"algorithm": "maglev"}; none ({}) changes nothing',
                    required=False,
                ),
                _ok(_ref("Settings"), "The settings now in force"),
            ),
        },
        "/lb/weight": {
            "put": _change(
                "Set one replica's weight (0 drains it)",
                "The replica keeps running; its share of keys follows its weight.",
                _body(_ref("WeightChange"), "The replica and its new weight", required=True),
                _ok(_ref("Weights"), "Every replica's weight"),
            )
        },
        "/lb/lookup": {
            "get": _read(
                "A key's owner and its next candidates",
                "What a retry or a bounded-load spill would use, on this instance's ring.",
                {"200": _ok(_ref("Lookup")), "400": _BAD, "503": no_replicas},
                [
                    _query("key", {"type": "string"}, "The routing key", required=True),
                    _query("count", _int(1, MAX_CANDIDATES, default=3), "Candidates wanted"),
                ],
            )
        },
        "/lb/simulate": {
            "get": _read(
                "The share of keys a change would move, without applying it",
                "At least one of add, remove, weight; applied in the order remove, weight, add. "
                "Bounded by max_replicas: at most that many replicas after the change and "
                "items in a list, else 400 'Not simulated: …' (also for rings too costly to "
                "compare). Answers are cached per ring and resulting member set; new "
                "computations run one at a time and use at most a tenth of the instance's CPU, "
                "so one that gets no turn within 2 s is answered 503 with Retry-After. "
                "rendezvous reports the expected share (closed form), assignment one estimated "
                "from 8,192 keys, the other algorithms the exact share.",
                {
                    "200": _ok(_ref("Simulation")),
                    "400": _BAD,
                    "503": {
                        **_error("Other simulations are using this instance's share; retry."),
                        "headers": {
                            "Retry-After": {
                                "schema": _int(1),
                                "description": "Seconds to wait before asking again.",
                            }
                        },
                    },
                },
                [
                    _query(
                        "add",
                        _int(0, MAX_SIMULATED_ADDS),
                        "New replicas (at most max_replicas less the replicas kept)",
                    ),
                    _query("remove", {"type": "string"}, "Comma list of current replicas"),
                    _query(
                        "weight",
                        {"type": "string"},
                        f"Comma list of <name>:<weight 0..{MAX_WEIGHT}> of current replicas",
                    ),
                ],
            )
        },
        "/lb/ring": {
            "get": _read(
                "The ring as arcs of the hash space, with shares and traffic per replica",
                "What the /ui page draws.",
                {"200": _ok(_ref("Ring")), "400": _BAD},
                [
                    _query(
                        "bins",
                        _int(1, MAX_BINS, default=DEFAULT_BINS),
                        "Resolution, rounded up to a power of two in 64..4096",
                    )
                ],
            )
        },
        "/lb/targets": {
            "get": _read(
                "Prometheus HTTP service discovery of the replicas",
                "One target group per replica (http_sd_configs format).",
                {
                    "200": _json(
                        {"type": "array", "items": _ref("TargetGroup")}, "The target groups"
                    )
                },
            )
        },
        PATH: {
            "get": _read(
                "This document",
                "OpenAPI 3.1.",
                {"200": _json({"type": "object", "required": ["openapi"]}, "OpenAPI 3.1")},
            )
        },
        "/metrics": {
            "get": _read(
                "Prometheus metrics",
                "Text exposition format; covers every worker process.",
                {
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/ui": {
            "get": _read(
                "The live ring page",
                "One self-contained HTML page polling /lb/ring, /lb/status and /lb/events.",
                {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
    }


_FIRST_LISTED = "$response.body#/message/replicas/0"


def _link(operation_id: str, description: str, body: JSON | None = None) -> JSON:
    link: JSON = {"operationId": operation_id, "description": description}
    if body is not None:
        link["requestBody"] = body  # merged into a generated body by clients that generate one
    return link


def _add_links(paths: JSON) -> None:
    """Links between the contract's operations (OpenAPI ``links``): an answer listing the
    replicas leads to the next change on them, /add → /rep → /rm → /add, as schemathesis'
    stateful tests follow them."""
    replicas = _link("get_rep", "The replicas now")
    remove_first = _link(
        "delete_rm", "Remove the first replica listed", {"n": 1, "hostnames": [_FIRST_LISTED]}
    )
    weigh_first = _link(
        "put_lb_weight", "Set the first listed replica's weight", {"hostname": _FIRST_LISTED}
    )
    add_one = _link("post_add", "Add one replica", {"n": 1})
    chains = {
        ("/add", "post"): {"Replicas": replicas, "RemoveFirst": remove_first},
        ("/rep", "get"): {
            "RemoveFirst": remove_first,
            "WeighFirst": weigh_first,
            "AddOne": add_one,
        },
        ("/rm", "delete"): {"Replicas": replicas, "AddOne": add_one},
    }
    for (path, method), links in chains.items():
        paths[path][method]["responses"]["200"]["links"] = links


def operation_id(method: str, path: str) -> str:
    """``post_add``, ``get_lb_openapi_json``: what links name operations by."""
    return f"{method}_{path.strip('/').replace('/', '_').replace('.', '_')}"


@functools.cache
def spec(*, admin_token: bool = False) -> JSON:
    """The OpenAPI 3.1 document (built once per ``admin_token``; do not mutate).

    Args:
        admin_token: the balancer runs with an admin token, so the changes require it (401
            without it); without one they need nothing.
    """
    guarded = ", ".join(f"{method} {path}" for method, path in sorted(GUARDED))
    paths = _paths()
    _add_links(paths)
    for path, item in paths.items():
        for method, op in item.items():
            op["operationId"] = operation_id(method, path)
    if admin_token:
        for method, path in GUARDED:
            op = paths[path][method.lower()]
            op["security"] = [{"adminToken": []}]
            op["responses"] = {**op["responses"], "401": _UNAUTHORIZED}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chlb admin API",
            "version": "1",
            "description": (
                "The admin endpoints of the consistent-hashing load balancer, on the same port "
                "as the traffic it balances. /rep, /add and /rm are the assignment's wire "
                "contract, byte for byte. Every error is "
                '{"message": "<Error> …", "status": "failure"} with a 4xx status (503 when a '
                "change cannot be made now); unknown /lb/ paths answer 404, methods a path "
                "does not list 405 with Allow, in the same shape (GET of /add and /rm excepted: "
                "the contract forwards it to the replicas). With --admin-token, the changes "
                f"({guarded}) need 'Authorization: Bearer <token>' (this document then says "
                "so); reads stay open."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Only when the balancer runs with --admin-token.",
                }
            },
        },
    }


@functools.cache
def _document(admin_token: bool) -> bytes:
    return json.dumps(spec(admin_token=admin_token), indent=1).encode()


async def serve(request: web.Request) -> web.Response:
    """This document, as it holds for this balancer (with or without an admin token)."""
    admin_token = request.get(ADMIN_TOKEN_SET, False)
    return web.Response(body=_document(admin_token), content_type=CONTENT_TYPE)


def routes() -> list[web.RouteDef]:
    return [web.get(PATH, serve)]
