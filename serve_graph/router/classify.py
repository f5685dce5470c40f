"""Task-category classifier for the router: which kind of model should answer this chat request?

Design (and why):

* **Features** are sparse binary tokens from a *bounded window* of the prompt (the first
  ``HEAD_CHARS`` and last ``TAIL_CHARS`` characters). Instructions sit at the start or at the end of
  a prompt ("Summarize the following: <passage>", "<code>\\nWhy does this crash?"), so the window
  keeps what decides the category while making the cost independent of prompt length: a 2,000-token
  prompt costs the same as a 400-token one. Tokens are lower-cased words (digits folded to ``0``),
  single punctuation marks (they carry code and math syntax), single CJK/kana/hangul characters
  (those scripts have no spaces), word bigrams, the first words of the prompt and of its last line
  (where instructions live), and a few cheap shape features computed over the *whole* text with
  C-level ``str`` methods (length, line count, code fences, writing systems present).
* **Model**: multinomial logistic regression, trained at start-up with a small numpy L-BFGS on a
  CSR-style matrix. Inference is a dict lookup per token, one ``W[ids].sum(0)`` and a softmax:
  pure Python + numpy, well under a millisecond. Softmax probabilities are the confidence.
* **Training data** is the shipped ``serve_graph/data/prompts/train.jsonl`` (public benchmark and
  hand-labeled prompts) + ``extra.jsonl`` (hand-written realistic prompts) + the operator's
  ``extra_examples``. Benchmark templates dominate ``train.jsonl`` (BBH, FOLIO, CommonGen, P3), and a
  model fitted to them learns the templates, not the task; so each *source* is capped in total
  weight, classes are balanced, and hand-written/operator examples weigh more. Operator categories
  are created on the fly; there is no manual retraining step. The trained model is cached on disk
  (keyed by a hash of code version, data and hyper-parameters), so only the first start-up with a
  given configuration pays the training time (about 2-4 s on 2 cores).
* **Multi-turn**: the latest user turn dominates, but its weight shrinks when it is short or
  uncertain; earlier user turns (and, less, assistant turns and the system prompt) are blended in
  with decaying weights, so "now make it faster" after a coding turn stays ``code``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILTIN_CATEGORIES: tuple[str, ...] = (
    "code",
    "math",
    "reasoning",
    "creative",
    "text",
    "chat",
    "translation",
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"
DEFAULT_TRAINING_FILES: tuple[str, ...] = ("train.jsonl", "extra.jsonl")
HANDWRITTEN_SOURCE = "serve_graph/handwritten"
OPERATOR_SOURCE = "operator"

# Bump when features or training change, so stale cached models are not reused.
MODEL_VERSION = "1"

HEAD_CHARS = 1500
TAIL_CHARS = 500
LAST_LINE_CHARS = 300


# --------------------------------------------------------------------------------------------------
# Public result type
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    """One routing decision; the caller applies its confidence threshold and default route."""

    category: str
    confidence: float  # probability of `category`, 0..1
    scores: dict[str, float]  # all categories' probabilities
    latency_ms: float  # time spent classifying this request


# --------------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------------

# CJK ideographs, kana and hangul have no spaces between words: one token per character, and the
# word bigrams below then give character bigrams. Other letters form words; any other visible
# character is its own token (``{``, ``;``, ``=``, ``$``, ``\\`` ... separate code and math from prose).
_TOKEN_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\d_]+|\d+|[^\w\s]"
)
_DIGIT_RE = re.compile(r"\d")
_SCRIPT_RES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("latin", r"[a-zA-Z]"),
        ("cyrillic", r"[\u0400-\u04ff]"),
        ("greek", r"[\u0370-\u03ff]"),
        ("arabic", r"[\u0600-\u06ff]"),
        ("hebrew", r"[\u0590-\u05ff]"),
        ("devanagari", r"[\u0900-\u097f]"),
        ("bengali", r"[\u0980-\u09ff]"),
        ("telugu", r"[\u0c00-\u0c7f]"),
        ("thai", r"[\u0e00-\u0e7f]"),
        ("kana", r"[\u3040-\u30ff]"),
        ("han", r"[\u4e00-\u9fff]"),
        ("hangul", r"[\uac00-\ud7af]"),
    )
)
_LATIN_EXT_RE = re.compile(r"[\u00c0-\u024f]")  # accented Latin: de/fr/es/tr/vi... text


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(_DIGIT_RE.sub("0", text.lower()))


def _bucket(value: int) -> str:
    """Coarse log2 bucket, so shape features generalise across nearby sizes."""
    return str(value.bit_length())


def extract_features(text: str) -> list[str]:
    """Sparse binary features of one prompt (duplicates allowed; callers de-duplicate).

    Only a bounded head+tail window is tokenised, so the cost does not grow with the prompt.
    """
    n = len(text)
    if n > HEAD_CHARS + TAIL_CHARS:
        parts = (text[:HEAD_CHARS], text[-TAIL_CHARS:])
    else:
        parts = (text,)
    feats: list[str] = []
    for part in parts:
        toks = _tokens(part)
        feats += toks
        feats += map(" ".join, zip(toks, toks[1:]))
    head = _tokens(text[:80])[:3]
    feats += ["^" + t for t in head]
    if len(head) >= 2:
        feats.append("^" + head[0] + " " + head[1])
    stripped = text.rstrip()
    cut = stripped.rfind("\n", max(0, len(stripped) - LAST_LINE_CHARS))
    if cut > 0:  # multi-line prompt: the last line often holds the actual instruction
        last = _tokens(stripped[cut + 1 :][:80])[:3]
        feats += ["$" + t for t in last]
    feats += _shape_features(text, parts)
    return feats


def _shape_features(text: str, window: Sequence[str]) -> list[str]:
    """Length, layout and writing-system features, all computed with C-level string methods."""
    feats = ["#len" + _bucket(len(text)), "#lines" + _bucket(text.count("\n"))]
    if "```" in text:
        feats.append("#fence")
    if "    " in text or "\t" in text:
        feats.append("#indent")
    for part in window:
        for name, rx in _SCRIPT_RES:
            if rx.search(part):
                feats.append("#script_" + name)
        if _LATIN_EXT_RE.search(part):
            feats.append("#script_latin_ext")
    return feats


# --------------------------------------------------------------------------------------------------
# Messages -> turns
# --------------------------------------------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one OpenAI chat message; image/audio parts and malformed parts are ignored."""
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") == "text":
                value = part.get("text")
                if isinstance(value, str):
                    texts.append(value)
        return "\n".join(texts)
    return ""


