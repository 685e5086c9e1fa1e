"""Grafana dashboard JSON checked against Grafana's own dashboard schema.

The schema comes from the Grafana Foundation SDK (PyPI ``grafana-foundation-sdk``, by Grafana
Labs): typed model classes generated from Grafana's schema (the dashboard kind, every panel
plugin's options and field config, every data source's query), one release per Grafana version;
pyproject.toml pins the one for the Grafana release docker-compose.yml runs. The SDK only decodes
(its ``from_json`` rejects nothing), so ``problems`` checks what it decoded in three passes:

  1. Plugins: every panel type is a panel plugin the schema covers (or a row), and every query
     belongs to a data source type the schema covers. (The ``alertlist`` panel has no schema in
     Grafana, so it fails here: alert state is shown through Prometheus' ``ALERTS`` series.)
  2. Round trip: decode, encode again; every key and value of the input must come back. The
     decoder drops a key the schema does not have, and an object where a scalar belongs (or the
     reverse) comes back changed.
  3. Types: every decoded value against the annotation generated from the schema (str, int,
     float, bool, enums, literals, lists, maps, nested objects), and every field the schema
     requires (a non-Optional annotation) present in the input.
Must not import: anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

plugins.register_default_plugins()

_SENTINEL = object()


def panel_types() -> frozenset[str]:
    """The panel plugin ids the schema covers, plus ``row``."""
    return frozenset({*cogruntime.Runtime().panelcfg_variants, "row"})


def datasource_types() -> frozenset[str]:
    """The data source plugin ids whose queries the schema covers."""
    return frozenset(cogruntime.Runtime().dataquery_variants)


def problems(board: dict[str, Any]) -> list[str]:
    """Every way ``board`` (a dashboard's JSON) departs from the schema; empty when it fits."""
    found = _plugins(board)
    try:
        decoded = Dashboard.from_json(board)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return [*found, f"the schema's decoder cannot read the dashboard: {exc!r}"]
    encoded = json.loads(json.dumps(decoded, cls=JSONEncoder))
    found += _lost(board, encoded, "$")
    found += _check(decoded, board, Dashboard, "$")
    return found


def _plugins(board: dict[str, Any]) -> list[str]:
    found = []
    known, sources = panel_types(), datasource_types()
    rows = board.get("panels", [])
    nested = [p for row in rows if isinstance(row, dict) for p in row.get("panels", [])]
    for i, panel in enumerate([*rows, *nested]):
        if not isinstance(panel, dict):
            continue
        where = f"panel {panel.get('title', i)!r}"
        if panel.get("type") not in known:
            found.append(f"{where}: unknown panel type {panel.get('type')!r}")
        queries = panel.get("targets")
        for target in queries if isinstance(queries, list) else []:  # else: pass 3 says so
            if not isinstance(target, dict):
                continue
            ref = target.get("datasource") or panel.get("datasource")
            source = ref.get("type") if isinstance(ref, dict) else ref  # a bare name: pre-7 JSON
            if source not in sources:
                found.append(f"{where}: query of unknown data source type {source!r}")
    return found


def _lost(given: Any, back: Any, path: str) -> list[str]:
    """What of ``given`` did not survive the round trip (a null counts as absent)."""
    if isinstance(given, dict):
        if not isinstance(back, dict):
            return [f"{path}: an object where the schema has {type(back).__name__}"]
        found = []
        for key, value in given.items():
            if key not in back:
                if value is not None:
                    found.append(f"{path}.{key}: not a field of the schema")
            else:
                found += _lost(value, back[key], f"{path}.{key}")
        return found
    if isinstance(given, list):
        if not isinstance(back, list) or len(back) != len(given):
            return [f"{path}: a list where the schema has {type(back).__name__}"]
        return [e for i, v in enumerate(given) for e in _lost(v, back[i], f"{path}[{i}]")]
    if given != back or isinstance(given, bool) != isinstance(back, bool):
        return [f"{path}: {given!r} came back as {back!r}"]
    return []


_HINTS: dict[type, dict[str, Any]] = {}
_KEYS: dict[tuple[type, str], str] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _key(cls: type, attr: str) -> str:
    """The JSON name of an attribute: the key its value lands under in ``to_json``."""
    if (cls, attr) not in _KEYS:
        obj = cls()
        setattr(obj, attr, _SENTINEL)
        payload = obj.to_json()
        _KEYS[cls, attr] = next((k for k, v in payload.items() if v is _SENTINEL), attr)
    return _KEYS[cls, attr]


def _is_model(cls: type) -> bool:
    return hasattr(cls, "from_json")


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _model(obj: Any, raw: Any, path: str) -> list[str]:
    """Check a decoded object's attributes; ``raw`` is the JSON it was decoded from."""
    if isinstance(obj, cogruntime.UnknownDataquery):
        return []  # reported by _plugins
    found = []
    given = raw if isinstance(raw, dict) else {}
    for attr, hint in _hints(type(obj)).items():
        key = _key(type(obj), attr)
        if key not in given:  # what the decoder filled in is no part of the input
            if not _optional(hint):
                found.append(f"{path}.{key}: required by the schema, missing")
            continue
        found += _check(getattr(obj, attr), given.get(key), hint, f"{path}.{key}")
    return found


def _check(value: Any, raw: Any, hint: Any, path: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return []
        decoded_as = [
            a for a in args if isinstance(a, type) and _is_model(a) and isinstance(value, a)
        ]
        if decoded_as:  # the decoder chose the arm (a row or a panel, say): check that one
            return _check(value, raw, decoded_as[0], path)
        tries = [_check(value, raw, arm, path) for arm in args if arm is not type(None)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is typing.Literal:
        ok = any(value == a and type(value) is type(a) for a in args)
        return [] if ok else [f"{path}: {value!r} is not one of {list(args)}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not a list"]
        items = raw if isinstance(raw, list) and len(raw) == len(value) else [None] * len(value)
        return [
            e for i, v in enumerate(value) for e in _check(v, items[i], args[0], f"{path}[{i}]")
        ]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {value!r} is not an object"]
        subs = raw if isinstance(raw, dict) else {}
        return [e for k, v in value.items() for e in _check(v, subs.get(k), args[1], f"{path}.{k}")]
    return _scalar(value, raw, hint, path)


def _scalar(value: Any, raw: Any, hint: Any, path: str) -> list[str]:
    if hint in (object, Any) or not isinstance(hint, type):
        return _model(value, raw, path) if hasattr(value, "to_json") else []
    if issubclass(hint, enum.Enum):
        ok = isinstance(value, hint) or value in {m.value for m in hint}
        return [] if ok else [f"{path}: {value!r} is not one of {[m.value for m in hint]}"]
    if hint is bool or hint is str:
        ok = isinstance(value, hint)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:  # a model class, or the Dataquery base of every data source's query
        if not isinstance(value, hint):
            return [f"{path}: {value!r} is not a {hint.__name__}"]
        return _model(value, raw, path)
    return [] if ok else [f"{path}: {value!r} is not a {hint.__name__}"]
