"""Start-up training for operator examples, without the third-party corpus.

An operator adds a category (or sharpens one) with a few example prompts in ``models.yaml``. The
shipped model was trained on public datasets and labeled real prompts that a user's install does
not have, so the router cannot retrain from scratch. Instead it *adapts* the shipped model:

* warm start from the shipped weights, on the shipped hand-written prompts plus the operator's
  examples (new categories get a new weight column, new words new rows);
* the L2 penalty pulls every builtin category's weights toward their shipped values
  (``prior_l2``), so what the corpus taught survives although the corpus is absent; new
  categories are regularised toward zero only (``new_l2``, as in training from scratch);
* only the features that occur in those prompts move; every other weight keeps its shipped value
  exactly (its gradient is zero at the prior);
* biases of builtin categories are pulled toward theirs (``bias_l2``): the hand-written prompts'
  class mix must not shift the shipped model's priors;
* operator precedence (training rows that resemble an operator category yield) works as in
  ``train``.

``ADAPT_VERSION`` names this recipe (bump it when the output changes); it enters the cache key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from serve_graph.classifier.data import OPERATOR_SOURCE, Example
from serve_graph.classifier.features import extract_features
from serve_graph.classifier.store import Model
from serve_graph.classifier.train import (
    SoftmaxObjective,
    TrainConfig,
    build_matrix,
    categories_of,
    lbfgs,
    operator_precedence,
    sample_weights,
)

ADAPT_VERSION = 1


@dataclass(frozen=True)
class AdaptConfig:
    """Hyper-parameters of start-up adaptation, measured on the evaluation sets with and without
    an operator category (README, custom categories)."""

    prior_l2: float = 1.0  # pull of builtin categories toward the shipped weights
    new_l2: float = 1e-5  # new categories: as in training from scratch
    bias_l2: float = 1.0  # pull of builtin categories' biases toward the shipped ones
    max_iter: int = 80
    train: TrainConfig = TrainConfig()  # sample weighting and operator precedence


def adapt_model(base: Model, examples: Sequence[Example], cfg: AdaptConfig | None = None) -> Model:
    """The shipped ``base`` adapted to ``examples`` (hand-written prompts + operator examples)."""
    cfg = cfg or AdaptConfig()
    categories = categories_of(examples, base=base.categories)
    k, k0 = len(categories), len(base.categories)
    feature_lists = [extract_features(ex.text) for ex in examples]
    vocab = _extended_vocab(base, examples, feature_lists)
    active = sorted({vocab[f] for feats in feature_lists for f in feats if f in vocab})
    local = {name: j for j, name in enumerate(_names(vocab, active))}
    X = build_matrix(feature_lists, local)
    y = np.array([categories.index(ex.label) for ex in examples])
    operator = np.array([ex.source == OPERATOR_SOURCE for ex in examples])
    df = Counter(f for feats in feature_lists for f in set(feats) if f in local)
    doc_freq = np.array([df[f] for f in local], dtype=np.float64)
    w = sample_weights(examples, categories, cfg.train, operator_precedence(X, y, operator, doc_freq, cfg.train))

    full_W = _widen(base, len(vocab), k)
    prior = np.ascontiguousarray(full_W[active].T, dtype=np.float64)  # (k, n_active)
    l2 = np.array([cfg.prior_l2 if c < k0 else cfg.new_l2 for c in range(k)])
    b0 = np.concatenate([base.b.astype(np.float64), np.full(k - k0, float(base.b.mean()))])
    objective = SoftmaxObjective(
        X,
        y,
        w,
        k,
        l2,
        prior=prior,
        bias_prior=b0 if cfg.bias_l2 else None,
        bias_l2=np.where(np.arange(k) < k0, cfg.bias_l2, 0.0),
    )
    theta = lbfgs(objective, np.concatenate([prior.ravel(), b0]), cfg.max_iter)

    n = len(active)
    full_W[active] = theta[: n * k].reshape(k, n).T
    return Model(
        categories=categories,
        vocab=vocab,
        W=np.ascontiguousarray(full_W, dtype=np.float32),
        b=theta[n * k :].astype(np.float32),
        temperature=base.temperature,
    )


def _extended_vocab(base: Model, examples: Sequence[Example], feature_lists: Sequence[list[str]]) -> dict[str, int]:
    """The shipped vocabulary plus every feature of the operator's examples (appended, sorted):
    a handful of examples must be able to define a category by words the corpus never had."""
    new: set[str] = set()
    for ex, feats in zip(examples, feature_lists, strict=True):
        if ex.source == OPERATOR_SOURCE:
            new.update(f for f in feats if f not in base.vocab)
    vocab = dict(base.vocab)
    for name in sorted(new):
        vocab[name] = len(vocab)
    return vocab


def _names(vocab: dict[str, int], ids: Sequence[int]) -> list[str]:
    """Feature names for ``ids``, in the order of ``ids``."""
    by_id = {i: f for f, i in vocab.items()}
    return [by_id[i] for i in ids]


def _widen(base: Model, n_features: int, n_classes: int) -> np.ndarray:
    """The shipped weights in a (features, classes) float64 matrix with zero rows/columns added."""
    W = np.zeros((n_features, n_classes))
    W[: base.W.shape[0], : base.W.shape[1]] = base.W
    return W