# --------------------------------------------------------------------------------------------------
# Training: multinomial logistic regression with numpy L-BFGS over a CSR matrix
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. Chosen on a split of train.jsonl + the hand-written prompts (see bench/)."""

    l2: float = 1e-4  # L2 penalty per unit of (normalised) sample weight
    max_iter: int = 200
    min_df: int = 2  # features seen in fewer documents are dropped (except operator examples)
    source_cap: float = 120.0  # a source contributes at most this many examples' worth of weight
    handwritten_weight: float = 3.0
    operator_weight: float = 4.0
    max_class_boost: float = 25.0  # limit on per-example up-weighting when balancing classes
    temperature: float = 1.0  # softmax temperature applied at inference


@dataclass
class _Example:
    text: str
    label: str
    source: str


@dataclass
class _Csr:
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1


def _build_matrix(
    feature_lists: Sequence[list[str]], vocab: Mapping[str, int]
) -> _Csr:
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for feats in feature_lists:
        ids = sorted({vocab[f] for f in feats if f in vocab})
        indices += ids
        values += [1.0 / math.sqrt(len(ids))] * len(ids) if ids else []
        indptr.append(len(indices))
    return _Csr(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(indices, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        len(vocab),
    )


class _SoftmaxObjective:
    """Weighted cross-entropy + L2 and its gradient, vectorised over a CSR matrix.

    Weights are kept class-major, ``WT`` of shape (classes, features), so that both products run
    along contiguous rows: ``X @ W`` gathers the columns of ``WT`` per non-zero and sums them per
    document with ``np.add.reduceat``; ``X.T @ G`` does the same on a feature-sorted copy of the
    non-zeros. float32 for the gathers halves memory traffic; the loss is accumulated in float64.
    """

    def __init__(self, X: _Csr, y: np.ndarray, w: np.ndarray, n_classes: int, l2: float) -> None:
        self.X, self.k, self.l2 = X, n_classes, l2
        self.w = w / w.sum()
        self.Y = np.zeros((n_classes, X.n_rows))
        self.Y[y, np.arange(X.n_rows)] = 1.0
        rows = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
        order = np.argsort(X.indices, kind="stable")
        self.t_rows = rows[order]
        self.t_vals = X.values[order].astype(np.float32)
        sorted_idx = X.indices[order]
        self.t_starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        if len(self.t_starts) != X.n_features:
            raise ValueError("every feature must occur in at least one training row")
        self.row_starts = X.indptr[:-1]
        self.vals = X.values.astype(np.float32)

    def scores(self, WT: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(classes, rows) logits."""
        gathered = np.take(WT.astype(np.float32), self.X.indices, axis=1)
        gathered *= self.vals
        return np.add.reduceat(gathered, self.row_starts, axis=1).astype(np.float64) + b[:, None]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        V, k = self.X.n_features, self.k
        WT = theta[: V * k].reshape(k, V)
        b = theta[V * k :]
        Z = self.scores(WT, b)
        Z -= Z.max(axis=0)
        logp = Z - np.log(np.exp(Z).sum(axis=0))
        loss = -float((self.w * (logp * self.Y).sum(axis=0)).sum())
        loss += 0.5 * self.l2 * _dot(theta[: V * k], theta[: V * k])
        G = (np.exp(logp) - self.Y) * self.w
        spread = np.take(G.astype(np.float32), self.t_rows, axis=1)
        spread *= self.t_vals
        gWT = np.add.reduceat(spread, self.t_starts, axis=1).astype(np.float64)
        gWT += self.l2 * WT
        return loss, np.concatenate([gWT.ravel(), G.sum(axis=1)])


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: OpenBLAS threads spin badly on a busy 2-core box (20x slower)."""
    return float(np.einsum("i,i->", a, b))


def _lbfgs(fun, theta: np.ndarray, max_iter: int, memory: int = 10, tol: float = 1e-6) -> np.ndarray:
    """Plain L-BFGS with Armijo backtracking: enough for a smooth convex objective, no scipy needed."""
    loss, grad = fun(theta)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        q = grad.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist)):
            a = _dot(s, q) / _dot(yv, s)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= _dot(s_hist[-1], y_hist[-1]) / _dot(y_hist[-1], y_hist[-1])
        for (s, yv), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (a - _dot(yv, q) / _dot(yv, s))
        direction = -q
        slope = _dot(grad, direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -grad, -_dot(grad, grad)
        step = 1.0 if s_hist else 1.0 / max(1.0, float(np.abs(grad).max()))
        while True:
            new_theta = theta + step * direction
            new_loss, new_grad = fun(new_theta)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = new_theta - theta, new_grad - grad
        if _dot(s, yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(loss - new_loss) <= tol * max(1.0, abs(loss))
        theta, loss, grad = new_theta, new_loss, new_grad
        if converged:
            break
    return theta


def _sample_weights(examples: Sequence[_Example], categories: Sequence[str], cfg: TrainConfig) -> np.ndarray:
    """Cap each source's total weight, up-weight curated prompts, then balance the classes.

    Without the source cap, 800 BIG-Bench-Hard puzzles would define ``reasoning`` and 200 CommonGen
    templates ``creative``; real users write neither.
    """
    per_source = Counter(ex.source for ex in examples)
    w = np.empty(len(examples))
    for i, ex in enumerate(examples):
        if ex.source == OPERATOR_SOURCE:
            w[i] = cfg.operator_weight
        elif ex.source == HANDWRITTEN_SOURCE:
            w[i] = cfg.handwritten_weight
        else:
            w[i] = min(1.0, cfg.source_cap / per_source[ex.source])
    labels = np.array([categories.index(ex.label) for ex in examples])
    totals = np.bincount(labels, weights=w, minlength=len(categories))
    target = totals[totals > 0].mean()
    counts = np.bincount(labels, minlength=len(categories))
    for c in range(len(categories)):
        if totals[c] > 0:
            boost = min(target / totals[c], cfg.max_class_boost * counts[c] / max(totals[c], 1e-9))
            w[labels == c] *= boost if boost > 0 else 1.0
    return w


def _min_source_boost(examples: Sequence[_Example]) -> None:  # pragma: no cover - placeholder
    return None


@dataclass
class _Model:
    categories: tuple[str, ...]
    vocab: dict[str, int]
    W: np.ndarray  # (n_features, n_classes) float32
    b: np.ndarray  # (n_classes,) float32
    temperature: float = 1.0


def train_model(examples: Sequence[_Example], cfg: TrainConfig = TrainConfig()) -> _Model:
    """Fit the classifier. Categories are taken from the labels: builtin first, new ones after."""
    present = {ex.label for ex in examples}
    categories = tuple(c for c in BUILTIN_CATEGORIES if c in present) + tuple(
        sorted(present - set(BUILTIN_CATEGORIES))
    )
    feature_lists = [extract_features(ex.text) for ex in examples]
    df: Counter[str] = Counter()
    forced: set[str] = set()
    for ex, feats in zip(examples, feature_lists):
        uniq = set(feats)
        df.update(uniq)
        if ex.source == OPERATOR_SOURCE:
            forced |= uniq  # a handful of operator examples must be able to define a category
    names = sorted(f for f, n in df.items() if n >= cfg.min_df or f in forced)
    vocab = {f: i for i, f in enumerate(names)}
    X = _build_matrix(feature_lists, vocab)
    y = np.array([categories.index(ex.label) for ex in examples])
    w = _sample_weights(examples, categories, cfg)
    objective = _SoftmaxObjective(X, y, w, len(categories), cfg.l2)
    theta = _lbfgs(objective, np.zeros(len(vocab) * len(categories) + len(categories)), cfg.max_iter)
    k = len(categories)
    W = np.ascontiguousarray(theta[: len(vocab) * k].reshape(k, len(vocab)).T, dtype=np.float32)
    b = theta[len(vocab) * k :].astype(np.float32)
    return _Model(categories, vocab, W, b, cfg.temperature)


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextConfig:
    """How earlier turns are blended into the decision for the latest user turn."""

    full_evidence_tokens: int = 12  # a latest turn this long (and confident) stands on its own
    user_decay: float = 0.6  # weight multiplier per earlier user turn
    assistant_factor: float = 0.5  # assistant turns count this much relative to user turns
    context_gain: float = 1.5  # total weight of context when the latest turn carries no evidence
    system_weight: float = 0.15
    max_user_turns: int = 3
    max_assistant_turns: int = 2


class Classifier:
    """Stateless after construction; safe to share between requests and threads."""

    def __init__(self, model: _Model, context: ContextConfig = ContextConfig()) -> None:
        self._model = model
        self._context = context
        self.categories: tuple[str, ...] = model.categories
        self._vocab_get = model.vocab.get
        self._W = model.W
        self._b = model.b.astype(np.float64)
        self._inv_t = 1.0 / model.temperature

    # -- single text -------------------------------------------------------------------------------

    def _proba(self, text: str) -> tuple[np.ndarray, int]:
        """Class probabilities and the number of word tokens seen (a measure of evidence)."""
        feats = extract_features(text)
        get = self._vocab_get
        ids = [i for i in {get(f) for f in feats} if i is not None]
        z = self._b.copy()
        if ids:
            z += self._W[ids].sum(axis=0, dtype=np.float64) / math.sqrt(len(ids))
        z *= self._inv_t
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        n_tokens = sum(1 for f in feats if f[:1] not in "^$#" and " " not in f)
        return p, n_tokens

    def _result(self, p: np.ndarray, start: float) -> Classification:
        top = int(p.argmax())
        return Classification(
            category=self.categories[top],
            confidence=float(p[top]),
            scores={c: float(v) for c, v in zip(self.categories, p)},
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
        turns = [
            (m.get("role"), message_text(m)) for m in messages if isinstance(m, Mapping)
        ] if isinstance(messages, Sequence) else []
        user = [t for r, t in turns if r == "user" and t.strip()]
        if not user:  # no user text: fall back to whatever text there is
            user = [t for _, t in turns if t.strip()][-1:]
        if not user:
            p, _ = self._proba("")
            return self._result(p, start)
        p_last, n_tokens = self._proba(user[-1])
        cfg = self._context
        evidence = float(p_last.max()) * min(1.0, n_tokens / cfg.full_evidence_tokens)
        room = 1.0 - evidence
        total = p_last.copy()
        if room > 0.05:
            total += room * self._context_mass(turns, user)
        total /= total.sum()
        return self._result(total, start)

    def _context_mass(self, turns: Sequence[tuple[Any, str]], user: Sequence[str]) -> np.ndarray:
        """Decay-weighted mixture of earlier turns' probabilities (weights sum to <= context_gain)."""
        cfg = self._context
        acc = np.zeros(len(self.categories))
        weight_sum = 0.0
        # earlier user turns, most recent first
        for k, text in enumerate(reversed(user[:-1][-cfg.max_user_turns :])):
            w = cfg.user_decay**k
            acc += w * self._proba(text)[0]
            weight_sum += w
        # assistant answers after the first user turn, most recent first
        last_user_idx = max((i for i, (r, _) in enumerate(turns) if r == "user"), default=len(turns))
        assistant = [t for r, t in turns[:last_user_idx] if r == "assistant" and t.strip()]
        for k, text in enumerate(reversed(assistant[-cfg.max_assistant_turns :])):
            w = cfg.assistant_factor * cfg.user_decay**k
            acc += w * self._proba(text)[0]
            weight_sum += w
        if weight_sum > 0:
            acc *= cfg.context_gain / weight_sum
        system = [t for r, t in turns if r in ("system", "developer") and t.strip()]
        if system:
            acc += cfg.system_weight * self._proba(system[0])[0]
        return acc


