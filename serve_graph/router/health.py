"""Which model deployments can serve right now, as the router sees it.

Serve's controller knows each deployment's running replicas; asking it per request would put a
controller round-trip on the hot path, so a background task polls it and the router reads a set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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


def read_serve_status(app_name: str) -> dict[str, tuple[str, int]]:
    """deployment name -> (status, RUNNING replicas), from Serve's controller (blocking call)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    out: dict[str, tuple[str, int]] = {}
    for name, dep in app.deployments.items():
        running = sum(n for state, n in dep.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")
        out[name] = (str(getattr(dep.status, "value", dep.status)), running)
    return out


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

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def refresh(self) -> None:
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

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self._period_s)

    @property
    def healthy(self) -> frozenset[str]:
        return frozenset(m for m, h in self.snapshot.items() if h.ready)

    @property
    def serving(self) -> bool:
        """True when every model that must always be up has a running replica."""
        return all(h.ready for h in self.snapshot.values() if h.required)
