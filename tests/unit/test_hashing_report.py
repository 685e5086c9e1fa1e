"""The hashing-quality report: the default algorithm meets the issue's targets, the reference rows
land where they must (so the report cannot silently compute nonsense), and the numpy mirror of
rendezvous picks exactly the owners ``lookup`` picks."""

from __future__ import annotations

import dataclasses
import json
import math
import random

import numpy as np
import pytest

from balancer.hashing import Member, RendezvousRing, RingSettings, make_hash
from balancer.hashing import report as hr
from balancer.hashing.rendezvous import U_SHIFT, mix64

KEYS = 200_000
TRIALS = 3
SIZES = (10, 50)
TARGET = 1.05  # the bound for peak-to-mean and for movement ÷ ideal


def row(settings: RingSettings) -> hr.Row:
    return next(r for r in hr.default_rows() if r.settings == settings)


DEFAULT = row(RingSettings())
RING_160 = row(RingSettings(algorithm="ring", points_per_weight=160))
ASSIGNMENT = row(RingSettings(algorithm="assignment"))


def sampling_sd(share: float, keys: int = KEYS) -> float:
    """sd of (observed count ÷ expected count) for a Binomial(keys, share) count:
    sqrt((1 - share) / (keys · share)). N=50, 200k keys: 1.56% for a member's load (share 1/50),
    1.58% for the keys moved by a join (share 1/51)."""
    return math.sqrt((1 - share) / (keys * share))


def bound(share: float) -> float:
    """The target plus 3 sampling sds: an algorithm exactly at the target fails with probability
    about 0.13% per observation (≈0.4% for the worst of 3 trials); a perfect one practically never
    (its worst member of 50 in 3 trials sits near +2.6 sd ≈ 1.04, under the bare 1.05 target only
    by chance, which is why the margin is needed)."""
    return TARGET + 3 * sampling_sd(share)


@pytest.fixture(scope="module")
def report() -> hr.Report:
    config = hr.Config(
        keys=KEYS, trials=TRIALS, sizes=SIZES, rows=(DEFAULT, RING_160, ASSIGNMENT), lookup_keys=0
    )
    return hr.run_report(config)


# --- the default algorithm meets the targets -------------------------------------------


@pytest.mark.parametrize("n", SIZES)
def test_default_peak_to_mean(report: hr.Report, n: int) -> None:
    peak = report.cell(DEFAULT.label, n).peak_to_mean
    assert peak is not None
    assert peak <= bound(1 / n), f"{DEFAULT.label} N={n}: peak/mean {peak:.4f}"


@pytest.mark.parametrize("n", SIZES)
def test_default_moves_about_the_ideal_share_and_only_the_changed_members_keys(
    report: hr.Report, n: int
) -> None:
    cell = report.cell(DEFAULT.label, n)
    assert cell.add_moved is not None and cell.remove_moved is not None
    # A balanced algorithm must move at least the ideal share, so far less means a broken report.
    assert 1 - 3 * sampling_sd(1 / (n + 1)) <= cell.add_moved <= bound(1 / (n + 1))
    assert 1 - 3 * sampling_sd(1 / n) <= cell.remove_moved <= bound(1 / n)
    assert cell.add_only_new is True
    assert cell.remove_only_removed is True


# --- reference rows: known behaviour, so the measurement itself is checked ---------------------


def test_ring_at_160_points_is_in_its_known_band(report: hr.Report) -> None:
    """160 points per member: each share has a relative sd of ~1/sqrt(160) ≈ 8%, so the largest
    of 50 is ~1.2 (measured 1.197 with 1M keys); sampling adds ~1.6%."""
    cell = report.cell(RING_160.label, 50)
    assert cell.peak_to_mean is not None
    assert 1.05 <= cell.peak_to_mean <= 1.35
    assert cell.add_only_new is True and cell.remove_only_removed is True


@pytest.mark.parametrize("n", SIZES)
def test_assignment_scheme_shows_its_known_imbalance(report: hr.Report, n: int) -> None:
    peak = report.cell(ASSIGNMENT.label, n).peak_to_mean
    assert peak is not None and peak > 2


