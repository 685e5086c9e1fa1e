"""Every dashboard fits Grafana's dashboard schema, and the layout holds together.

Grafana cannot run here, so the schema is the Grafana Foundation SDK's model of it
(``tests.support.grafana_schema``), pinned in pyproject.toml to the Grafana release that
docker-compose.yml and the Swarm stack run. Broken copies of a real dashboard show that the
check fails where Grafana would reject or misread the JSON.
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.grafana_schema import panel_types, problems
from tests.unit.test_dashboards import load_dashboards, panels_of

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_IMAGES = [ROOT / "docker-compose.yml", ROOT / "infra" / "swarm" / "observability.yml"]


def layout_problems(board: dict[str, Any]) -> list[str]:
    """Grafana's schema leaves a panel's position optional (Grafana then stacks it somewhere);
    here every panel has one, inside the 24 columns, overlapping no other."""
    found: list[str] = []
    cells: dict[tuple[int, int], str] = {}
    for panel in [*board["panels"], *(p for r in board["panels"] for p in r.get("panels", []))]:
        where = f"panel {panel.get('title')!r}"
        pos = panel.get("gridPos")
        if not isinstance(pos, dict) or not {"h", "w", "x", "y"} <= set(pos):
            found.append(f"{where}: no gridPos with h, w, x and y")
            continue
        if pos["x"] + pos["w"] > 24:
            found.append(f"{where}: wider than the 24 columns")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    found.append(f"{where}: overlaps {cells[x, y]!r}")
                    break
                cells[x, y] = panel.get("title")
            else:
                continue
            break
    return found


def test_every_dashboard_fits_grafanas_schema() -> None:
    for name, board in load_dashboards().items():
        assert problems(board) == [], name
        assert layout_problems(board) == [], name
    assert {"timeseries", "state-timeline", "table", "row"} <= panel_types()


def test_the_schema_is_the_one_of_the_grafana_release_deployed() -> None:
    """The SDK's release names the Grafana version its schema is for: ``<build>!<version>``."""
    sdk = importlib.metadata.version("grafana-foundation-sdk").split("!")[-1]
    for path in GRAFANA_IMAGES:
        (image,) = re.findall(r"grafana/grafana:(\d+\.\d+)\.\d+", path.read_text())
        assert sdk.startswith(f"{image}."), f"{path.name} runs Grafana {image}, the schema is {sdk}"


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in panels_of(board) if p["title"] == title)


def _edit(title: str, change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda board: change(_panel(board, title))


BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown panel type": (
        _edit("Traffic per replica", lambda p: p.update(type="alertlist")),
        "unknown panel type 'alertlist'",
    ),
    "misspelt field": (
        _edit("Traffic per replica", lambda p: p.update(gridPosition=p.pop("gridPos"))),
        "gridPosition: not a field of the schema",
    ),
    "string for a number": (
        _edit("Traffic per replica", lambda p: p["gridPos"].update(w="12")),
        "gridPos.w: '12' is not a int",
    ),
    "number for a string": (
        _edit("Traffic per replica", lambda p: p.update(title=5)),
        "title: 5 is not a str",
    ),
    "required field missing": (
        _edit("Traffic per replica", lambda p: p["gridPos"].pop("h")),
        "gridPos.h: required by the schema, missing",
    ),
    "value outside an enum": (
        _edit("Traffic per replica", lambda p: p["options"]["legend"].update(placement="left")),
        "legend.placement: 'left' is not one of ['bottom', 'right']",
    ),
    "object where a list belongs": (
        _edit("Traffic per replica", lambda p: p.update(targets={"A": p["targets"][0]})),
        "targets",
    ),
    "panel option of another panel type": (
        _edit("Traffic per replica", lambda p: p["options"].update(showValue="auto")),
        "options.showValue: not a field of the schema",
    ),
    "query for an unknown data source": (
        _edit("Traffic per replica", lambda p: p["targets"][0]["datasource"].update(type="prom")),
        "query of unknown data source type 'prom'",
    ),
    "unknown variable type": (
        lambda board: board["templating"]["list"][0].update(type="dropdown"),
        "templating.list[0].type: 'dropdown' is not one of",
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_schema_check_fails_on_a_broken_copy(breakage: str) -> None:
    board = copy.deepcopy(load_dashboards()["chlb-traffic.json"])
    assert problems(board) == []
    change, expected = BREAKAGES[breakage]
    change(board)
    found = problems(board)
    assert any(expected in p for p in found), found


def test_the_layout_check_fails_on_a_missing_or_overlapping_panel() -> None:
    board = copy.deepcopy(load_dashboards()["chlb-cluster.json"])
    _panel(board, "Weights").pop("gridPos")
    assert layout_problems(board) == ["panel 'Weights': no gridPos with h, w, x and y"]
    assert problems(board) == []  # the schema allows it: Grafana would place it anywhere
    board = copy.deepcopy(load_dashboards()["chlb-cluster.json"])
    _panel(board, "Weights")["gridPos"]["x"] = 6
    found = layout_problems(board)
    assert "panel 'Weights': overlaps" in found[0] or "panel 'Scrape targets up'" in found[0]
    _panel(board, "Weights")["gridPos"].update(x=20)
    assert "panel 'Weights': wider than the 24 columns" in layout_problems(board)
