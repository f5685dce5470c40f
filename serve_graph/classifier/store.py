"""The trained model as data, and its files: the shipped ``model.npz`` and the start-up cache.

A model file carries its identity in ``meta``:

* ``features``: the feature space it was trained in (``features.feature_fingerprint()``). A model
  from another feature space is never served: its vocabulary would mean something else.
* ``fingerprint``: everything that determined the weights (feature space, training recipe,
  hyper-parameters, every training file's bytes, operator examples). The build tool compares it
  with the current data to tell whether ``model.npz`` needs retraining; the start-up cache is
  keyed by it.

Files are written atomically (tmp + rename) so that concurrent router replicas never read half a
file, and an unreadable or foreign file is ignored with a warning rather than failing start-up.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serve_graph.classifier.features import feature_fingerprint

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SERVE_GRAPH_CACHE_DIR"


@dataclass
class Model:
    """Weights and vocabulary of a multinomial logistic regression over sparse binary features."""

    categories: tuple[str, ...]
    vocab: dict[str, int]
    W: np.ndarray  # (n_features, n_classes) float32
    b: np.ndarray  # (n_classes,) float32
    temperature: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)  # fingerprint, features, recipe notes


def cache_dir() -> Path:
    """Where start-up training caches its models: ``$SERVE_GRAPH_CACHE_DIR/classifier``, else the
    XDG cache (``~/.cache/serve_graph/classifier``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env) / "classifier"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "serve_graph" / "classifier"


def save_model(model: Model, path: Path) -> None:
    """Write ``model`` (with its ``meta``) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {
            **model.meta,
            "categories": list(model.categories),
            "vocab": list(model.vocab),
            "temperature": model.temperature,
        },
        ensure_ascii=False,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, W=model.W, b=model.b, meta=np.array(meta))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the shipped file must be readable by all
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_model(path: Path) -> Model | None:
    """The model stored at ``path``, whatever its fingerprint; None if absent or unreadable."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return Model(
                categories=tuple(meta.pop("categories")),
                vocab={f: i for i, f in enumerate(meta.pop("vocab"))},
                W=np.ascontiguousarray(data["W"], dtype=np.float32),
                b=np.asarray(data["b"], dtype=np.float32),
                temperature=float(meta.pop("temperature")),
                meta=meta,
            )
    except Exception as exc:  # corrupt or foreign file: the caller decides what to do instead
        log.warning("ignoring unreadable classifier model %s: %s", path, exc)
        return None


def load_model(path: Path, fingerprint: str | None = None) -> Model | None:
    """The model at ``path`` if it lives in the current feature space (and, when ``fingerprint`` is
    given, was trained from exactly that recipe and data); else None."""
    model = read_model(path)
    if model is None:
        return None
    if model.meta.get("features") != feature_fingerprint():
        return None
    if fingerprint is not None and model.meta.get("fingerprint") != fingerprint:
        return None
    return model
