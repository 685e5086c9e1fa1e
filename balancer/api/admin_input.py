"""What an admin request may carry: strict JSON bodies, the contract's change bodies, and the
limits that keep a settings or weight change from stalling every instance.

Owns ``read_body`` (at most ``MAX_BODY_BYTES``), ``parse_json`` (one value, no duplicate keys,
no NaN/Infinity, at most ``MAX_JSON_DEPTH`` levels, a number whose value is whole is an ``int``
as JSON Schema's ``integer`` has it), ``query_int``, ``json_object``, ``parse_change`` (the
``/add`` and ``/rm`` bodies), ``settings_change`` (a ``PUT /lb/settings`` body applied to the
settings in force: never a keyed hash on a public seed, see ``balancer.hashing.hashes``) and
``ring_cost_error``. Every failure is a ``RequestError`` whose message the client sees
(``BodyTooLarge``: 413), or, from ``settings_change``, a ``ValueError`` (400).
Must not import: redis, docker.
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import math
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from balancer.errors import RequestError
from balancer.hashing import Member, RingSettings
from balancer.hashing.hashes import DEFAULT_SEED, KEYED_HASHES, SEED_BITS, key_command
from balancer.names import is_valid_name, server_id
from balancer.state.codec import settings_from_json

MAX_WEIGHT = 1000
MAX_BODY_BYTES = 64 * 1024  # admin bodies are a few dozen bytes; larger ones answer 413
MAX_JSON_DEPTH = 32  # nesting levels of a request body (the contract's bodies have 2)
# What a ring may cost to build, checked before a settings or weight change (and a simulation)
# is accepted: the ring is rebuilt on every instance, on the event loop.
MAX_RING_POINTS = 500_000  # algorithm=ring: points_per_weight × the sum of the weights
MAX_PLACEMENTS = 1 << 16  # algorithm=assignment: vnodes × replicas placed ...
MAX_PROBE_WORK = 1 << 23  # ... and, above half the slots, × slots (probing a full table)


class BodyTooLarge(RequestError):
    """The request body is over ``MAX_BODY_BYTES`` (→ 413)."""


class _Refused(ValueError):
    """Raised by a JSON decoding hook: the text is JSON-shaped but not acceptable."""


def shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def read_body(request: web.Request) -> bytes:
    """The request body, at most ``MAX_BODY_BYTES``.

    Raises:
        BodyTooLarge: the body (or its announced Content-Length) is larger.
        RequestError: the body was cut short (the client went away).
    """
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise BodyTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    try:
        while chunk := await request.content.readany():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BodyTooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    except ConnectionError as exc:
        raise RequestError("The request body was cut short") from exc
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity or overflowing numbers, at most
    ``MAX_JSON_DEPTH`` levels. An empty body is ``{}`` (one of whitespace alone is not JSON).
    A number whose value is whole is an ``int`` however it is written (``2916.0``, ``1.4e14``):
    JSON does not tell it from ``2916`` and neither does JSON Schema's ``integer``, which the
    OpenAPI document uses.

    Raises:
        RequestError: with the message the client sees.
    """
    if not raw:  # no body; whitespace alone is a body, and not JSON
        return {}
    too_deep = f"Request body is nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    try:
        data = json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_number,
        )
    except RecursionError as exc:
        raise RequestError(too_deep) from exc
    except _Refused as exc:
        raise RequestError(f"Request body is not valid JSON: {exc}") from exc
    except ValueError as exc:  # also UnicodeDecodeError
        raise RequestError("Request body is not valid JSON") from exc
    if _depth(data) > MAX_JSON_DEPTH:
        raise RequestError(too_deep)
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"duplicate key {shown(key)}")
            seen.add(key)
    return data


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _number(text: str) -> float | int:
    """A JSON number written with a fraction or an exponent: an ``int`` when its value is whole
    (exactly the written one: ``12345678901234567890.0`` is not rounded to a float's), else a
    ``float``."""
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number out of range: {shown(text)}")
    if not value.is_integer():
        return value
    exact = decimal.Decimal(text)
    # A value below a float's resolution ("1e-400") is whole as a float: JSON Schema
    # validators see the float, so the server does too.
    return int(exact) if exact == exact.to_integral_value() else int(value)


