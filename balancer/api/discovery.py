"""Prometheus HTTP service discovery of the replicas: ``GET /lb/targets``.

Owns ``TargetsApi``. The answer is the format of Prometheus' ``http_sd_configs``
(https://prometheus.io/docs/prometheus/latest/http_sd/): a JSON array of target groups, here one
per member of the ring this instance routes on, in join order::

    [{"targets": ["172.18.0.5:5000"],
      "labels": {"job": "replicas", "replica": "Server 1",
                 "__meta_chlb_server_id": "1", "__meta_chlb_weight": "1",
                 "__meta_chlb_epoch": "4"}}, …]

The address is the member's ``address`` in the membership document (what the balancer forwards
to: a container's IP and port 5000 on the Docker network, a loopback port for local processes),
so a Prometheus on the same network scrapes ``/metrics`` of exactly the replicas in the ring,
and follows replacements and scaling within one refresh. ``replica`` is the name the balancer's
own metrics use, so both sides join on it. An empty ring answers ``[]``. Every instance answers
from its own snapshot; nothing here talks to the store.
Must not import: redis, docker.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from balancer.names import server_id
from balancer.state.view import RingView

JOB = "replicas"


class TargetsApi:
    """The discovery handler over one ring view."""

    def __init__(self, view: RingView, *, job: str = JOB) -> None:
        self._view = view
        self._job = job

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/lb/targets", self.targets)]

    def groups(self) -> list[dict[str, Any]]:
        """The target groups of the current ring."""
        membership = self._view.current.membership
        return [
            {
                "targets": [r.address],
                "labels": {
                    "job": self._job,
                    "replica": r.name,
                    "__meta_chlb_server_id": server_id(r.name),
                    "__meta_chlb_weight": str(r.weight),
                    "__meta_chlb_epoch": str(membership.epoch),
                },
            }
            for r in membership.replicas
        ]

    async def targets(self, request: web.Request) -> web.Response:
        return web.json_response(self.groups())
