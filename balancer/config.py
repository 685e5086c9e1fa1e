"""Settings: parsed once from defaults, an optional TOML file, ``LB_*`` env vars and CLI flags.

Owns ``Settings`` (frozen: one frozen section per concern, from ``balancer.sections`` and
``balancer.http.sections``, plus one per registered runtime, ``balancer.runtimes.registry``) and
``load_settings``. Users set flat keys, as they always have: each section field declares its
key, and the key is the flag ``--<key>`` (underscores become dashes), the variable ``LB_<KEY>``
and the TOML key ``<key>``; a TOML file may also group keys in a table named after their
section, by field name (``[health]`` ``interval_s = 0.2``). Precedence, lowest first: field
defaults, the file named by ``--config``/``LB_CONFIG``, the environment, the flags.
``lb-balancer --help`` shows one group per section. Only ``__main__`` calls ``load_settings``
with the real env/argv.
Must not import: asyncio, aiohttp, redis, docker (nor anything that imports them at module
level: settings are parsed before anything starts; the registry imports each runtime's module,
itself free of its engine's SDK, when the settings are first parsed).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from balancer.errors import ConfigError
from balancer.hashing import RingSettings
from balancer.http.sections import EjectionSettings, HttpSettings, RetrySettings
from balancer.runtimes.registry import RUNTIMES
from balancer.sections import (
    AdminSettings,
    HealthSettings,
    LogSettings,
    ReplicaSettings,
    RoutingSettings,
    StateSettings,
)
from balancer.setting import settable


def _runtime_sections() -> Mapping[str, Any]:
    """Every registered runtime's section, with its defaults."""
    return types.MappingProxyType({n: s() for n, s in RUNTIMES.sections().items()})


@dataclass(frozen=True)
class Settings:
    """Every knob of one balancer instance, by section; each section goes whole to the part
    that uses it (``http`` to the data path, ``health`` to the health checks, …)."""

    http: HttpSettings = field(default_factory=HttpSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    ejection: EjectionSettings = field(default_factory=EjectionSettings)
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    state: StateSettings = field(default_factory=StateSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    log: LogSettings = field(default_factory=LogSettings)
    runtimes: Mapping[str, Any] = field(default_factory=_runtime_sections)  # name → section

    def __post_init__(self) -> None:
        sections = RUNTIMES.sections()
        missing = sorted(set(sections) - set(self.runtimes))
        if missing:
            raise ConfigError(f"settings without the section of runtime {', '.join(missing)}")
        for name, section in self.runtimes.items():
            RUNTIMES.check_name(name)
            if not isinstance(section, sections[name]):
                raise ConfigError(f"runtime {name} takes a {sections[name].__name__}")
        object.__setattr__(self, "runtimes", types.MappingProxyType(dict(self.runtimes)))

    @property
    def ring(self) -> RingSettings:
        """The routing settings as the hashing core takes them."""
        return self.routing.ring

    @property
    def runtime(self) -> str:
        """The runtime that runs the replicas: the one whose section implies it (a non-empty
        ``--backends`` picks the static runtime), else ``--runtime``."""
        implied = [name for name, s in self.runtimes.items() if getattr(s, "implied", False)]
        return implied[0] if implied else self.replicas.runtime

    @property
    def runtime_settings(self) -> Any:
        """The section of the runtime that runs the replicas (``RUNTIMES.build`` takes it)."""
        return self.runtimes[self.runtime]

    @classmethod
    def from_flat(cls, **values: Any) -> Settings:
        """Settings from flat keys, the ones flags, variables and files use (values already
        of the field's type): ``Settings.from_flat(replicas=3, heartbeat_interval_s=0.1)``.

        Raises:
            ConfigError: on an unknown key or a value a section refuses.
        """
        keys = flat_keys()
        unknown = sorted(set(values) - set(keys))
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}")
        grouped: dict[str, dict[str, Any]] = {section: {} for section in _sections()}
        for key, value in values.items():
            section, name = keys[key]
            grouped[section][name] = value
        core = {name: kind(**grouped[name]) for name, kind in _core_sections().items()}
        runtimes = {name: kind(**grouped[name]) for name, kind in RUNTIMES.sections().items()}
        return cls(**core, runtimes=runtimes)

    def to_flat(self) -> dict[str, Any]:
        """The value of every flat key (``from_flat(**s.to_flat()) == s``)."""
        out: dict[str, Any] = {}
        for key, (section, name) in flat_keys().items():
            holder = self.runtimes[section] if section in self.runtimes else getattr(self, section)
            out[key] = getattr(holder, name)
        return out


def _core_sections() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if f.name != "runtimes"}


def _sections() -> dict[str, type[Any]]:
    """Every section class by section name: the core ones, then one per registered runtime."""
    return {**_core_sections(), **RUNTIMES.sections()}


def flat_keys() -> dict[str, tuple[str, str]]:
    """Each flat key → (section name, field name)."""
    return {key: (f.section, f.name) for key, f in _fields().items()}


