"""Task-category classifier for the router: which kind of model should answer this chat request?

One package, four lifecycles kept apart:

* ``features``: what a prompt looks like to the model (shared by training and inference);
* ``train`` / ``adapt``: fitting a model from scratch (the build tool, offline) and adapting the
  shipped one to operator examples (router start-up);
* ``store`` / ``data`` / ``build``: model files, prompt files, and which model the router starts with;
* ``infer``: the hot path (``Classifier.classify_text`` / ``classify_messages``).

``python -m serve_graph.classifier train|eval|cv|latency|train-time`` is the build tool.
"""

from serve_graph.classifier.build import StaleModel, build_classifier
from serve_graph.classifier.data import DataMissing, Example, load_examples, operator_examples
from serve_graph.classifier.features import extract_features
from serve_graph.classifier.infer import Classification, Classifier, ContextConfig
from serve_graph.classifier.train import BUILTIN_CATEGORIES, TrainConfig

__all__ = [
    "BUILTIN_CATEGORIES",
    "Classification",
    "Classifier",
    "ContextConfig",
    "DataMissing",
    "Example",
    "StaleModel",
    "TrainConfig",
    "build_classifier",
    "extract_features",
    "load_examples",
    "operator_examples",
]
