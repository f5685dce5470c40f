"""Training: multinomial logistic regression with a small numpy L-BFGS over a CSR matrix.

No scipy or scikit-learn: the router image stays small, and the whole recipe is here to read.
Benchmark templates dominate the public training set (BBH, FOLIO, CommonGen, P3) and a model fitted
to them learns templates, not tasks; so each source's total weight is capped, classes are balanced
and hand-written, real and operator examples weigh more (``sample_weights``).

``TRAINING_VERSION`` names the recipe: bump it whenever this module's output for the same data and
``TrainConfig`` changes. It is part of every model's fingerprint; edits that keep the output (a
docstring, a refactor) do not force a retrain.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serve_graph.classifier.data import HANDWRITTEN_SOURCE, LABELED_REAL_SOURCE, OPERATOR_SOURCE, Example
from serve_graph.classifier.features import extract_features, feature_fingerprint
from serve_graph.classifier.store import Model

TRAINING_VERSION = 1

BUILTIN_CATEGORIES: tuple[str, ...] = (
    "code",
    "math",
    "reasoning",
    "creative",
    "text",
    "chat",
    "translation",
)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters, chosen by CV over the hand-written prompts and over the labeled real
    prompts (leave one labeler out; ``python -m serve_graph.classifier cv``): those look like real
    traffic, unlike the benchmark-heavy dev set."""

    l2: float = 1e-5  # L2 penalty per unit of (normalised) sample weight
    max_iter: int = 80  # L-BFGS iterations: enough to converge on the shipped data
    # Features seen in fewer documents are dropped (except operator examples): a smaller vocabulary
    # makes the per-feature lookups at inference faster, at no cost in CV.
    min_df: int = 3
    source_cap: float = 120.0  # a source contributes at most this many examples' worth of weight
    handwritten_weight: float = 5.0
    real_prompt_weight: float = 5.0  # labeled real user prompts (LABELED_REAL_SOURCE)
    operator_weight: float = 4.0  # on top of class balancing (see sample_weights)
    max_class_boost: float = 1000.0  # per-example cap on the up-weighting that balances classes
    temperature: float = 1.0  # softmax temperature applied at inference
    conflict_ratio: float = 0.5  # see operator_precedence
    conflict_discount: float = 0.05


