"""Settings in sections: every key users know still sets exactly one field, from a flag, a
variable or the file; ``--help`` shows the sections; the runtime registry round-trips each
runtime's section and builds the runtime from it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from balancer.__main__ import configured
from balancer.config import Settings, flat_keys, load_settings
from balancer.control.health import HealthMonitor
from balancer.errors import ConfigError
from balancer.runtimes.process import ProcessRuntime, ProcessSettings
from balancer.runtimes.registry import RUNTIMES, RuntimeEntry
from balancer.runtimes.static import StaticRuntime, StaticSettings
from balancer.sections import HealthSettings
from balancer.setting import setting
from balancer.state.memory import InMemoryStore
from tests.support.runtime import InProcessRuntime

SEED = "0x5eed5eed"  # every row runs with it, so a keyed hash_name is a valid change

# Each key users set before the settings had sections (flag --key, LB_KEY, TOML key), the
# section and field it sets now, a value other than the default, and that value as parsed.
KEYS: list[tuple[str, str, str, str, Any]] = [
    ("host", "http", "host", "0.0.0.0", "0.0.0.0"),
    ("port", "http", "port", "6000", 6000),
    ("workers", "http", "workers", "2", 2),
    ("max_connections", "http", "max_connections", "100", 100),
    ("key_source", "http", "key_source", "ip", "ip"),
    ("header_timeout_s", "http", "header_timeout_s", "2.5", 2.5),
    ("client_timeout_s", "http", "client_timeout_s", "3.5", 3.5),
    ("client_idle_timeout_s", "http", "client_idle_timeout_s", "4.5", 4.5),
    ("upstream_connect_timeout_s", "http", "upstream_connect_timeout_s", "0.25", 0.25),
    ("upstream_timeout_s", "http", "upstream_timeout_s", "5.5", 5.5),
    ("upstream_total_timeout_s", "http", "upstream_total_timeout_s", "6.5", 6.5),
    ("access_log_sample", "http", "access_log_sample", "0.25", 0.25),
    ("algorithm", "routing", "algorithm", "maglev", "maglev"),
    ("hash_name", "routing", "hash_name", "blake2b", "blake2b"),
    ("hash_seed", "routing", "hash_seed", "0x1234", 0x1234),
    ("points_per_weight", "routing", "points_per_weight", "40", 40),
    ("slots", "routing", "slots", "256", 256),
    ("vnodes", "routing", "vnodes", "4", 4),
    ("probing", "routing", "probing", "quadratic", "quadratic"),
    ("balance_factor", "routing", "balance_factor", "1.25", 1.25),
    ("heartbeat_interval_s", "health", "interval_s", "0.25", 0.25),
    ("heartbeat_timeout_s", "health", "timeout_s", "0.75", 0.75),
    ("heartbeat_fails", "health", "fails", "4", 4),
    ("heartbeat_rise", "health", "rise", "3", 3),
    ("heartbeat_jitter", "health", "jitter", "0.25", 0.25),
    ("health_path", "health", "path", "/ready", "/ready"),
    ("health_status", "health", "status", "200-299", "200-299"),
    ("spawn_timeout_s", "health", "spawn_timeout_s", "7.5", 7.5),
    ("replace_after_s", "health", "replace_after_s", "1.5", 1.5),
    ("retries", "retry", "retries", "1", 1),
    ("retry_methods", "retry", "methods", "GET", "GET"),
    ("retry_on", "retry", "on", "5xx", "5xx"),
    ("retry_timeout_s", "retry", "timeout_s", "2.5", 2.5),
    ("retry_budget", "retry", "budget", "0.5", 0.5),
    ("eject_consecutive", "ejection", "consecutive", "7", 7),
    ("eject_on_5xx", "ejection", "on_5xx", "false", False),
    ("eject_statuses", "ejection", "statuses", "502-504", "502-504"),
    ("base_ejection_s", "ejection", "base_s", "3.5", 3.5),
    ("max_ejection_s", "ejection", "max_s", "40.5", 40.5),
    ("max_ejection_share", "ejection", "max_share", "0.25", 0.25),
    ("replicas", "replicas", "count", "5", 5),
    ("max_replicas", "replicas", "max_count", "10", 10),
    ("runtime", "replicas", "runtime", "docker", "docker"),
    ("redis_url", "state", "redis_url", "redis://h:6379/1", "redis://h:6379/1"),
    ("redis_timeout_s", "state", "redis_timeout_s", "2.5", 2.5),
    ("leader_ttl_s", "state", "leader_ttl_s", "4.5", 4.5),
    ("instance_id", "state", "instance_id", "lb-a", "lb-a"),
    ("redis_sentinel", "state", "redis_sentinel", "h:26379,[::1]:1", "h:26379,[::1]:1"),
    ("redis_master_name", "state", "redis_master_name", "m2", "m2"),
    ("admin_token", "admin", "token", "s3cret", "s3cret"),
    ("log_level", "log", "level", "DEBUG", "DEBUG"),
    ("replica_host", "process", "host", "127.0.0.2", "127.0.0.2"),
    ("replica_env", "process", "env", "HTTP_PROXY", "HTTP_PROXY"),
    ("docker_image", "docker", "image", "other:1", "other:1"),
    ("docker_network", "docker", "network", "net2", "net2"),
    ("docker_deployment", "docker", "deployment", "blue", "blue"),
    ("docker_timeout_s", "docker", "timeout_s", "12.5", 12.5),
    ("backends", "static", "backends", "127.0.0.1:9001", "127.0.0.1:9001"),
    ("swarm_image", "swarm", "image", "other:2", "other:2"),
    ("swarm_network", "swarm", "network", "ov2", "ov2"),
    ("swarm_deployment", "swarm", "deployment", "green", "green"),
    ("swarm_timeout_s", "swarm", "timeout_s", "7.5", 7.5),
    ("swarm_constraints", "swarm", "constraints", "node.role==worker", "node.role==worker"),
    ("dns_name", "dns", "name", "tasks.web", "tasks.web"),
    ("dns_record", "dns", "record", "srv", "srv"),
    ("dns_port", "dns", "port", "8080", 8080),
    ("dns_interval_s", "dns", "interval_s", "2.5", 2.5),
    ("dns_server", "dns", "server", "127.0.0.1:5353", "127.0.0.1:5353"),
    ("dns_allow", "dns", "allow", "10.0.0.0/8,fd00::/8", "10.0.0.0/8,fd00::/8"),
]


def field_of(s: Settings, section: str, name: str) -> Any:
    holder = s.runtimes[section] if section in s.runtimes else getattr(s, section)
    return getattr(holder, name)


def toml_value(value: Any) -> str:
    return json.dumps(value)  # a TOML literal for the strings, numbers and booleans here


def test_every_key_users_know_maps_to_exactly_one_section_field() -> None:
    assert flat_keys() == {key: (section, name) for key, section, name, _, _ in KEYS}
    assert len(set(flat_keys().values())) == len(KEYS)


@pytest.mark.parametrize(("key", "section", "name", "raw", "value"), KEYS, ids=[k[0] for k in KEYS])
def test_flag_variable_and_file_set_the_same_field(
    tmp_path: Path, key: str, section: str, name: str, raw: str, value: Any
) -> None:
    env = {"LB_HASH_SEED": SEED} if key != "hash_seed" else {}
    flat = tmp_path / "flat.toml"
    flat.write_text(f"{key} = {toml_value(value)}\n")
    table = tmp_path / "table.toml"
    table.write_text(f"[{section}]\n{name} = {toml_value(value)}\n")
    ways = [
        load_settings([f"--{key.replace('_', '-')}", raw], env),
        load_settings([], {**env, f"LB_{key.upper()}": raw}),
        load_settings(["--config", str(flat)], env),
        load_settings(["--config", str(table)], env),
    ]
    unchanged = load_settings([], env).to_flat()
    for s in ways:
        assert field_of(s, section, name) == value
        changed = {k for k, v in s.to_flat().items() if v != unchanged[k]}
        assert changed == {key}


def test_flat_keys_round_trip() -> None:
    s = Settings.from_flat(**{key: value for key, *_, value in KEYS})
    assert Settings.from_flat(**s.to_flat()) == s
    assert Settings.from_flat(**Settings().to_flat()) == Settings()
    with pytest.raises(ConfigError, match="unknown settings: heartbeat_interval"):
        Settings.from_flat(heartbeat_interval=1.0)


def test_help_shows_one_group_per_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load_settings(["--help"], {})
    lines = capsys.readouterr().out.splitlines()
    titles = [*("http", "routing", "health", "retry", "ejection", "replicas", "state", "admin")]
    titles += ["log", *(f"runtime {name}" for name in RUNTIMES.names())]
    at = {title: lines.index(f"{title}:") for title in titles}  # ValueError: no such group
    assert list(at.values()) == sorted(at.values())  # in this order
    bounds = [*at.values(), len(lines)]
    for title, start, end in zip(titles, bounds, bounds[1:], strict=False):
        flags = {line.split()[0] for line in lines[start:end] if line.startswith("  --")}
        section = title.removeprefix("runtime ")
        keys = {key for key, (owner, _) in flat_keys().items() if owner == section}
        assert flags == {f"--{key.replace('_', '-')}" for key in keys}, title


def test_a_table_and_a_flat_key_may_not_both_set_one_field(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text("heartbeat_fails = 3\n[health]\nfails = 4\n")
    with pytest.raises(ConfigError, match="heartbeat_fails is set twice"):
        load_settings(["--config", str(config)], {})
    config.write_text("[health]\nheartbeat_fails = 4\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"health\.bogus, health\.heartbeat_fails"):
        load_settings(["--config", str(config)], {})


def test_an_unknown_runtime_is_a_config_error_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="runtime must be one of process, docker, static, swarm"):
        load_settings(["--runtime", "nomad"], {})
    with pytest.raises(ConfigError, match="process, docker, static, swarm"):
        RUNTIMES.entry("nomad")


def test_each_runtime_section_round_trips_and_builds_its_runtime() -> None:
    assert RUNTIMES.names() == ("process", "docker", "static", "swarm", "dns")
    for name, section in RUNTIMES.sections().items():
        s = load_settings(["--runtime", name], {})
        assert type(s.runtimes[name]) is section
        assert Settings.from_flat(**s.to_flat()).runtimes[name] == s.runtimes[name]
    s = load_settings(["--replica-host", "127.0.0.3", "--replica-env", "A, B"], {})
    assert s.runtime == "process" and s.runtime_settings == ProcessSettings("127.0.0.3", "A, B")
    assert s.runtime_settings.env_names == ("A", "B")
    process = RUNTIMES.build(s.runtime, s.runtime_settings)
    assert isinstance(process, ProcessRuntime)
    with pytest.raises(ConfigError, match="runtime static takes a StaticSettings"):
        RUNTIMES.build("static", s.runtime_settings)


@pytest.mark.parametrize("runtime", ["process", "docker", "static"])
async def test_backends_pick_the_static_runtime_whatever_runtime_says(runtime: str) -> None:
    s = load_settings(["--runtime", runtime], {"LB_BACKENDS": "127.0.0.1:9001, 127.0.0.1:9002"})
    assert s.runtime == "static"
    assert s.runtime_settings == StaticSettings("127.0.0.1:9001, 127.0.0.1:9002")
    static = RUNTIMES.build(s.runtime, s.runtime_settings)
    assert isinstance(static, StaticRuntime)
    assert (await static.spawn("a", "1")).address == "127.0.0.1:9001"
    assert load_settings(["--runtime", "static"], {}).runtime == "static"  # and by name


BACKENDS = "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003"


@pytest.mark.parametrize(
    ("argv", "env", "count"),
    [
        (["--backends", BACKENDS], {}, 3),
        ([], {"LB_BACKENDS": BACKENDS}, 3),
        (["--backends", BACKENDS, "--replicas=1"], {}, 1),
        ([], {"LB_BACKENDS": BACKENDS, "LB_REPLICAS": "2"}, 2),
        (["--runtime", "static"], {}, 3),  # no backends: the default count
    ],
)
def test_backends_set_the_replica_count_unless_it_is_given(
    argv: list[str], env: dict[str, str], count: int
) -> None:
    assert configured(argv, env).replicas.count == count


@dataclass(frozen=True)
class InProcessSettings:
    """Replica apps served in the test's own loop."""

    label: str = setting("", "inprocess_label", "a setting of the test runtime")


