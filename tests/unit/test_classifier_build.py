"""The classifier's lifecycle: what makes a model stale, and operator categories on an install
without the third-party corpus.

Scenarios run in a subprocess on a *copy* of the package (``tests/scenarios/classifier_copy.py``),
so that edits to the copy's source or term lists cannot touch the checkout, and so that the copy
has no ``../shared`` beside it, as on a user's machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serve_graph.classifier import data as D
from serve_graph.classifier.__main__ import SAMPLE_OPERATOR_EXAMPLES
from serve_graph.classifier.adapt import AdaptConfig
from serve_graph.classifier.build import adaptation_fingerprint, load_shipped
from serve_graph.classifier.features import feature_fingerprint
from serve_graph.classifier.train import TrainConfig, recipe_fingerprint

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "serve_graph"


def _copy_package(dest: Path) -> Path:
    """A copy of serve_graph/ (code, term lists, shipped prompts and model) under ``dest``."""
    shutil.copytree(PACKAGE, dest / "serve_graph", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "serve_graph"


def _run(copy_root: Path, tmp: Path, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != D.DATA_DIR_ENV}
    env["PYTHONPATH"] = f"{copy_root}{os.pathsep}{REPO}"
    env["SERVE_GRAPH_CACHE_DIR"] = str(tmp / "cache")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.scenarios.classifier_copy", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).is_relative_to(copy_root), out["package"]  # the copy, not the checkout
    return out


def _here() -> dict[str, str]:
    operator = D.operator_examples(SAMPLE_OPERATOR_EXAMPLES)
    return {
        "features": feature_fingerprint(),
        "recipe": recipe_fingerprint(D.handwritten_files(), [], TrainConfig()),
        "adaptation": adaptation_fingerprint(load_shipped(), operator, AdaptConfig()),
    }


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_docstring_and_inference_edits_keep_the_fingerprint(tmp_path: Path) -> None:
    """Only what determines the model is fingerprinted: source edits that keep the features and the
    recipe (docstrings, comments, inference code) leave every fingerprint, and so model.npz, as is."""
    pkg = _copy_package(tmp_path / "copy")
    for name in ("features.py", "train.py", "adapt.py", "infer.py", "build.py"):
        _edit(pkg / "classifier" / name, '"""', '"""Edited docstring.\n\n')
    _edit(pkg / "classifier" / "infer.py", "    MEMO_SIZE = 4096", "    MEMO_SIZE = 1024  # an inference edit")
    out = _run(tmp_path / "copy", tmp_path)
    assert {k: out[k] for k in ("features", "recipe", "adaptation")} == _here()


@pytest.mark.parametrize(
    ("file", "old", "new"),
    [
        ("data/lexicon/tech.txt", "\nluajit\n", "\nluajit\nnewterm\n"),  # a term list
        ("classifier/features.py", "FEATURES_VERSION = 1", "FEATURES_VERSION = 2"),
        ("classifier/train.py", "TRAINING_VERSION = 1", "TRAINING_VERSION = 2"),
    ],
)
def test_what_determines_the_model_changes_the_fingerprint(tmp_path: Path, file: str, old: str, new: str) -> None:
    """A change of features makes the shipped model unusable (start-up says how to rebuild it
    rather than serve a vocabulary that means something else); a change of the training recipe
    makes it stale for the build tool."""
    pkg = _copy_package(tmp_path / "copy")
    _edit(pkg / file, old, new)
    out = _run(tmp_path / "copy", tmp_path)
    assert out["recipe"] != _here()["recipe"]
    if file.endswith("train.py"):
        assert out["features"] == _here()["features"] and "stale" not in out
    else:
        assert out["features"] != _here()["features"]
        assert "python -m serve_graph.classifier train" in out["stale"]


def test_operator_category_is_learned_without_third_party_data(tmp_path: Path) -> None:
    """On an install without ../shared, models.yaml examples still add and sharpen categories:
    start-up adapts the shipped model on the shipped hand-written prompts."""
    _copy_package(tmp_path / "copy")
    out = _run(tmp_path / "copy", tmp_path, "--adapt")
    assert out["third_party_data"] is False
    assert out["categories"][-1] == "sql"
    assert out["probes"] == ["sql", "translation", "creative"]
    assert list((tmp_path / "cache" / "classifier").glob("model-*.npz"))  # cached under the given dir


def test_build_tool_without_data_fails_clearly(tmp_path: Path) -> None:
    before = D.SHIPPED_MODEL.read_bytes()
    for command in ("train", "cv"):
        proc = subprocess.run(
            [sys.executable, "-m", "serve_graph.classifier", command, "--data-dir", str(tmp_path / "absent")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert "missing train.jsonl" in proc.stderr and "--data-dir" in proc.stderr, proc.stderr
    assert D.SHIPPED_MODEL.read_bytes() == before
