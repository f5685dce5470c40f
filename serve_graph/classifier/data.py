"""Where the classifier's prompts live, and how they are read.

Two kinds of data, kept apart on purpose:

* **Shipped** (``serve_graph/data/prompts/``): what the project wrote itself. The hand-written
  training prompts (``extra*.jsonl``), the hand-written evaluation sets (``eval/``), the labeling
  brief and the trained ``model.npz``. A user's install has these and nothing else.
* **Third-party** (``--data-dir``, by default ``../shared/data/prompts/`` beside the checkout):
  copies of public datasets and the labeled oasst1 prompts. Never committed to this repository.
  Only the build tool (``python -m serve_graph.classifier``) and the tests that measure accuracy
  on them read these; the router never does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data" / "prompts"
SHIPPED_EVAL_DIR = PACKAGE_DATA / "eval"
SHIPPED_MODEL = PACKAGE_DATA / "model.npz"
DATA_DIR_ENV = "SERVE_GRAPH_DATA_DIR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "prompts"

HANDWRITTEN_SOURCE = "serve_graph/handwritten"
# Real user prompts (OpenAssistant oasst1 train split) labeled for serve_graph: see the data README.
LABELED_REAL_SOURCE = "oasst1/train-labeled"
OPERATOR_SOURCE = "operator"

# Hand-written training prompts, shipped: start-up training with operator examples uses them.
HANDWRITTEN_TRAINING_FILES: tuple[str, ...] = (
    "extra.jsonl",
    "extra2.jsonl",
    "extra3.jsonl",
    "extra4.jsonl",
    "extra5.jsonl",
)
# Third-party training files, read from the data dir. The order of all training files is part of
# the recipe: the solver's floating-point sums follow it.
PUBLIC_TRAINING_FILE = "train.jsonl"
REAL_TRAINING_FILE = "oasst1_labeled.jsonl"
THIRD_PARTY_EVAL_FILES: tuple[str, ...] = ("dev.jsonl", "mt_bench.jsonl", "oasst1_real.jsonl")


class DataMissing(FileNotFoundError):
    """The third-party prompt files are not where the tool looked; the message says where and why."""


@dataclass(frozen=True)
class Example:
    """One labeled prompt; ``source`` decides its training weight (see ``train.sample_weights``)."""

    text: str
    label: str
    source: str


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The third-party data directory: the argument, else ``$SERVE_GRAPH_DATA_DIR``, else the default."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else DEFAULT_DATA_DIR


def require_data_dir(directory: Path, names: Sequence[str]) -> Path:
    """``directory`` if it holds every file in ``names``; else ``DataMissing`` naming what is absent."""
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DataMissing(
            f"{directory}: missing {', '.join(missing)}. The third-party prompt sets are not part of "
            f"serve_graph; point --data-dir (or ${DATA_DIR_ENV}) at a directory holding them "
            f"(default: {DEFAULT_DATA_DIR})."
        )
    return directory


def has_third_party_data(directory: Path | None = None) -> bool:
    """True when the third-party training and evaluation files are all present."""
    d = directory or data_dir()
    return all((d / n).is_file() for n in training_file_names() + list(THIRD_PARTY_EVAL_FILES))


def training_file_names() -> list[str]:
    """Names of the third-party training files (looked up in the data dir)."""
    return [PUBLIC_TRAINING_FILE, REAL_TRAINING_FILE]


def training_files(directory: Path) -> list[Path]:
    """Every file the shipped model is trained on, in training order."""
    require_data_dir(directory, training_file_names())
    return [
        directory / PUBLIC_TRAINING_FILE,
        *(PACKAGE_DATA / n for n in HANDWRITTEN_TRAINING_FILES),
        directory / REAL_TRAINING_FILE,
    ]


def handwritten_files() -> list[Path]:
    """The shipped hand-written training prompts (present on every install)."""
    return [PACKAGE_DATA / n for n in HANDWRITTEN_TRAINING_FILES]


def eval_files(directory: Path | None) -> list[Path]:
    """Every evaluation set: the shipped hand-written ones, plus the third-party ones when present."""
    shipped = sorted(SHIPPED_EVAL_DIR.glob("*.jsonl"))
    if directory is None:
        return shipped
    third = [directory / n for n in THIRD_PARTY_EVAL_FILES if (directory / n).is_file()]
    return sorted(shipped + third, key=lambda p: p.name)


def load_jsonl(path: Path) -> list[Example]:
    """Rows with ``text`` and ``label`` (and optionally ``source``) from a jsonl file."""
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out.append(Example(row["text"], row["label"], row.get("source", path.stem)))
    return out


def load_examples(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(text, label) pairs from a jsonl file with ``text`` and ``label`` fields."""
    return [(ex.text, ex.label) for ex in load_jsonl(Path(path))]


def load_files(paths: Sequence[Path]) -> list[Example]:
    """Every row of ``paths``, in order."""
    return [ex for path in paths for ex in load_jsonl(path)]


def operator_examples(extra_examples: Mapping[str, Sequence[str]] | None) -> list[Example]:
    """Operator-supplied examples; category names are normalised to stripped lower case."""
    out = []
    for label, texts in (extra_examples or {}).items():
        name = str(label).strip().lower()
        if not name:
            raise ValueError("extra_examples: empty category name")
        if isinstance(texts, str):
            raise TypeError(f"extra_examples[{label!r}] must be a list of prompts, not a string")
        out += [Example(str(t), name, OPERATOR_SOURCE) for t in texts if str(t).strip()]
    return out
