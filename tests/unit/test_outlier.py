"""Outlier ejection logic with a fake clock: thresholds, back-off growth and cap, forgiveness,
the max ejected share, resets on success, and membership changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from balancer.config import Settings, load_settings
from balancer.errors import ConfigError
from balancer.http.frontend import ejection_policy
from balancer.http.outlier import EjectionPolicy, OutlierDetector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def detector(
    members: tuple[str, ...] = ("a", "b", "c", "d"), **policy: object
) -> tuple[OutlierDetector, Clock]:
    clock = Clock()
    det = OutlierDetector(EjectionPolicy(**policy), clock)  # type: ignore[arg-type]
    det.retain(members)
    return det, clock


def fail(det: OutlierDetector, name: str, times: int) -> list[float]:
    return [det.failure(name) for _ in range(times)]


def test_ejects_after_the_threshold_of_failures_in_a_row() -> None:
    det, clock = detector(consecutive=3, base_s=2.0)
    assert fail(det, "a", 2) == [0.0, 0.0]
    assert not det.is_ejected("a") and det.failing == {"a": 2}
    assert det.failure("a") == 2.0
    assert det.is_ejected("a") and det.ejected_now() == ["a"]
    assert det.failing == {}  # the count starts over once ejected
    clock.now += 1.999
    assert det.is_ejected("a")
    clock.now += 0.001
    assert not det.is_ejected("a")  # routing ignores it at once; the sweep tidies up
    assert det.ejected_now() == []
    assert det.sweep() == ["a"] and det.ejected == {}


def test_a_success_resets_the_count() -> None:
    det, _ = detector(consecutive=3)
    fail(det, "a", 2)
    det.success("a")
    assert det.failing == {}
    assert fail(det, "a", 2) == [0.0, 0.0]
    assert not det.is_ejected("a")
    assert det.failure("a") > 0


def test_failures_while_ejected_are_not_counted() -> None:
    det, clock = detector(consecutive=2, base_s=5.0)
    fail(det, "a", 2)
    assert fail(det, "a", 10) == [0.0] * 10  # requests that still reached it (fallback)
    assert det.failing == {}
    clock.now += 5.0
    assert det.failure("a") == 0.0  # a fresh run of failures is needed again
    assert det.failure("a") == 10.0  # the second ejection: 2 × base


def test_back_off_grows_with_each_ejection_up_to_the_cap() -> None:
    det, clock = detector(consecutive=1, base_s=2.0, max_s=7.0)
    lengths = []
    for _ in range(6):
        length = det.failure("a")
        lengths.append(length)
        clock.now += length  # ends exactly now: fails again at once
    assert lengths == [2.0, 4.0, 6.0, 7.0, 7.0, 7.0]
    assert det.times_ejected("a") == 6


def test_multiplier_is_forgiven_one_step_per_max_s_unejected() -> None:
    det, clock = detector(consecutive=1, base_s=1.0, max_s=10.0)
    for _ in range(3):
        clock.now += det.failure("a")  # 1, 2, 3 s; ends now
    assert det.times_ejected("a") == 3
    clock.now += 10.0  # one max_s healthy: the next ejection is the 3rd again, not the 4th
    assert det.failure("a") == 3.0
    clock.now += 3.0 + 35.0  # three more max_s: back to the first
    assert det.failure("a") == 1.0


def test_never_more_than_the_max_share_ejected() -> None:
    det, clock = detector(("a", "b", "c", "d", "e"), consecutive=1, base_s=4.0, max_share=0.5)
    assert det.failure("a") and det.failure("b")  # floor(0.5 × 5) = 2
    assert det.failure("c") == 0.0
    assert det.ejected_now() == ["a", "b"]
    assert det.failing == {"c": 1}  # still counted: ejected as soon as there is room
    clock.now += 4.0  # a and b end
    assert det.failure("c") == 4.0
    assert det.ejected_now() == ["c"]


@pytest.mark.parametrize(
    ("members", "share", "most"),
    [(1, 0.5, 0), (2, 0.5, 1), (3, 0.5, 1), (4, 0.5, 2), (100, 0.29, 29), (3, 1.0, 3), (3, 0.0, 0)],
)
def test_max_share_is_floor_of_share_times_members(members: int, share: float, most: int) -> None:
    names = tuple(f"r{i}" for i in range(members))
    det, _ = detector(names, consecutive=1, max_share=share)
    for name in names:
        det.failure(name)
    assert len(det.ejected_now()) == most


def test_off_when_consecutive_is_zero() -> None:
    det, _ = detector(consecutive=0)
    assert fail(det, "a", 100) == [0.0] * 100
    assert det.failing == {} and det.ejected == {}


def test_only_members_count_and_leavers_are_forgotten() -> None:
    det, clock = detector(("a", "b", "c"), consecutive=1, base_s=3.0, max_share=1.0)
    assert det.failure("stranger") == 0.0  # a replica that left the ring: nothing kept
    assert det.failing == {}
    assert det.failure("a") and det.failure("b")
    assert det.retain(["a", "c"]) == ["b"]  # b left the ring (or was drained)
    assert det.ejected_now() == ["a"]
    assert det.times_ejected("b") == 0
    clock.now += 3.0
    assert det.retain(["a", "b", "c"]) == []  # b is back: a fresh start
    assert det.failure("b") == 3.0


def test_sweep_removes_only_ended_ejections() -> None:
    det, clock = detector(consecutive=1, base_s=1.0, max_s=10.0, max_share=1.0)
    det.failure("a")
    clock.now += 1.0
    det.failure("b")  # 1 s from now
    assert det.sweep() == ["a"]
    assert list(det.ejected) == ["b"]
    assert det.sweep() == []


def test_ejection_settings_from_a_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    config.write_text("eject_on_5xx = false\neject_consecutive = 0\n")
    s = load_settings(["--config", str(config)], {})
    assert (s.ejection.on_5xx, s.ejection.consecutive) == (False, 0)


def test_ejection_settings_flags_env_and_validation() -> None:
    s = load_settings(
        ["--eject-consecutive", "3", "--eject-on-5xx", "off", "--base-ejection-s", "0.5"],
        {"LB_MAX_EJECTION_S": "4", "LB_MAX_EJECTION_SHARE": "0.25"},
    )
    assert ejection_policy(s.ejection) == EjectionPolicy(
        consecutive=3, base_s=0.5, max_s=4.0, max_share=0.25, statuses=frozenset()
    )
    assert ejection_policy(Settings().ejection) == EjectionPolicy()  # the documented defaults
    assert EjectionPolicy().statuses == frozenset(range(500, 600))  # every 5xx, as Envoy
    assert load_settings(["--eject-on-5xx", "TRUE"], {}).ejection.on_5xx is True
    gateway = load_settings([], {"LB_EJECT_STATUSES": "502-504"})
    assert ejection_policy(gateway.ejection).statuses == frozenset({502, 503, 504})
    for argv, message in [
        (["--eject-on-5xx", "maybe"], "eject_on_5xx must be true or false"),
        (["--eject-consecutive", "-1"], "eject_consecutive must be at least 0"),
        (["--max-ejection-share", "1.5"], "max_ejection_share must be in [0, 1]"),
        (["--base-ejection-s", "0"], "base_ejection_s must be positive"),
        (["--base-ejection-s", "40"], "max_ejection_s must be at least base_ejection_s"),
        (["--eject-statuses", "404,500"], "eject_statuses must be a comma list of statuses"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(argv, {})


def test_replicas_held_down_by_the_health_checks_stay_out_until_released() -> None:
    det, clock = detector(max_share=0.5)
    assert det.hold_down({"a", "ghost"}) == []  # a non-member is ignored
    clock.now += 1000.0  # no end of its own: only a release ends it
    assert det.sweep() == [] and det.is_ejected("a")
    fail(det, "b", 5)  # a timed ejection alongside: the share allows two
    assert det.ejected_now() == ["a", "b"]
    assert det.hold_down({"a", "c"}) == []  # no room left for c
    assert not det.is_ejected("c")
    assert det.hold_down({"c"}) == ["a"]  # a is UP again: released; now c fits
    assert det.ejected_now() == ["b", "c"]
    clock.now += 10.0
    assert det.sweep() == ["b"] and det.ejected_now() == ["c"]  # b's time ended, c's did not