def test_same_seed_same_numbers_and_the_seed_matters() -> None:
    def run(seed: int) -> list[float | None]:
        config = hr.Config(
            keys=3000, trials=2, sizes=(3, 7), seed=seed, rows=hr.default_rows(), lookup_keys=0
        )
        result = hr.run_report(config)
        return [c.peak_to_mean for row in result.cells.values() for c in row.values()]

    assert run(1) == run(1) != run(2)


def test_a_ring_that_cannot_be_built_shows_a_dash() -> None:
    broken = hr.Row("broken", dataclasses.replace(RingSettings(algorithm="assignment"), slots=0))
    config = hr.Config(keys=500, trials=1, sizes=(3,), rows=(broken,), lookup_keys=100)
    result = hr.run_report(config)
    cell = result.cell("broken", 3)
    assert cell.error is not None and cell.peak_to_mean is None and cell.lookup_ns is None
    assert "| broken | - |" in hr.render_markdown(result)


def test_command_line_json(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--keys", "2000", "--trials", "2", "--sizes", "3,5", "--algorithms", "ring,rendezvous"]
    argv += ["--lookup-keys", "1000", "--lookup-n", "20", "--json", "--quiet"]
    assert hr.main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["keys"], data["trials"], data["sizes"]) == (2000, 2, [3, 5])
    assert data["command"] == "python -m balancer.hashing.report " + " ".join(argv)
    labels = {r["label"] for r in data["rows"]}
    assert labels == {"ring, 16 points (HAProxy)", "ring, 160 points (ketama)", "rendezvous"}
    by_n = {(r["label"], r["n"]): r for r in data["rows"]}
    assert by_n[("rendezvous", 5)]["add_only_new"] is True
    assert by_n[("rendezvous", 20)]["lookup_ns"] > 0  # the extra N is timed only
    assert by_n[("rendezvous", 20)]["peak_to_mean"] is None


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(SystemExit):
        hr.parse_args(["--algorithms", "ring,nope"])


# --- the numpy mirror of rendezvous ----------------------------------------------------------


MIRROR_KEYS = hr.make_keys(7, "mirror", 20_000)


def rendezvous(weights: list[int]) -> RendezvousRing:
    ms = [Member(f"Server {i}", i, w) for i, w in enumerate(weights, start=1)]
    return RendezvousRing(ms, make_hash("xxh3"))


def mirror_owners(ring: RendezvousRing, keys: list[str]) -> list[str]:
    hashes = np.array([ring.key_hash(k) for k in keys], dtype=np.uint64)
    return [ring.members[i] for i in hr.rendezvous_owner_indexes(ring, hashes).tolist()]


def test_mirror_bits_equal_mix64_bit_for_bit() -> None:
    rng = random.Random(3)
    hashes = [0, 1, 2**63, 2**64 - 1, *(rng.getrandbits(64) for _ in range(20_000))]
    salts = [0, 2**64 - 1, *(rng.getrandbits(64) for _ in range(5))]
    got = hr.mirror_bits(np, np.array(hashes, dtype=np.uint64), np.array(salts, dtype=np.uint64))
    assert got.tolist() == [[mix64(h ^ s) >> U_SHIFT for s in salts] for h in hashes]


@pytest.mark.parametrize(
    "weights",
    [[1], [1] * 7, [1] * 50, [3] * 5, [2, 1, 1, 5, 1], [1, 2, 3, 4, 5, 6, 7, 8]],
    ids=["1", "7 equal", "50 equal", "5 equal at 3", "mixed 5", "mixed 8"],
)
def test_mirror_picks_exactly_the_lookup_owner(weights: list[int]) -> None:
    ring = rendezvous(weights)
    assert mirror_owners(ring, MIRROR_KEYS) == [ring.lookup(k) for k in MIRROR_KEYS]


def test_near_ties_go_to_the_scalar_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every key treated as a near tie, each owner comes from ``lookup_hash``: still exact."""
    monkeypatch.setattr(hr, "_NEAR_TIE", 1e300)
    ring = rendezvous([2, 1, 1, 5, 1])
    keys = MIRROR_KEYS[:2000]
    assert mirror_owners(ring, keys) == [ring.lookup(k) for k in keys]
