"""Inference, the router's hot path: features -> one gather-and-sum over weight rows -> softmax.

Pure Python + numpy, well under a millisecond per prompt on 2 cores (``python -m
serve_graph.classifier latency``). The softmax probability of the top class is the confidence.

* **Multi-turn**: the latest user turn decides, in proportion to its evidence (length x
  confidence); the rest of the decision comes from earlier user turns (decaying), assistant answers
  (less) and the system prompt (a little), so "now make it faster" after a coding turn stays
  ``code``. Per-text results are memoised, since clients resend the history with every request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from serve_graph.classifier.features import featurize
from serve_graph.classifier.store import Model
from serve_graph.messages import turns as message_turns

RowGet = Callable[[str, int], int]


@dataclass(frozen=True)
class Classification:
    """One routing decision; the caller applies its confidence threshold and default route."""

    category: str
    confidence: float  # probability of `category`, 0..1
    scores: dict[str, float]  # all categories' probabilities
    latency_ms: float  # time spent classifying this request


@dataclass(frozen=True)
class ContextConfig:
    """How earlier turns are blended into the decision for the latest user turn.

    The latest turn keeps a share ``a = min(1, tokens / full_evidence_tokens) * (0.5 + 0.5 * conf)``
    of the decision; the rest goes to the context: earlier user turns (weight 1, then decaying),
    assistant answers (less: an answer's style says less about the task than a request) and the
    system prompt (a little). If the context weights sum to less than 1, the remainder stays with
    the latest turn, so a lone system prompt can only nudge a decision.
    """

    full_evidence_tokens: int = 16
    user_decay: float = 0.6
    assistant_weight: float = 0.3
    system_weight: float = 0.25
    max_user_turns: int = 3
    max_assistant_turns: int = 2


class Classifier:
    """Immutable after construction apart from a small memo; safe to share between threads."""

    MEMO_SIZE = 4096

    def __init__(self, model: Model, context: ContextConfig | None = None, fingerprint: str = "") -> None:
        self.model = model
        self.fingerprint = fingerprint or str(model.meta.get("fingerprint", ""))
        self._context = context or ContextConfig()
        self.categories: tuple[str, ...] = model.categories
        # Row i + 1 of _W0 holds feature i; row 0 is zeros for unknown features.
        self._row_get: RowGet = {f: i + 1 for f, i in model.vocab.items()}.get
        self._W0 = np.vstack([np.zeros((1, model.W.shape[1]), dtype=model.W.dtype), model.W])
        self._b = model.b.astype(np.float64)
        self._inv_t = 1.0 / model.temperature
        self._memo: dict[tuple[int, int], tuple[np.ndarray, int]] = {}

    def clear_memo(self) -> None:
        """Forget memoised results (benchmarks time cold classifications with it)."""
        self._memo.clear()

    # -- single text -------------------------------------------------------------------------------

    def _proba(self, text: str) -> tuple[np.ndarray, int]:
        """Class probabilities and the number of tokens seen (a measure of evidence), memoised.

        Chat clients resend the whole history with every request, so the earlier turns that
        ``classify_messages`` blends in were usually classified one request ago. The memo is keyed
        by (hash, length) of the text, not the text itself, so it holds no prompt content.
        """
        key = (hash(text), len(text))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        result = self._compute_proba(text)
        result[0].flags.writeable = False  # shared through the memo: callers must copy, not mutate
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()  # cheap and rare; an LRU would cost more per request than it saves
        self._memo[key] = result
        return result

    def _compute_proba(self, text: str) -> tuple[np.ndarray, int]:
        feats, n_tokens = featurize(text)
        if n_tokens == 0:  # nothing to go on: say so, the caller's threshold picks the default route
            return np.full(len(self.categories), 1.0 / len(self.categories)), 0
        keys = set(feats)
        # unknown features map to row 0, which is all zeros; the loop runs in C (map + fromiter)
        rows = np.fromiter(map(self._row_get, keys, repeat(0)), dtype=np.intp, count=len(keys))
        known = int(np.count_nonzero(rows))
        z = self._b.copy()
        if known:
            z += self._W0[rows].sum(axis=0, dtype=np.float64) / math.sqrt(known)
        z *= self._inv_t
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        return p, n_tokens

    def _result(self, p: np.ndarray, start: float) -> Classification:
        top = int(p.argmax())
        return Classification(
            category=self.categories[top],
            confidence=float(p[top]),
            scores={c: float(v) for c, v in zip(self.categories, p, strict=True)},
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    def classify_text(self, text: str) -> Classification:
        """Classify one prompt on its own (no conversation context)."""
        start = time.perf_counter()
        p, _ = self._proba(text if isinstance(text, str) else "")
        return self._result(p, start)

    # -- conversation ------------------------------------------------------------------------------

    def classify_messages(self, messages: Sequence[Mapping[str, Any]]) -> Classification:
        """Classify a chat request from its message list.

        The latest user turn decides, weighted by how much evidence it carries (its length and
        confidence). A short or uncertain follow-up ("now make it faster", "and in French?") leaves
        room for earlier user turns, assistant answers and the system prompt, with decaying weights.
        """
        start = time.perf_counter()
        turns = message_turns(messages)
        user = [t for r, t in turns if r == "user" and t.strip()]
        if not user:  # no user text: fall back to whatever text there is
            user = [t for _, t in turns if t.strip()][-1:]
        if not user:
            p, _ = self._proba("")
            return self._result(p, start)
        p_last, n_tokens = self._proba(user[-1])
        cfg = self._context
        share = min(1.0, n_tokens / cfg.full_evidence_tokens) * (0.5 + 0.5 * float(p_last.max()))
        if share < 0.95:  # skip the extra work when the latest turn clearly stands on its own
            p_last = share * p_last + (1.0 - share) * self._context_mix(turns, user, p_last)
        return self._result(p_last, start)

    def _context_mix(
        self, turns: Sequence[tuple[str | None, str]], user: Sequence[str], p_last: np.ndarray
    ) -> np.ndarray:
        """Weighted mixture of earlier turns' probabilities; unused weight falls back to ``p_last``."""
        cfg = self._context
        weighted: list[tuple[float, str]] = []
        for k, text in enumerate(reversed(user[:-1][-cfg.max_user_turns :])):
            weighted.append((cfg.user_decay**k, text))
        last_user = max((i for i, (r, _) in enumerate(turns) if r == "user"), default=len(turns))
        answers = [t for r, t in turns[:last_user] if r == "assistant" and t.strip()]
        for k, text in enumerate(reversed(answers[-cfg.max_assistant_turns :])):
            weighted.append((cfg.assistant_weight * cfg.user_decay**k, text))
        system = [t for r, t in turns if r in ("system", "developer") and t.strip()]
        if system:
            weighted.append((cfg.system_weight, system[0]))
        total = sum(w for w, _ in weighted)
        mix = max(0.0, 1.0 - total) * p_last
        scale = 1.0 / max(1.0, total)
        for w, text in weighted:
            mix += (w * scale) * self._proba(text)[0]
        return mix