# --------------------------------------------------------------------------------------------------
# Data loading, caching and the public builder
# --------------------------------------------------------------------------------------------------


def load_examples(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(text, label) pairs from a jsonl file with ``text`` and ``label`` fields."""
    return [(ex.text, ex.label) for ex in _load_jsonl(Path(path))]


def _load_jsonl(path: Path) -> list[_Example]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out.append(_Example(row["text"], row["label"], row.get("source", path.stem)))
    return out


def default_examples(data_dir: Path = DATA_DIR) -> list[_Example]:
    """The shipped training set: train.jsonl (public sources) + extra.jsonl (hand-written)."""
    examples: list[_Example] = []
    for name in DEFAULT_TRAINING_FILES:
        path = data_dir / name
        if path.exists():
            examples += _load_jsonl(path)
    return examples


def operator_examples(extra_examples: Mapping[str, Sequence[str]] | None) -> list[_Example]:
    """Operator-supplied examples; category names are normalised to stripped lower case."""
    out = []
    for label, texts in (extra_examples or {}).items():
        name = str(label).strip().lower()
        if not name:
            raise ValueError("extra_examples: empty category name")
        if isinstance(texts, str):
            raise TypeError(f"extra_examples[{label!r}] must be a list of prompts, not a string")
        out += [_Example(str(t), name, OPERATOR_SOURCE) for t in texts if str(t).strip()]
    return out


def _cache_dir() -> Path:
    env = os.environ.get("SERVE_GRAPH_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "serve_graph"
    return base / "classifier"


def _cache_key(examples: Sequence[_Example], cfg: TrainConfig) -> str:
    h = hashlib.sha256()
    h.update(MODEL_VERSION.encode())
    h.update(repr((cfg, HEAD_CHARS, TAIL_CHARS, LAST_LINE_CHARS)).encode())
    for ex in examples:
        h.update(json.dumps([ex.text, ex.label, ex.source], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def _save_model(model: _Model, path: Path) -> None:
    """Write atomically (tmp + rename) so concurrent replicas never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {"categories": list(model.categories), "vocab": list(model.vocab), "temperature": model.temperature}
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, W=model.W, b=model.b, meta=np.array(meta))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_model(path: Path) -> _Model:
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        return _Model(
            tuple(meta["categories"]),
            {f: i for i, f in enumerate(meta["vocab"])},
            data["W"],
            data["b"],
            float(meta["temperature"]),
        )


