"""The classifier the router starts with, and the shipped model the build tool writes.

Start-up (``build_classifier``) never needs the third-party corpus:

1. no operator examples: the shipped ``model.npz`` (loaded in ~0.1 s);
2. operator examples: the cached adaptation for exactly this shipped model, hand-written data and
   examples, if one exists;
3. else the shipped model is adapted here (``adapt.adapt_model``, a few seconds on 2 cores) and
   the result cached. Every file is used only when its fingerprint matches, so nothing stale is
   ever served and there is no manual retraining step.

The build tool (``python -m serve_graph.classifier train``) trains the shipped model from scratch
on the third-party corpus plus the hand-written prompts (``train_shipped``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from serve_graph.classifier.adapt import ADAPT_VERSION, AdaptConfig, adapt_model
from serve_graph.classifier.data import (
    SHIPPED_MODEL,
    Example,
    handwritten_files,
    load_files,
    operator_examples,
    training_files,
)
from serve_graph.classifier.features import feature_fingerprint
from serve_graph.classifier.infer import Classifier
from serve_graph.classifier.store import Model, cache_dir, load_model, read_model, save_model
from serve_graph.classifier.train import TrainConfig, hash_files, recipe_fingerprint, train_model

log = logging.getLogger(__name__)


class StaleModel(RuntimeError):
    """The shipped model was trained in another feature space; the message says how to rebuild it."""


def shipped_fingerprint(data_dir: Path, config: TrainConfig | None = None) -> str:
    """The fingerprint ``model.npz`` must carry to be current for the data in ``data_dir``."""
    return recipe_fingerprint(training_files(data_dir), [], config or TrainConfig())


def train_shipped(data_dir: Path, config: TrainConfig | None = None, path: Path = SHIPPED_MODEL) -> Model:
    """Train from scratch on every training file and write the shipped model (the build tool)."""
    config = config or TrainConfig()
    files = training_files(data_dir)
    model = train_model(load_files(files), config)
    model.meta = {"fingerprint": recipe_fingerprint(files, [], config), "features": feature_fingerprint()}
    save_model(model, path)
    return model


def load_shipped(path: Path = SHIPPED_MODEL) -> Model:
    """The shipped model, or ``StaleModel`` when its feature space is not the code's."""
    model = load_model(path)
    if model is None:
        found = read_model(path)
        why = "is missing or unreadable" if found is None else "was trained with other features"
        raise StaleModel(
            f"{path} {why}: rebuild it with `python -m serve_graph.classifier train` "
            "(needs the third-party prompt sets, see serve_graph/data/prompts/README.md)"
        )
    return model


def adaptation_fingerprint(shipped: Model, examples: Sequence[Example], config: AdaptConfig) -> str:
    """Cache key of an adapted model: the shipped model, the recipe, the hand-written files and
    the operator's examples."""
    h = hashlib.sha256()
    h.update(str(shipped.meta.get("fingerprint", "")).encode())
    h.update(repr((ADAPT_VERSION, config)).encode())
    hash_files(h, handwritten_files())
    for ex in examples:
        h.update(json.dumps([ex.text, ex.label], ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def build_classifier(
    extra_examples: Mapping[str, Sequence[str]] | None = None,
    *,
    use_cache: bool = True,
    config: AdaptConfig | None = None,
    shipped_path: Path = SHIPPED_MODEL,
) -> Classifier:
    """Shipped model + operator examples -> ready classifier (see the module docstring).

    ``extra_examples`` maps a category name to example prompts: an unknown name creates a new
    category, a known one gets sharper.
    """
    operator = operator_examples(extra_examples)
    shipped = load_shipped(shipped_path)
    if not operator:
        return Classifier(shipped)
    config = config or AdaptConfig()
    fingerprint = adaptation_fingerprint(shipped, operator, config)
    cache_path = cache_dir() / f"model-{fingerprint}.npz"
    model = load_model(cache_path, fingerprint) if use_cache else None
    if model is None:
        t0 = time.perf_counter()
        model = adapt_model(shipped, load_files(handwritten_files()) + operator, config)
        model.meta = {"fingerprint": fingerprint, "features": feature_fingerprint()}
        log.info(
            "adapted the prompt classifier to %d operator examples (categories %s) in %.1fs",
            len(operator),
            ",".join(model.categories),
            time.perf_counter() - t0,
        )
        if use_cache:
            try:
                save_model(model, cache_path)
            except OSError as exc:  # read-only home etc.: still serve, just without the cache
                log.warning("could not cache the classifier at %s: %s", cache_path, exc)
    return Classifier(model)
