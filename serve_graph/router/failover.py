"""Failover before the first byte, the pure part: which candidate a request calls next.

A request walks its route's candidates in order (`Decision.candidates`). Before each call the
router asks what Serve knows about each remaining candidate (`CandidateState`: a live replica, or
why not) and `Failover.next` answers with one `Step`:

- the first candidate that is up gets the call; those before it are passed over, each with its
  reason (`no_replica`, `scaled_to_zero`, or the reason a recent failure marked it down);
- when nothing is up on the first step, the first candidate gets the call anyway and waits for a
  replica: Serve queues it and starts (or wakes) one. That is also an explicit request's only path,
  since its route is the one model the client named;
- after a failed call only candidates that are up are tried, within `max_attempts` calls and
  `budget_s` seconds spent on failed calls; then the last failure is the answer.

`Step.last` says whether the call may still fail over: a last call waits for a replica (bounded by
the request timeout) instead of giving up after the short replica wait.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from serve_graph.router.errors import FallbackReason


@dataclass(frozen=True)
class Fallback:
    """One candidate passed over (never called, or called and failed before its first byte)."""

    model: str
    reason: FallbackReason

    def __str__(self) -> str:
        return f"{self.model}:{self.reason}"


def fallback_header(fallbacks: Iterable[Fallback]) -> str:
    """`x-serve-graph-fallback`: `model:reason` per candidate passed over, comma separated."""
    return ",".join(str(f) for f in fallbacks)


@dataclass(frozen=True)
class CandidateState:
    up: bool
    reason: FallbackReason = "no_replica"  # why it is not up (ignored when up)


UP = CandidateState(True)


def candidate_state(*, live: int | None, ready: bool, min_replicas: int,
                    marked: FallbackReason | None = None) -> CandidateState:
    """What the router knows about one candidate right now.

    `live`: running replicas in the handle's own replica set (Serve's view, updated by the
    controller's push and at once when a call finds a replica dead); None when unknown, then
    `ready` (the health poll) decides. `marked`: a failure this router saw, held until a health poll
    confirms the model again. A model that may scale to zero and has no replica is asleep.
    """
    if marked is not None:
        return CandidateState(False, marked)
    if (live > 0) if live is not None else ready:
        return UP
    return CandidateState(False, "scaled_to_zero" if min_replicas == 0 else "no_replica")


@dataclass(frozen=True)
class Step:
    model: str
    last: bool  # no failover after this call: it waits for a replica instead
    skipped: tuple[Fallback, ...] = ()  # passed over to get here, in route order


class Failover:
    """The attempt order of one request (see the module docstring)."""

    def __init__(self, candidates: Sequence[str], *, max_attempts: int, budget_s: float) -> None:
        self._queue = list(dict.fromkeys(candidates))
        self.max_attempts = max_attempts
        self.budget_s = budget_s
        self.attempts = 0
        self.spent_s = 0.0
        self.fallbacks: list[Fallback] = []
        self.last_failure: Fallback | None = None

    @property
    def exhausted(self) -> bool:
        return not self._queue or self.attempts >= self.max_attempts or self.spent_s >= self.budget_s

    def next(self, state: Callable[[str], CandidateState]) -> Step | None:
        """The next call, or None when the request has nothing left to try."""
        if self.exhausted:
            return None
        states = {c: state(c) for c in self._queue}
        up = [c for c in self._queue if states[c].up]
        if up:
            target = up[0]
        elif self.attempts == 0:
            target = self._queue[0]  # nothing is up: the first candidate queues for a replica
        else:
            return None
        i = self._queue.index(target)
        skipped = tuple(Fallback(c, states[c].reason) for c in self._queue[:i])
        self._queue = self._queue[i + 1:]
        self.fallbacks.extend(skipped)
        self.attempts += 1
        later_up = any(states[c].up for c in self._queue)
        last = not later_up or self.attempts >= self.max_attempts or self.spent_s >= self.budget_s
        return Step(target, last, skipped)

    def failed(self, model: str, reason: FallbackReason, elapsed_s: float) -> Fallback:
        """Record a call that failed before its first byte."""
        fb = Fallback(model, reason)
        self.fallbacks.append(fb)
        self.last_failure = fb
        self.spent_s += max(elapsed_s, 0.0)
        return fb