def query_int(text: str, name: str, low: int, high: int) -> int:
    """A query parameter of JSON Schema type ``integer`` in ``low..high``: ASCII digits only
    (``int()`` would also take " 5", "+5", "5_0" and other scripts' digits).

    Raises:
        RequestError: ``'<name>' must be an integer in <low>..<high>``.
    """
    digits = text.removeprefix("-")
    if digits.isascii() and digits.isdigit() and len(digits) <= 18:
        value = int(text)
        if low <= value <= high:
            return value
    raise RequestError(f"'{name}' must be an integer in {low}..{high}")


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value (a scalar is 0), counted without recursion and
    given up past ``MAX_JSON_DEPTH``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        stack.extend((child, depth + 1) for child in item)
    return deepest


async def json_object(request: web.Request, example: str = "") -> dict[str, Any]:
    data = parse_json(await read_body(request))
    if not isinstance(data, dict):
        raise RequestError(f"Request body must be a JSON object{example}")
    return data


async def parse_change(request: web.Request, too_many: str) -> tuple[int, list[str]]:
    """Validate an ``/add`` or ``/rm`` body → (n, hostnames).

    Raises:
        RequestError: with the message the client sees (``BodyTooLarge``: over 64 KiB).
    """
    data = await json_object(request, ' like {"n": 1, "hostnames": []}')
    n = data.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise RequestError("'n' must be a positive integer")
    hostnames = data.get("hostnames")
    if hostnames is None:
        hostnames = []
    if not isinstance(hostnames, list):
        raise RequestError("'hostnames' must be a list of hostnames")
    if len(hostnames) > n:
        raise RequestError(too_many)
    bad = [h for h in hostnames if not is_valid_name(h)]
    if bad:
        listed = ", ".join(map(shown, bad[:5])) + (", …" if len(bad) > 5 else "")
        raise RequestError(
            f"Invalid hostname(s): {listed}; a hostname is 1-63 letters, "
            "digits, '.', '_' or '-' (starting with a letter or digit), optionally after 'Server '"
        )
    ids = [server_id(h) for h in hostnames]
    dupes = sorted({h for h, i in zip(hostnames, ids, strict=True) if ids.count(i) > 1})
    if dupes:
        raise RequestError(f"Duplicate hostname(s) in request: {', '.join(dupes)}")
    return n, hostnames


def settings_change(data: dict[str, Any], base: RingSettings) -> RingSettings:
    """``base`` (the settings in force) changed as a ``PUT /lb/settings`` body ``data`` asks.

    A keyed hash keeps a secret key: a change that would run one on a public seed (the
    built-in default, or an unkeyed hash's seed, which ``GET /lb/settings`` shows) is refused,
    and a switch from a keyed hash to xxh3 without a new seed goes back to the default seed
    rather than show the old key.

    Raises:
        ValueError: with a message for the client (it never shows a seed).
    """
    asked = data.get("hash_name", base.hash_name)  # any JSON value: settings_from_json checks
    leaves_keyed = not isinstance(asked, str) or asked not in KEYED_HASHES
    if base.hash_name in KEYED_HASHES and leaves_keyed and "hash_seed" not in data:
        base = dataclasses.replace(base, hash_seed=DEFAULT_SEED)
    changed = settings_from_json(data, base)
    name = changed.hash_name
    shown_seed = base.hash_name not in KEYED_HASHES and changed.hash_seed == base.hash_seed
    if name in KEYED_HASHES and (changed.hash_seed == DEFAULT_SEED or shown_seed):
        raise ValueError(
            f"Settings refused: {name} needs a secret key, and the seed it would use is public "
            f"(the built-in default, or the {base.hash_name} seed GET /lb/settings shows): send "
            f"a random 'hash_seed' below 2**{SEED_BITS[name]} with the change, e.g. from "
            f"`{key_command(name)}`"
        )
    return changed


def ring_cost_error(settings: RingSettings, members: Iterable[Member]) -> str | None:
    """Why a ring of ``members`` under ``settings`` would cost too much to build, or None.

    Every value here is in range on its own; together some would stall every instance for
    seconds to hours (a ketama ring of millions of points, an assignment table probed full).
    """
    live = [m for m in members if m.weight > 0]
    if settings.algorithm == "ring":
        points = settings.points_per_weight * sum(m.weight for m in live)
        if points > MAX_RING_POINTS:
            return (
                f"the ring would have {points} points (points_per_weight × the sum of the "
                f"weights); at most {MAX_RING_POINTS}"
            )
    if settings.algorithm == "assignment":
        placements = settings.vnodes * len(live)
        if placements > MAX_PLACEMENTS or (
            placements > settings.slots // 2 and placements * settings.slots > MAX_PROBE_WORK
        ):
            return (
                f"{placements} virtual servers (vnodes × replicas) in {settings.slots} slots "
                f"would take too long to place; at most {MAX_PLACEMENTS}, and at most half the "
                "slots unless the table is small"
            )
    return None
