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

import functools
import json
from typing import Any

from aiohttp import web

from balancer.admin import GUARDED
from balancer.admin_input import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_WEIGHT
from balancer.hashing import ALGORITHMS, HASH_NAMES, PROBINGS
from balancer.hashing.arcs import DEFAULT_BINS
from balancer.movement_log import KEEP_EVENTS
from balancer.routing_api import MAX_CANDIDATES, MAX_SIMULATED_ADDS
from balancer.ui import MAX_BINS
from balancer.wire import ADD_TOO_MANY_NAMES, CONTENT_TYPE, RM_TOO_MANY_NAMES

PATH = "/lb/openapi.json"
HOSTNAME_PATTERN = r"^(Server )?[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# RingSettings fields with integer limits (balancer.store.settings_from_json enforces them).
INT_LIMITS = {"points_per_weight": (1, 10_000), "slots": (1, 1 << 20), "vnodes": (1, 1 << 20)}

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


def _body(schema: JSON, description: str) -> JSON:
    # Any content type is read as JSON (curl -d sends application/x-www-form-urlencoded).
    return {
        "required": False,
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
_UNAVAILABLE = _error(
    "The change cannot be made now (shared store unreachable, no leader, a replica failed to "
    "start); nothing changed unless the message says it may still be applied."
)


def _change(summary: str, description: str, body: JSON, success: JSON) -> JSON:
    """A state-changing operation: guarded by the admin token when one is configured."""
    return {
        "summary": summary,
        "description": description,
        "security": [{}, {"adminToken": []}],
        "requestBody": body,
        "responses": {
            "200": success,
            "400": _BAD,
            "401": _UNAUTHORIZED,
            "413": _TOO_LARGE,
            "503": _UNAVAILABLE,
        },
    }


def _read(
    summary: str, description: str, responses: JSON, parameters: list[JSON] | None = None
) -> JSON:
    op: JSON = {"summary": summary, "description": description, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    return op


def _schemas() -> JSON:
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
                    "description": "At most n names, no duplicates; the rest are chosen by the "
                    "balancer. Absent, null or [] all mean none.",
                },
            },
        },
        "RingSettings": {
            "type": "object",
            "required": ["algorithm", "hash_name", "hash_seed", "points_per_weight", "slots"],
            "properties": {
                **settings_props,
                "hash_seed": {
                    "type": ["integer", "string"],
                    "description": "'(secret)' for the keyed hashes (siphash, blake2b).",
                },
            },
        },
        "SettingsChange": {
            "type": "object",
            "properties": {**settings_props, "hash_seed": _int(0)},
            "additionalProperties": False,
            "description": "Only the fields to change. hash_seed must be below 2**64 (2**128 "
            "for siphash). A keyed hash (siphash, blake2b) runs only on a secret seed: a switch "
            "to one from xxh3 must send a random hash_seed (not the default), else 400; a switch "
            "back to xxh3 without one goes back to the default seed.",
        },
        "WeightChange": {
            "type": "object",
            "required": ["hostname", "weight"],
            "properties": {"hostname": _ref("Hostname"), "weight": _int(0, MAX_WEIGHT)},
        },
        "Settings": {
            "type": "object",
            "required": ["epoch", "settings"],
            "properties": {
                "epoch": _int(0),
                "shared": {"type": "boolean"},
                "settings": _ref("RingSettings"),
            },
        },
        "Weights": {
            "type": "object",
            "required": ["epoch", "weights"],
            "properties": {
                "epoch": _int(0),
                "weights": {"type": "object", "additionalProperties": _int(0, MAX_WEIGHT)},
            },
        },
        "Status": {
            "type": "object",
            "required": ["instance", "leader", "store", "epoch", "replicas", "instances"],
            "properties": {
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
                    "items": {
                        "type": "object",
                        "required": ["name", "server_id", "weight", "address", "alive"],
                        "properties": {
                            "name": {"type": "string"},
                            "server_id": {"type": "string"},
                            "index": {"type": "integer"},
                            "weight": _int(0, MAX_WEIGHT),
                            "address": {"type": "string"},
                            "alive": {"type": "boolean"},
                            "pid": {"type": ["integer", "null"]},
                        },
                    },
                },
                "instances": {"type": "array", "items": {"type": "object"}},
            },
        },
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
        "Ring": {
            "type": "object",
            "required": ["epoch", "algorithm", "arcs", "replicas"],
            "properties": {
                "epoch": _int(0),
                "algorithm": {"enum": list(ALGORITHMS)},
                "bins": _int(1, MAX_BINS),
                "arcs": {"type": "array", "items": {"type": "array"}},
                "shares": {"type": "object", "additionalProperties": {"type": "number"}},
                "replicas": {"type": "array", "items": {"type": "object"}},
            },
        },
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
    )
    rm = _change(
        "Remove n replicas (never respawned)",
        "Removes the named replicas and, when fewer than n are named, random others. "
        f"More names than n: 400 '<Error> {RM_TOO_MANY_NAMES}'.",
        change_body,
        _ok(_ref("Replicas"), "The replicas that remain"),
    )
    return {
        "/rep": {
            "get": _read(
                "The replicas",
                "N and the replica names, in join order (the contract's exact body).",
                {"200": _ok(_ref("Replicas"))},
            )
        },
        "/add": {
            "post": _change(
                "Add n replicas",
                "Starts n replicas (named ones first, generated names for the rest) and adds "
                "them to the ring once each passed its first heartbeat; all or none. More "
                f"names than n: 400 '<Error> {ADD_TOO_MANY_NAMES}'.",
                change_body,
                _ok(_ref("Replicas"), "Every replica after the add"),
            )
        },
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
                _body(_ref("SettingsChange"), 'e.g. {"algorithm": "maglev"}'),
                _ok(_ref("Settings"), "The settings now in force"),
            ),
        },
        "/lb/weight": {
            "put": _change(
                "Set one replica's weight (0 drains it)",
                "The replica keeps running; its share of keys follows its weight.",
                _body(_ref("WeightChange"), "The replica and its new weight"),
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
                "At least one of add, remove, weight; applied in the order remove, weight, add.",
                {"200": _ok(_ref("Simulation")), "400": _BAD},
                [
                    _query("add", _int(0, MAX_SIMULATED_ADDS), "New replicas"),
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
                [_query("bins", _int(1, MAX_BINS, default=DEFAULT_BINS), "Resolution")],
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


@functools.cache
def spec() -> JSON:
    """The OpenAPI 3.1 document (built once; do not mutate)."""
    guarded = ", ".join(f"{method} {path}" for method, path in sorted(GUARDED))
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
                "change cannot be made now); unknown /lb/ paths answer 404, other methods 405, "
                "in the same shape. With --admin-token, the changes "
                f"({guarded}) need 'Authorization: Bearer <token>'; reads stay open."
            ),
        },
        "paths": _paths(),
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
def _document() -> bytes:
    return json.dumps(spec(), indent=1).encode()


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_document(), content_type=CONTENT_TYPE)


def routes() -> list[web.RouteDef]:
    return [web.get(PATH, serve)]