async def test_a_registered_runtime_gets_its_flags_and_is_built_from_its_section() -> None:
    built: list[InProcessSettings] = []

    def factory(section: InProcessSettings) -> InProcessRuntime:
        built.append(section)
        return InProcessRuntime()

    with RUNTIMES.registered(RuntimeEntry("inprocess", InProcessSettings, factory)):
        s = load_settings(["--runtime", "inprocess"], {"LB_INPROCESS_LABEL": "t"})
        assert (s.runtime, s.runtime_settings) == ("inprocess", InProcessSettings("t"))
        runtime = RUNTIMES.build(s.runtime, s.runtime_settings)
        assert isinstance(runtime, InProcessRuntime) and built == [InProcessSettings("t")]
        await runtime.close()
    with pytest.raises(ConfigError, match="must be one of process, docker, static, swarm"):
        load_settings(["--runtime", "inprocess"], {})
    with pytest.raises(SystemExit):  # its flag went with it
        load_settings(["--inprocess-label", "t"], {})


def test_the_liveness_ttl_is_one_formula_the_health_checks_use() -> None:
    health = HealthSettings(interval_s=0.5, timeout_s=0.75, fails=3, jitter=0.2)
    assert health.probe_timeout_s == 0.5  # a probe never outlasts the interval
    assert health.alive_ttl_s == pytest.approx(0.5 * 1.2 * 3 + 0.5)
    monitor = HealthMonitor(InMemoryStore(), None, None, health)  # type: ignore[arg-type]
    assert monitor.ttl_s == health.alive_ttl_s


def test_secrets_stay_out_of_the_repr() -> None:
    s = Settings.from_flat(
        admin_token="t0ken-x", hash_name="siphash", hash_seed=0xC0FFEE, redis_url="redis://:pw@h"
    )
    shown = repr(s)
    assert "t0ken-x" not in shown and str(0xC0FFEE) not in shown and "pw@" not in shown


def test_settings_import_no_engine() -> None:
    """Parsing the settings (and ``--help``) loads no engine: not the Docker SDK, aiohttp or
    redis; importing ``balancer.config`` loads not even asyncio."""
    code = (
        "import sys\n"
        "import balancer.config as c\n"
        "loaded = lambda: sorted({'asyncio', 'aiohttp', 'redis', 'docker'} & set(sys.modules))\n"
        "print(loaded())\n"
        "c.load_settings(['--runtime', 'docker'], {})\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "['asyncio']"]  # the process runtime's module
