"""A real ``prometheus`` process on the repository's own configuration, for the live tests.

Owns ``render_config`` (infra/prometheus/prometheus.yml with only its ``host:port`` strings
pointed at this test's balancers, plus its rule files beside it), ``PrometheusProcess`` (started
on a free loopback port with its TSDB in the test's directory, stopped by its pid) and
``PromApi`` (the HTTP API: queries, targets, alerts, rules).

The binary: ``$PROMETHEUS``, else ``prometheus`` on the PATH. ``.ci/run`` takes it out of the
Debian package and sets ``CHLB_REQUIRE_PROMETHEUS=1``, under which a missing binary fails the
test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "infra" / "prometheus"
CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_DIR = PROMETHEUS_DIR / "rules"
DASHBOARDS = REPO / "grafana" / "dashboards"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources"
# The balancers' addresses in the repository's config (docker-compose service names).
COMPOSE_HOSTS = ("lb1:5555", "lb2:5555")
REQUIRE_ENV = "CHLB_REQUIRE_PROMETHEUS"

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def prometheus_binary() -> str | None:
    """``$PROMETHEUS`` if set (it must then exist), else ``prometheus`` on the PATH."""
    named = os.environ.get("PROMETHEUS")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("prometheus")


def duration_s(text: str) -> float:
    """A Prometheus duration (``5s``, ``1m30s``, ``250ms``) in seconds.

    Raises:
        ValueError: not a duration.
    """
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


@dataclass(frozen=True)
class Intervals:
    """The repository config's global timing, in seconds."""

    scrape_s: float
    evaluation_s: float
    scrape_timeout_s: float
    sd_refresh_s: float  # the longest http_sd refresh_interval


def intervals(config_text: str) -> Intervals:
    """The timing of a Prometheus config (Prometheus' defaults where it sets none)."""
    doc = yaml.safe_load(config_text)
    glob = doc.get("global") or {}
    scrape = duration_s(glob.get("scrape_interval", "1m"))
    # Prometheus caps the default 10 s timeout at the scrape interval.
    timeout = duration_s(glob["scrape_timeout"]) if "scrape_timeout" in glob else min(10, scrape)
    refresh = [
        duration_s(sd.get("refresh_interval", "1m"))
        for job in doc.get("scrape_configs", [])
        for sd in job.get("http_sd_configs", [])
    ]
    return Intervals(
        scrape_s=scrape,
        evaluation_s=duration_s(glob.get("evaluation_interval", "1m")),
        scrape_timeout_s=timeout,
        sd_refresh_s=max(refresh, default=0.0),
    )


def render_config(dest_dir: Path, hosts: Mapping[str, str]) -> Path:
    """The repository's prometheus.yml, written to ``dest_dir`` with each ``host:port`` of
    ``hosts`` (every one must occur) replaced, and nothing else changed; its rule files are
    copied beside it (``rule_files`` are relative to the config's directory).

    Raises:
        AssertionError: a host of ``hosts`` is not in the config.
    """
    text = CONFIG.read_text()
    for old, new in hosts.items():
        assert old in text, f"{old} is not in {CONFIG}: the test's host map is stale"
        text = text.replace(old, new)
    dest_dir.mkdir(parents=True, exist_ok=True)
    rendered = dest_dir / "prometheus.yml"
    rendered.write_text(text)
    if yaml.safe_load(text).get("rule_files") and RULES_DIR.is_dir():
        shutil.copytree(RULES_DIR, dest_dir / "rules")
    return rendered


def alert_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule in infra/prometheus/rules, by alert name."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(RULES_DIR.glob("*.y*ml")) if RULES_DIR.is_dir() else []:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            found.update({r["alert"]: r for r in group.get("rules", []) if "alert" in r})
    return found


class PrometheusProcess:
    """``prometheus`` on 127.0.0.1:<free port>, TSDB and log in ``workdir``."""

    def __init__(self, binary: str, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.time()

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Poll ``/-/ready``; the seconds it took.

        Raises:
            AssertionError: it exited, or was not ready in time (with its log's tail).
        """
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                opener.open(f"{self.url}/-/ready", timeout=1.0) as resp,
            ):
                if resp.status == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout_s}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM by pid, SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout_s)

    def tail(self, lines: int = 30) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return "(no log)"


Series = dict[str, Any]  # one element of a vector or matrix result: {"metric": …, "value(s)": …}


class PromApi:
    """Prometheus' HTTP API (``/api/v1``) over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self._session = session
        self._url = url

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """The ``data`` of a successful answer.

        Raises:
            AssertionError: the API answered an error (its message included).
        """
        async with self._session.get(f"{self._url}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        assert body.get("status") == "success", f"{path} {dict(params or {})}: {body}"
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> list[Series]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = await self.get("query", params)
        result: list[Series] = data["result"] if data["resultType"] in ("vector", "matrix") else []
        return result

    async def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s}"}
        result: list[Series] = (await self.get("query_range", params))["result"]
        return result

    async def scalar(self, expr: str, at: float | None = None) -> float | None:
        """The value of a one-element vector result, None when empty."""
        result = await self.query(expr, at)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    async def active_targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = (await self.get("targets", {"state": "active"}))[
            "activeTargets"
        ]
        return targets

    async def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = (await self.get("alerts"))["alerts"]
        return alerts

    async def rules(self) -> list[dict[str, Any]]:
        return [r for g in (await self.get("rules"))["groups"] for r in g["rules"]]
