"""Which model deployments can serve right now, as the router sees it.

Serve's controller knows each deployment's running replicas; asking it per request would put a
controller round-trip on the hot path, so a background task polls it and the router reads a set.
A model whose call just failed is marked down at once (`mark_down`), so that following requests
skip it without waiting for the poll; the mark holds until a poll that started after it sees a
running replica again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from serve_graph.router.errors import FallbackReason

logger = logging.getLogger("serve_graph.health")


@dataclass(frozen=True)
class ModelHealth:
    deployment: str
    min_replicas: int
    running: int = 0
    status: str = "UNKNOWN"

    @property
    def ready(self) -> bool:
        return self.running > 0

    @property
    def required(self) -> bool:
        """Scale-to-zero models do not make the service unhealthy while they sleep."""
        return self.min_replicas > 0


def replica_counts(deployment_status: Any) -> dict[str, int]:
    """Replicas per state name ("RUNNING", "STARTING", ...) of one of Serve's deployment statuses."""
    return {str(getattr(s, "value", s)): n for s, n in deployment_status.replica_states.items()}


def read_serve_status(app_name: str) -> dict[str, tuple[str, int]]:
    """deployment name -> (status, RUNNING replicas), from Serve's controller (blocking call)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    return {
        name: (str(getattr(dep.status, "value", dep.status)), replica_counts(dep).get("RUNNING", 0))
        for name, dep in app.deployments.items()
    }


class HealthTracker:
    """Keeps `snapshot` fresh by polling `probe` every `period_s` seconds."""

    def __init__(
        self,
        deployments: Mapping[str, tuple[str, int]],
        probe: Callable[[], dict[str, tuple[str, int]]],
        period_s: float = 2.0,
    ) -> None:
        # model id -> (deployment name, min_replicas)
        self._deployments = dict(deployments)
        self._probe = probe
        self._period_s = period_s
        self.snapshot: dict[str, ModelHealth] = {
            m: ModelHealth(deployment=d, min_replicas=mn) for m, (d, mn) in self._deployments.items()
        }
        self._task: asyncio.Task[None] | None = None
        self._polls = 0  # polls started so far
        self._marks: dict[str, tuple[FallbackReason, int]] = {}  # model -> (reason, polls started before it)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def refresh(self) -> None:
        self._polls += 1
        poll = self._polls
        try:
            status = await asyncio.to_thread(self._probe)
        except Exception as e:  # a controller hiccup must not take the router down
            logger.warning("serve status poll failed: %s", e)
            return
        self.snapshot = {
            m: ModelHealth(deployment=d, min_replicas=mn, status=status.get(d, ("MISSING", 0))[0],
                           running=status.get(d, ("MISSING", 0))[1])
            for m, (d, mn) in self._deployments.items()
        }
        for m, (_, marked_at) in list(self._marks.items()):
            if poll > marked_at and self.snapshot[m].ready:
                del self._marks[m]

    def mark_down(self, model: str, reason: FallbackReason) -> None:
        """A call to `model` just failed: treat it as down until a later poll confirms it."""
        if model in self._deployments:
            self._marks[model] = (reason, self._polls)

    def marked(self, model: str) -> FallbackReason | None:
        mark = self._marks.get(model)
        return mark[0] if mark else None

    def min_replicas(self, model: str) -> int:
        return self._deployments[model][1]

    def ready(self, model: str) -> bool:
        h = self.snapshot.get(model)
        return bool(h and h.ready)

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._period_s)

    @property
    def healthy(self) -> frozenset[str]:
        """Models with a running replica at the last poll and no failure marked since."""
        return frozenset(m for m, h in self.snapshot.items() if h.ready and m not in self._marks)

    @property
    def serving(self) -> bool:
        """True when every model that must always be up has a running replica."""
        return all(h.ready for h in self.snapshot.values() if h.required)
