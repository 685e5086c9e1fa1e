"""Every chart the analysis commands draw, with matplotlib's Agg backend, to PNG files only.

Owns the figures: ``Figure`` objects rendered by ``FigureCanvasAgg`` and written with
``savefig``; pyplot is never imported (no GUI, no global figure state, never ``show()``).
Must not import anything from ``balancer`` or ``server``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def _figure(width: float = 8.0, height: float = 4.8) -> Figure:
    """A new figure on the Agg canvas. matplotlib is imported here, on the first plot, so the
    balancer and replica images (which install the package without the ``analysis`` extra)
    never need it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - the dev install has it
        message = "the analysis plots need matplotlib: pip install 'chlb[analysis]'"
        raise SystemExit(message) from exc
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def bars_per_replica(
    path: Path, names: Sequence[str], counts: Sequence[int], mean: float, title: str
) -> Path:
    """A-1: requests per replica, with the mean as a line."""
    fig = _figure()
    ax = fig.add_subplot()
    bars = ax.bar(range(len(names)), counts, color="tab:blue", zorder=2)
    ax.bar_label(bars, labels=[str(c) for c in counts], padding=2)
    ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.0f}", zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
    ax.set_xlabel("replica")
    ax.set_ylabel("requests handled")
    ax.set_title(title)
    ax.set_ylim(0, max([*counts, mean, 1]) * 1.15)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend()
    return _save(fig, path)


@dataclass(frozen=True)
class LoadSeries:
    """One A-2 line: for each N, the mean/stdev/min/max of requests per replica."""

    label: str
    ns: Sequence[int]
    means: Sequence[float]
    stdevs: Sequence[float]
    mins: Sequence[int]
    maxs: Sequence[int]


def load_vs_n(path: Path, series: Sequence[LoadSeries], requests: int, title: str) -> Path:
    """A-2: per series, the mean load per replica with min..max whiskers and a ±stdev band,
    against the ideal ``requests / N`` (top); the busiest and the idlest replica relative to
    the mean (bottom), where the spread shows even when it is small against the mean."""
    fig = _figure(height=6.4)
    ax, rel = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    ns_all = sorted({n for line in series for n in line.ns})
    ax.plot(
        ns_all,
        [requests / n for n in ns_all],
        color="0.55",
        linewidth=5,
        alpha=0.5,
        label=f"ideal {requests}/N",
        zorder=1,
    )
    for k, line in enumerate(series):
        color = colors[k % len(colors)]
        ns, means = line.ns, line.means
        low = [m - lo for m, lo in zip(means, line.mins, strict=True)]
        high = [hi - m for m, hi in zip(means, line.maxs, strict=True)]
        ax.errorbar(
            ns,
            means,
            yerr=[low, high],
            color=color,
            marker="o",
            capsize=5,
            label=f"{line.label}: mean, whiskers min..max",
            zorder=3,
        )
        ax.fill_between(
            ns,
            [m - sd for m, sd in zip(means, line.stdevs, strict=True)],
            [m + sd for m, sd in zip(means, line.stdevs, strict=True)],
            color=color,
            alpha=0.18,
            label=f"{line.label}: ±1 stdev",
            zorder=2,
        )
        rel.plot(
            ns,
            [hi / m if m else 0 for m, hi in zip(means, line.maxs, strict=True)],
            color=color,
            marker="^",
            label=f"{line.label}: max/mean",
        )
        rel.plot(
            ns,
            [lo / m if m else 0 for m, lo in zip(means, line.mins, strict=True)],
            color=color,
            marker="v",
            linestyle="--",
            label=f"{line.label}: min/mean",
        )
    rel.axhline(1.0, color="0.55", linewidth=1)
    ax.set_ylabel("requests per replica")
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    rel.set_xticks(ns_all)
    rel.set_xlabel("N (replicas)")
    rel.set_ylabel("relative to mean")
    rel.set_ylim(bottom=0)
    rel.grid(alpha=0.3)
    rel.legend(fontsize="x-small", ncols=2)
    return _save(fig, path)


def grouped_bars(
    path: Path, names: Sequence[str], groups: Sequence[tuple[str, Sequence[int]]], title: str
) -> Path:
    """A-4 / A-1: requests per replica, one bar per group (algorithm) side by side."""
    fig = _figure()
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    for k, (label, counts) in enumerate(groups):
        xs = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, counts, width, label=label, zorder=2)
        ax.bar_label(bars, labels=[str(c) for c in counts], padding=2, fontsize="small")
    total = max((sum(c) for _, c in groups), default=0)
    if names:
        ax.axhline(total / len(names), color="black", linestyle=":", label="ideal (mean)")
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("replica")
    ax.set_ylabel("requests handled")
    ax.set_title(title)
    ax.set_ylim(0, max([max(c, default=0) for _, c in groups] + [1]) * 1.15)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend()
    return _save(fig, path)


def recovery_timeline(
    path: Path,
    times: Sequence[float],
    ns: Sequence[float],
    victim_in: Sequence[bool],
    recovered_at: float | None,
    target: int,
    title: str,
) -> Path:
    """A-3: N from each ``/rep`` poll over time (0 = the kill), the kill and the recovery
    marked; where the victim was still listed is shaded."""
    fig = _figure(height=4.2)
    ax = fig.add_subplot()
    ax.step(times, ns, where="post", marker=".", color="tab:blue", label="N from GET /rep")
    ax.axvline(0.0, color="tab:red", linestyle="--", label="replica killed")
    if recovered_at is not None:
        ax.axvline(
            recovered_at,
            color="tab:green",
            linestyle="--",
            label=f"victim gone, N={target} again ({recovered_at:.2f} s)",
        )
    listed = [t for t, v in zip(times, victim_in, strict=True) if v and t >= 0]
    if listed:
        ax.axvspan(0.0, max(listed), color="tab:red", alpha=0.08, label="victim still listed")
    ax.set_xlabel("seconds since the kill")
    ax.set_ylabel("N")
    top = int(max([n for n in ns if not math.isnan(n)] + [target]))
    ax.set_ylim(0, top + 1)
    ax.set_yticks(range(top + 2))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)