def load_settings(argv: Sequence[str], env: Mapping[str, str]) -> Settings:
    """Build ``Settings`` from a command line (without the program name) and an environment.

    Raises:
        ConfigError: on an unknown key in the file, or a value of the wrong type or range.
        SystemExit: on ``--help`` or a malformed command line (argparse's behaviour).
    """
    fields = _fields()
    args = _parser(fields).parse_args(list(argv))
    values: dict[str, Any] = {}
    config_path = args.config or env.get("LB_CONFIG")
    if config_path:
        values.update(_read_file(Path(config_path), fields))
    for key, f in fields.items():
        raw = _from_env(key, f, env)
        if raw is not None:
            values[key] = _coerce(key, f, raw)
    for key, f in fields.items():
        raw = getattr(args, key)
        if raw is not None:
            values[key] = _coerce(key, f, raw)
    return Settings.from_flat(**values)


def _from_env(key: str, f: _Field, env: Mapping[str, str]) -> str | None:
    """``LB_<KEY>``; for a secret also ``LB_<KEY>_FILE``, the path of a file that holds it (a
    Docker or Kubernetes secret mounted as a file, never shown by ``docker inspect``).

    Raises:
        ConfigError: both are set, or the file cannot be read (the message never shows it).
    """
    name = f"LB_{key.upper()}"
    raw = env.get(name)
    path = env.get(f"{name}_FILE") if f.secret else None
    if not path:
        return raw
    if raw is not None:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}_FILE: cannot read {path}: {type(exc).__name__}") from None
    return text.rstrip("\r\n")  # the newline an editor or `echo` leaves is not part of it


@dataclass(frozen=True)
class _Field:
    section: str
    name: str
    hint: Any  # the field's type
    help: str
    secret: bool


def _fields() -> dict[str, _Field]:
    """Each flat key → where it goes and what it takes, in section order.

    Raises:
        ConfigError: when two fields claim one key (a runtime repeating another's key).
    """
    out: dict[str, _Field] = {}
    for section, kind in _sections().items():
        hints = typing.get_type_hints(kind)
        for f in settable(kind):
            key, meta = f.metadata["key"], f.metadata
            if key in out:
                raise ConfigError(f"{key} is claimed by both {out[key].section} and {section}")
            out[key] = _Field(section, f.name, hints[f.name], meta["help"], meta["secret"])
    return out


def _parser(fields: Mapping[str, _Field]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lb-balancer",
        description="Consistent-hashing HTTP load balancer. Every flag also reads LB_<FLAG>; a "
        "--config file takes the same keys, flat or in a [section] table by field name.",
    )
    parser.add_argument("--config", help="TOML file with any of the settings below")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for key, f in fields.items():
        if f.section not in groups:
            groups[f.section] = parser.add_argument_group(*_group_title(f.section))
        where = f"[{f.section}] {f.name}"  # the same setting in a TOML table
        groups[f.section].add_argument(
            f"--{key.replace('_', '-')}", dest=key, help=f"{f.help} ({where})"
        )
    return parser


def _group_title(section: str) -> tuple[str, str]:
    """A group's title and description: the section's name and its docstring's first part."""
    about = " ".join(inspect.cleandoc(_sections()[section].__doc__ or "").split("\n\n")[0].split())
    if section in RUNTIMES.names():
        return f"runtime {section}", about
    return section, about


def _read_file(path: Path, fields: Mapping[str, _Field]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    by_field = {(f.section, f.name): key for key, f in fields.items()}
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    for shown, key, value in _entries(data, {f.section for f in fields.values()}, by_field):
        if key is None or key not in fields:
            unknown.append(shown)
        elif key in flat:
            raise ConfigError(f"{key} is set twice in {path} (as {key} and in a table)")
        else:
            flat[key] = value
    if unknown:
        raise ConfigError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
    return {key: _coerce(key, fields[key], value) for key, value in flat.items()}


def _entries(
    data: Mapping[str, Any], sections: set[str], by_field: Mapping[tuple[str, str], str]
) -> list[tuple[str, str | None, Any]]:
    """(name as written, flat key or None when unknown, value) of each setting in a file: a
    top-level key is a flat key, a table named after a section holds its fields by name."""
    found: list[tuple[str, str | None, Any]] = []
    for name, value in data.items():
        if isinstance(value, dict) and name in sections:
            found += [(f"{name}.{k}", by_field.get((name, k)), v) for k, v in value.items()]
        else:
            found.append((name, name, value))
    return found


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS.update({"false": False, "0": False, "no": False, "off": False})


def _coerce(name: str, f: _Field, raw: object) -> object:
    """Convert a string (env/flag) or TOML value to the field's declared type."""
    hint = f.hint
    options = typing.get_args(hint)
    if isinstance(hint, types.UnionType):  # ``int | None``: only the int part is settable
        hint = next(t for t in options if t is not type(None))
    if typing.get_origin(hint) is Literal:
        if raw not in options:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}; got {raw!r}")
        return raw
    if hint is bool:
        return _boolean(name, raw)
    try:
        if hint is int:
            text = str(raw).strip()
            prefixed = text.lstrip("+-")[:2].lower() in ("0x", "0o", "0b")
            return int(text, 0) if prefixed else int(text)
        if hint is float:
            return float(str(raw))
    except ValueError as exc:
        if f.secret:  # neither the message nor the chained error may show it
            raise ConfigError(f"{name} must be a {hint.__name__}") from None
        raise ConfigError(f"{name} must be a {hint.__name__}; got {raw!r}") from exc
    return str(raw)


def _boolean(name: str, raw: object) -> bool:
    if isinstance(raw, bool):  # TOML true/false
        return raw
    value = _BOOLEANS.get(str(raw).strip().lower())
    if value is None:
        raise ConfigError(f"{name} must be true or false; got {raw!r}")
    return value