def recipe_fingerprint(files: Sequence[Path], examples: Sequence[Example], cfg: object) -> str:
    """Identity of a trained model: feature space, training recipe, hyper-parameters, the bytes of
    every training file (by name, in order) and any extra rows (operator examples)."""
    h = hashlib.sha256()
    h.update(feature_fingerprint().encode())
    h.update(repr((TRAINING_VERSION, cfg)).encode())
    hash_files(h, files)
    for ex in examples:
        h.update(json.dumps([ex.text, ex.label, ex.source], ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def hash_files(h: Any, files: Sequence[Path]) -> None:
    """Feed each file's name and the digest of its bytes to ``h`` (files are not parsed: checking
    that a model is current costs no JSON decoding)."""
    for path in files:
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())


@dataclass
class Csr:
    """A row-normalised binary document x feature matrix in CSR form."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1


def build_matrix(feature_lists: Sequence[list[str]], vocab: Mapping[str, int]) -> Csr:
    """Each row's known features, de-duplicated, with value 1/sqrt(count) (unit L2 norm)."""
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for feats in feature_lists:
        ids = sorted({vocab[f] for f in feats if f in vocab})
        indices += ids
        values += [1.0 / math.sqrt(len(ids))] * len(ids) if ids else []
        indptr.append(len(indices))
    return Csr(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(indices, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        len(vocab),
    )


class SoftmaxObjective:
    """Weighted cross-entropy + L2 and its gradient, vectorised over a CSR matrix.

    Weights are kept class-major, ``WT`` of shape (classes, features), so that both products run
    along contiguous rows: ``X @ W`` gathers the columns of ``WT`` per non-zero and sums them per
    document with ``np.add.reduceat``; ``X.T @ G`` does the same on a feature-sorted copy of the
    non-zeros. float32 for the gathers halves memory traffic; the loss is accumulated in float64.

    With ``prior`` (classes, features) and per-class ``l2`` the penalty pulls toward the prior
    instead of toward zero: that is how start-up training stays close to the shipped model.
    """

    def __init__(
        self,
        X: Csr,
        y: np.ndarray,
        w: np.ndarray,
        n_classes: int,
        l2: float | np.ndarray,
        prior: np.ndarray | None = None,
        bias_prior: np.ndarray | None = None,
        bias_l2: np.ndarray | None = None,
    ) -> None:
        self.X, self.k, self.l2, self.prior = X, n_classes, l2, prior
        self.bias_prior, self.bias_l2 = bias_prior, bias_l2
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
        logits: np.ndarray = np.add.reduceat(gathered, self.row_starts, axis=1).astype(np.float64)
        logits += b[:, None]
        return logits

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        V, k = self.X.n_features, self.k
        WT = theta[: V * k].reshape(k, V)
        b = theta[V * k :]
        Z = self.scores(WT, b)
        Z -= Z.max(axis=0)
        logp = Z - np.log(np.exp(Z).sum(axis=0))
        loss = -float((self.w * (logp * self.Y).sum(axis=0)).sum())
        G = (np.exp(logp) - self.Y) * self.w
        spread = np.take(G.astype(np.float32), self.t_rows, axis=1)
        spread *= self.t_vals
        gWT = np.add.reduceat(spread, self.t_starts, axis=1).astype(np.float64)
        if self.prior is None:
            loss += 0.5 * float(self.l2) * dot(theta[: V * k], theta[: V * k])
            gWT += self.l2 * WT
        else:
            l2 = np.broadcast_to(np.asarray(self.l2, dtype=np.float64).reshape(-1, 1), (k, 1))
            diff = WT - self.prior
            loss += 0.5 * float((l2[:, 0] * np.einsum("ij,ij->i", diff, diff)).sum())
            gWT += l2 * diff
        gb = G.sum(axis=1)
        if self.bias_prior is not None and self.bias_l2 is not None:
            db = b - self.bias_prior
            loss += 0.5 * float((self.bias_l2 * db * db).sum())
            gb = gb + self.bias_l2 * db
        return loss, np.concatenate([gWT.ravel(), gb])


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: OpenBLAS threads spin badly on a busy 2-core box."""
    return float(np.einsum("i,i->", a, b))


Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def lbfgs(fun: Objective, theta: np.ndarray, max_iter: int, memory: int = 10, tol: float = 1e-6) -> np.ndarray:
    """Plain L-BFGS with Armijo backtracking: enough for a smooth convex objective, no scipy needed."""
    loss, grad = fun(theta)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        q = grad.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = dot(s, q) / dot(yv, s)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= dot(s_hist[-1], y_hist[-1]) / dot(y_hist[-1], y_hist[-1])
        for (s, yv), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += s * (a - dot(yv, q) / dot(yv, s))
        direction = -q
        slope = dot(grad, direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -grad, -dot(grad, grad)
        step = 1.0 if s_hist else 1.0 / max(1.0, float(np.abs(grad).max()))
        while True:
            new_theta = theta + step * direction
            new_loss, new_grad = fun(new_theta)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = new_theta - theta, new_grad - grad
        if dot(s, yv) > 1e-12:
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


def source_group(source: str) -> str:
    """The dataset a row comes from: ``bbh/navigate`` -> ``bbh``; P3 keeps its sub-dataset."""
    parts = source.split("/")
    return "/".join(parts[:2]) if parts[0] == "p3" else parts[0]


def operator_precedence(
    X: Csr, y: np.ndarray, operator: np.ndarray, doc_freq: np.ndarray, cfg: TrainConfig
) -> np.ndarray:
    """Per-row weight factor: training rows that look like an operator category's examples yield.

    An operator who adds a ``sql`` category with "write a SQL query that ..." examples means those
    prompts to go there, but the shipped data labels such prompts ``code``; with both in the
    training set the few operator rows lose to the many shipped ones. So, for each category the
    operator gave examples for, rows of *other* categories whose TF-IDF cosine to that category's
    example centroid is at least ``conflict_ratio`` times the examples' own typical similarity are
    down-weighted by ``conflict_discount``.
    """
    factor = np.ones(X.n_rows)
    if not operator.any():
        return factor
    idf = np.log((1.0 + X.n_rows) / (1.0 + doc_freq)) + 1.0
    rows = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
    vals = idf[X.indices]
    norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=X.n_rows))
    vals = vals / np.maximum(norms[rows], 1e-12)
    for c in np.unique(y[operator]):
        members = np.flatnonzero(operator & (y == c))
        centroid = np.zeros(X.n_features)
        for i in members:
            lo, hi = X.indptr[i], X.indptr[i + 1]
            centroid[X.indices[lo:hi]] += vals[lo:hi]
        centroid /= len(members)
        sims = np.bincount(rows, weights=vals * centroid[X.indices], minlength=X.n_rows)
        threshold = cfg.conflict_ratio * float(np.median(sims[members]))
        factor[(~operator) & (y != c) & (sims >= threshold)] *= cfg.conflict_discount
    return factor


def sample_weights(
    examples: Sequence[Example],
    categories: Sequence[str],
    cfg: TrainConfig,
    discount: np.ndarray | None = None,
) -> np.ndarray:
    """Cap each source's total weight, up-weight curated prompts, then balance the classes.

    Without the source cap, 800 BIG-Bench-Hard puzzles would define ``reasoning`` and 200 CommonGen
    templates ``creative``; real users write neither. ``discount`` (per row) applies before the
    class balancing.
    """
    per_source = Counter(source_group(ex.source) for ex in examples)
    w = np.empty(len(examples))
    for i, ex in enumerate(examples):
        if ex.source == OPERATOR_SOURCE:
            w[i] = 1.0  # scaled by operator_weight after the class balancing
        elif ex.source == HANDWRITTEN_SOURCE:
            w[i] = cfg.handwritten_weight
        elif ex.source == LABELED_REAL_SOURCE:
            w[i] = cfg.real_prompt_weight
        else:
            w[i] = min(1.0, cfg.source_cap / per_source[source_group(ex.source)])
    if discount is not None:
        w *= discount
    labels = np.array([categories.index(ex.label) for ex in examples])
    totals = np.bincount(labels, weights=w, minlength=len(categories))
    target = totals[totals > 0].mean()
    counts = np.bincount(labels, minlength=len(categories))
    for c in range(len(categories)):
        if totals[c] > 0:
            boost = min(target / totals[c], cfg.max_class_boost * counts[c] / max(totals[c], 1e-9))
            w[labels == c] *= boost if boost > 0 else 1.0
    # Operator examples state intent: they outweigh the rows of their class, and a new category of
    # 8 examples ends up with more total weight than a builtin one.
    w[np.array([ex.source == OPERATOR_SOURCE for ex in examples])] *= cfg.operator_weight
    return w


def categories_of(examples: Sequence[Example], base: Sequence[str] = ()) -> tuple[str, ...]:
    """``base`` first, then the builtin categories present, then new names in sorted order."""
    present = {ex.label for ex in examples} | set(base)
    ordered = tuple(base) + tuple(c for c in BUILTIN_CATEGORIES if c in present and c not in base)
    return ordered + tuple(sorted(present - set(ordered)))


def train_model(examples: Sequence[Example], cfg: TrainConfig | None = None) -> Model:
    """Fit the classifier from scratch. Categories come from the labels: builtin first, new after."""
    cfg = cfg or TrainConfig()
    categories = categories_of(examples)
    feature_lists = [extract_features(ex.text) for ex in examples]
    df: Counter[str] = Counter()
    forced: set[str] = set()
    for ex, feats in zip(examples, feature_lists, strict=True):
        uniq = set(feats)
        df.update(uniq)
        if ex.source == OPERATOR_SOURCE:
            forced |= uniq  # a handful of operator examples must be able to define a category
    names = sorted(f for f, n in df.items() if n >= cfg.min_df or f in forced)
    vocab = {f: i for i, f in enumerate(names)}
    X = build_matrix(feature_lists, vocab)
    y = np.array([categories.index(ex.label) for ex in examples])
    operator = np.array([ex.source == OPERATOR_SOURCE for ex in examples])
    doc_freq = np.array([df[f] for f in names], dtype=np.float64)
    discount = operator_precedence(X, y, operator, doc_freq, cfg)
    w = sample_weights(examples, categories, cfg, discount)
    objective = SoftmaxObjective(X, y, w, len(categories), cfg.l2)
    theta = lbfgs(objective, np.zeros(len(vocab) * len(categories) + len(categories)), cfg.max_iter)
    k = len(categories)
    W = np.ascontiguousarray(theta[: len(vocab) * k].reshape(k, len(vocab)).T, dtype=np.float32)
    b = theta[len(vocab) * k :].astype(np.float32)
    return Model(categories, vocab, W, b, cfg.temperature)