def build_classifier(
    extra_examples: Mapping[str, Sequence[str]] | None = None,
    *,
    use_cache: bool = True,
    config: TrainConfig = TrainConfig(),
    examples: Sequence[tuple[str, str]] | None = None,
) -> Classifier:
    """Default training data (shipped) + operator examples -> ready classifier.

    ``extra_examples`` maps a category name to example prompts: an unknown name creates a new
    category, a known one gets sharper. The model is trained here (seconds) or loaded from the
    on-disk cache when the same data and code were trained before. ``examples`` replaces the shipped
    data (for experiments and benchmarks).
    """
    base = (
        default_examples()
        if examples is None
        else [_Example(t, l, "custom") for t, l in examples]
    )
    data = base + operator_examples(extra_examples)
    if not data:
        raise ValueError("no training examples")
    path = _cache_dir() / f"model-{_cache_key(data, config)}.npz"
    model = None
    if use_cache and path.exists():
        try:
            model = _load_model(path)
        except Exception as exc:  # corrupt or foreign file: retrain
            log.warning("ignoring unreadable classifier cache %s: %s", path, exc)
    if model is None:
        t0 = time.perf_counter()
        model = train_model(data, config)
        log.info(
            "trained classifier on %d examples (%d features, %s) in %.1fs",
            len(data), len(model.vocab), ",".join(model.categories), time.perf_counter() - t0,
        )
        if use_cache:
            try:
                _save_model(model, path)
            except OSError as exc:  # read-only home etc.: still serve, just without cache
                log.warning("could not cache classifier at %s: %s", path, exc)
    return Classifier(model)


def iter_categories(classifier: Classifier) -> Iterable[str]:  # pragma: no cover - convenience
    return iter(classifier.categories)
