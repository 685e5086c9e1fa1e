"""``load_settings``: precedence, coercion and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.hashing.hashes import DEFAULT_SEED


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lb.toml"
    path.write_text(text)
    return str(path)


def port_replicas_algorithm_slots(s: Settings) -> tuple[int, int, str, int]:
    return (s.http.port, s.replicas.count, s.routing.algorithm, s.routing.slots)


def test_defaults() -> None:
    s = load_settings([], {})
    assert s == Settings()
    assert (s.http.host, s.http.port) == ("127.0.0.1", 5555)
    assert (s.replicas.count, s.replicas.max_count) == (3, 64)
    r = s.routing
    assert (r.algorithm, r.hash_name, r.hash_seed) == ("slots", "xxh3", DEFAULT_SEED)
    assert (r.slots, r.vnodes, r.probing) == (512, None, "linear")


def test_precedence_file_env_cli(tmp_path: Path) -> None:
    config = write(tmp_path, 'port = 6000\nreplicas = 4\nalgorithm = "assignment"\nslots = 256\n')
    env = {"LB_PORT": "7000", "LB_REPLICAS": "5"}
    cli = ["--config", config, "--port", "8000"]

    s = load_settings(["--config", config], {})
    assert port_replicas_algorithm_slots(s) == (6000, 4, "assignment", 256)

    s = load_settings(["--config", config], env)
    assert port_replicas_algorithm_slots(s) == (7000, 5, "assignment", 256)

    s = load_settings(cli, env)
    assert port_replicas_algorithm_slots(s) == (8000, 5, "assignment", 256)

    s = load_settings(["--port", "8000"], env)  # no file: defaults under env under flags
    assert port_replicas_algorithm_slots(s) == (8000, 5, "slots", 512)


def test_config_path_from_env(tmp_path: Path) -> None:
    config = write(tmp_path, "port = 6001\n")
    assert load_settings([], {"LB_CONFIG": config}).http.port == 6001
    other = tmp_path / "other.toml"
    other.write_text("port = 6002\n")
    # --config wins over LB_CONFIG.
    assert load_settings(["--config", str(other)], {"LB_CONFIG": config}).http.port == 6002


def test_flags_use_dashes_and_every_type_is_coerced() -> None:
    s = load_settings(
        [
            "--heartbeat-interval-s",
            "0.25",
            "--hash-seed",
            "0x10",
            "--points-per-weight=40",
            "--key-source",
            "ip",
            "--vnodes",
            "4",
            "--hash-name",
            "blake2b",
            "--probing",
            "quadratic",
        ],
        {"LB_UPSTREAM_TIMEOUT_S": "2.5", "LB_LOG_LEVEL": "DEBUG"},
    )
    assert s.health.interval_s == 0.25
    assert s.routing.hash_seed == 16
    assert s.routing.points_per_weight == 40
    assert s.http.key_source == "ip"
    assert s.routing.vnodes == 4
    assert s.ring.vnodes == 4
    assert (s.routing.hash_name, s.routing.probing) == ("blake2b", "quadratic")
    assert s.http.upstream_timeout_s == 2.5
    assert s.log.level == "DEBUG"


def test_toml_values_are_coerced(tmp_path: Path) -> None:
    config = write(tmp_path, 'heartbeat_fails = 5\nspawn_timeout_s = 3\nhost = "0.0.0.0"\n')
    s = load_settings(["--config", config], {})
    assert s.health.fails == 5
    assert s.health.spawn_timeout_s == 3.0
    assert isinstance(s.health.spawn_timeout_s, float)
    assert s.http.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        ([], {"LB_PORT": "abc"}),
        (["--replicas", "2.5"], {}),
        (["--heartbeat-interval-s", "fast"], {}),
        ([], {"LB_HASH_SEED": "seed"}),
        ([], {"LB_VNODES": "nine"}),
    ],
)
def test_type_errors_raise_config_error(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(argv, env)


@pytest.mark.parametrize("text", ["port = 1.5\n", "port = true\n", "retries = [1]\n"])
def test_toml_type_errors_raise_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(["--config", write(tmp_path, text)], {})


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--algorithm", "jump"], {}),
        ([], {"LB_HASH_NAME": "md5"}),
        (["--probing=cubic"], {}),
        ([], {"LB_RUNTIME": "docker-swarm"}),
        (["--algorithm", "Ring"], {}),  # choices are case-sensitive
    ],
)
def test_literal_choices_are_validated(argv: list[str], env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="must be one of"):
        load_settings(argv, env)


def test_literal_choices_in_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="algorithm"):
        load_settings(["--config", write(tmp_path, "algorithm = 1\n")], {})
    with pytest.raises(ConfigError, match="hash_name"):
        load_settings(["--config", write(tmp_path, 'hash_name = "sha1"\n')], {})


def test_unknown_file_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        load_settings(["--config", write(tmp_path, "port = 6000\nbogus = 1\n")], {})
    with pytest.raises(ConfigError, match="config"):  # --config itself is not a setting
        load_settings(["--config", write(tmp_path, 'config = "x.toml"\n')], {})


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(["--config", str(tmp_path / "missing.toml")], {})
    with pytest.raises(ConfigError):
        load_settings(["--config", write(tmp_path, "port = = 1\n")], {})


def test_unknown_env_vars_are_ignored() -> None:
    assert load_settings([], {"LB_NOT_A_SETTING": "1", "PORT": "1"}) == Settings()


@pytest.mark.parametrize(("slots", "vnodes"), [(512, 9), (1024, 10), (1000, 9), (2, 1), (1, 1)])
def test_vnodes_default_is_log2_slots(slots: int, vnodes: int) -> None:
    s = load_settings(["--slots", str(slots)], {})
    assert s.routing.vnodes is None
    assert s.ring.vnodes == vnodes
    assert s.ring.slots == slots


def test_ring_settings_carry_the_routing_fields() -> None:
    s = load_settings(
        ["--algorithm", "assignment", "--hash-seed", "7", "--points-per-weight", "3"], {}
    )
    ring = s.ring
    assert (ring.algorithm, ring.hash_seed, ring.points_per_weight) == ("assignment", 7, 3)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port=65536"],
        ["--port=-1"],
        ["--replicas=65"],  # > default max_replicas 64
        ["--replicas=5", "--max-replicas=4"],
        ["--replicas=-1"],
        ["--max-replicas=0", "--replicas=0"],
        ["--slots=0"],
        ["--points-per-weight=0"],
        ["--heartbeat-fails=0"],
        ["--vnodes=0"],
        ["--retries=-1"],
        ["--heartbeat-interval-s=0"],
        ["--upstream-timeout-s=-1"],
        ["--spawn-timeout-s=nan"],
    ],
)
def test_invalid_ranges_raise_config_error(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(argv, {})


@pytest.mark.parametrize(
    "argv", [["--port=0"], ["--port=65535"], ["--replicas=64"], ["--replicas=0"], ["--retries=0"]]
)
def test_range_edges_are_accepted(argv: list[str]) -> None:
    load_settings(argv, {})


def test_invalid_range_from_file_and_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(["--config", write(tmp_path, "port = 70000\n")], {})
    with pytest.raises(ConfigError, match="replicas"):
        load_settings([], {"LB_REPLICAS": "9", "LB_MAX_REPLICAS": "8"})


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_hash_seed_out_of_range_is_a_config_error(seed: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(["--hash-seed", seed], {})


def test_log_level_is_validated() -> None:
    with pytest.raises(ConfigError):
        load_settings([], {"LB_LOG_LEVEL": "verbose"})


def test_status_sets_are_parsed_once_into_sets(tmp_path: Path) -> None:
    s = load_settings(
        ["--eject-statuses", "502-504, 500", "--config", write(tmp_path, 'health_status = "200"')],
        {"LB_HEALTH_STATUS": "200-299,304", "LB_HEALTH_PATH": "/ready?deep=1"},
    )
    assert s.ejection.status_set == frozenset({500, 502, 503, 504})
    assert s.health.status_set == frozenset(range(200, 300)) | {304}
    assert s.health.path == "/ready?deep=1"
    defaults = Settings()
    assert defaults.ejection.status_set == frozenset(range(500, 600))
    assert (defaults.health.path, defaults.health.status_set) == ("/heartbeat", frozenset({200}))
    assert load_settings(["--retry-on", "gateway-error,5xx"], {}).retry.on_set == {
        "gateway-error",
        "5xx",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--eject-statuses", ""],
        ["--eject-statuses", "499"],  # ejection counts 5xx answers only
        ["--eject-statuses", "600"],
        ["--eject-statuses", "5xx"],
        ["--eject-statuses", "504-502"],
        ["--eject-statuses", "500-"],
        ["--eject-statuses", "500,,501"],
        ["--health-status", "199"],
        ["--health-status", "200-600"],
        ["--health-status", "ok"],
        ["--health-path", "heartbeat"],
        ["--health-path", ""],
        ["--health-path", "/heart beat"],
        ["--health-path", "/a\r\nX-Injected: 1"],
        ["--health-path", "/a#frag"],
        ["--health-path", "/caf\u00e9"],
    ],
)
def test_malformed_status_sets_and_health_paths_are_rejected(argv: list[str]) -> None:
    with pytest.raises(ConfigError):
        load_settings(argv, {})


# --- secrets from files (LB_<KEY>_FILE: Docker and Kubernetes secrets mounted as files) --------


def test_a_secret_is_read_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")  # the newline `echo` leaves is not part of it
    settings = load_settings([], {"LB_ADMIN_TOKEN_FILE": str(token_file)})
    assert settings.admin.token == "s3cret-token"
    url_file = tmp_path / "url"
    url_file.write_text("redis://:pw@h:6379/0")
    assert load_settings([], {"LB_REDIS_URL_FILE": str(url_file)}).state.redis_url.endswith("/0")


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file")
    with pytest.raises(ConfigError, match="LB_ADMIN_TOKEN or LB_ADMIN_TOKEN_FILE"):
        load_settings([], {"LB_ADMIN_TOKEN": "x", "LB_ADMIN_TOKEN_FILE": str(token_file)})


def test_an_unreadable_secret_file_is_a_config_error_that_shows_nothing_of_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="LB_ADMIN_TOKEN_FILE: cannot read"):
        load_settings([], {"LB_ADMIN_TOKEN_FILE": str(tmp_path / "missing")})
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe-xyzzy-hidden")
    with pytest.raises(ConfigError) as caught:
        load_settings([], {"LB_ADMIN_TOKEN_FILE": str(binary)})
    assert "xyzzy" not in str(caught.value) and caught.value.__cause__ is None


def test_only_secrets_are_read_from_files(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    port_file.write_text("6000")
    assert load_settings([], {"LB_PORT_FILE": str(port_file)}).http.port == 5555
