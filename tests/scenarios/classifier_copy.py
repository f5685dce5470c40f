"""Scenario: the classifier from a copy of the package (run by tests/unit/test_classifier_build.py).

Run as ``python -m tests.scenarios.classifier_copy`` with the copy first on ``PYTHONPATH``. Prints
one JSON object: where ``serve_graph`` was imported from, whether third-party data was found, the
fingerprints, and (with ``--adapt``) the categories the sample operator examples produce. The
copy has no ``../shared`` beside it, so this is what a user's install sees.
"""

from __future__ import annotations

import argparse
import json

import serve_graph
from serve_graph.classifier import build_classifier
from serve_graph.classifier import data as D
from serve_graph.classifier.__main__ import SAMPLE_OPERATOR_EXAMPLES
from serve_graph.classifier.adapt import AdaptConfig
from serve_graph.classifier.build import StaleModel, adaptation_fingerprint, load_shipped
from serve_graph.classifier.features import feature_fingerprint
from serve_graph.classifier.train import TrainConfig, recipe_fingerprint

PROBES = [
    "write a SQL query that joins orders and customers",
    "what does 'carpe diem' mean",
    "Write a poem about autumn",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapt", action="store_true", help="build the classifier with the sample operator examples")
    ns = ap.parse_args()
    operator = D.operator_examples(SAMPLE_OPERATOR_EXAMPLES)
    out: dict[str, object] = {
        "package": serve_graph.__file__,
        "third_party_data": D.has_third_party_data(),
        "features": feature_fingerprint(),
        "recipe": recipe_fingerprint(D.handwritten_files(), [], TrainConfig()),
    }
    try:
        out["adaptation"] = adaptation_fingerprint(load_shipped(), operator, AdaptConfig())
    except StaleModel as exc:  # the copy's features no longer match its model.npz
        out["stale"] = str(exc)
    if ns.adapt:
        clf = build_classifier(SAMPLE_OPERATOR_EXAMPLES)
        out["categories"] = list(clf.categories)
        out["probes"] = [clf.classify_text(p).category for p in PROBES]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
