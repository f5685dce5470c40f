"""The classifier's build tool.

    python -m serve_graph.classifier train        # train from scratch, write data/prompts/model.npz
    python -m serve_graph.classifier eval         # per-class P/R/F1, macro, confusion, thresholds
    python -m serve_graph.classifier custom       # eval with and without an operator category, and
                                                  # the start-up time that adaptation costs
    python -m serve_graph.classifier latency      # p50/p99 by prompt length
    python -m serve_graph.classifier cv           # CV over the hand-written and the real prompts

The third-party prompt sets (public datasets, labeled oasst1 prompts) are read from ``--data-dir``
(default ``../shared/data/prompts/`` beside the checkout, or ``$SERVE_GRAPH_DATA_DIR``); they are
never part of the repository. ``train`` and ``cv`` need them and stop with a clear message when
they are absent; ``eval``, ``custom`` and ``latency`` use them when present and otherwise the
shipped hand-written sets only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serve_graph.classifier import data as D
from serve_graph.classifier.build import build_classifier, load_shipped, shipped_fingerprint, train_shipped
from serve_graph.classifier.evaluate import (
    cross_validate,
    evaluate,
    measure_latency,
    print_latency,
    print_report,
    timed,
)
from serve_graph.classifier.infer import Classifier

# A new category and a sharpened builtin one, as an operator would write them in models.yaml.
SAMPLE_OPERATOR_EXAMPLES: dict[str, list[str]] = {
    "sql": [
        "SELECT c.name, SUM(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
        "write a SQL query to find duplicate emails in the users table",
        "How do I use a LEFT JOIN to include customers that have no orders?",
        "Optimize this query: SELECT * FROM events WHERE user_id IN (SELECT id FROM users WHERE country = 'FR')",
        "Create a table for invoices with a foreign key to clients",
        "what's the difference between INNER JOIN and OUTER JOIN in SQL",
        "Write a query that returns the second highest salary from the employees table",
        "Group sales by month and region and show the total, in SQL",
    ],
    "translation": [
        "what does 'c'est la vie' mean",
        "What does 'dolce vita' mean?",
        "meaning of 'wabi-sabi' in English",
        "what does 'que sera sera' mean",
        "What does 'hygge' mean in English?",
        "what does 'saudade' mean",
    ],
}


def _eval_sets(ns: argparse.Namespace) -> list[Path]:
    directory = D.data_dir(ns.data_dir)
    sets = D.eval_files(directory if directory.is_dir() else None)
    if not any(p.parent == directory for p in sets):
        print(f"note: no third-party evaluation sets in {directory}; evaluating the shipped sets only", file=sys.stderr)
    return sets


def cmd_train(ns: argparse.Namespace) -> dict[str, Any]:
    directory = D.require_data_dir(D.data_dir(ns.data_dir), D.training_file_names())
    model, seconds = timed(lambda: train_shipped(directory))
    size = D.SHIPPED_MODEL.stat().st_size / 1e6
    print(
        f"trained in {seconds:.1f}s: {len(model.vocab)} features, wrote {D.SHIPPED_MODEL} ({size:.1f} MB, "
        f"fingerprint {model.meta['fingerprint']})"
    )
    return {"seconds": seconds, "features": len(model.vocab)}


def cmd_eval(ns: argparse.Namespace) -> dict[str, Any]:
    model = load_shipped()
    clf = Classifier(model)
    directory = D.data_dir(ns.data_dir)
    if D.has_third_party_data(directory) and model.meta.get("fingerprint") != shipped_fingerprint(directory):
        print(
            "warning: model.npz is stale for this data: run `python -m serve_graph.classifier train`", file=sys.stderr
        )
    out = {}
    for path in _eval_sets(ns) + list(ns.extra_eval):
        report = evaluate(clf, D.load_examples(path))
        print_report(path.name, report)
        out[path.name] = {k: report[k] for k in ("macro_recall", "macro_f1", "accuracy", "per_class", "thresholds")}
    return out


def cmd_custom(ns: argparse.Namespace) -> dict[str, Any]:
    """Accuracy per set: shipped model vs adapted to ``SAMPLE_OPERATOR_EXAMPLES``, and start-up time."""
    shipped = Classifier(load_shipped())
    adapted, cold = timed(lambda: build_classifier(SAMPLE_OPERATOR_EXAMPLES, use_cache=False))
    print(f"start-up adaptation (no cache): {cold:.1f}s; categories {', '.join(adapted.categories)}\n")
    print("| set | shipped | adapted | difference (points) | moved to a new category | difference on the rest |")
    print("|---|---|---|---|---|---|")
    out: dict[str, Any] = {"adapt_seconds": cold, "sets": {}}
    new = {c for c in adapted.categories if c not in shipped.categories}
    for path in _eval_sets(ns):
        rows = D.load_examples(path)
        before = [shipped.classify_text(t).category == label for t, label in rows]
        after_pred = [adapted.classify_text(t).category for t, _ in rows]
        after = [p == label for p, (_, label) in zip(after_pred, rows, strict=True)]
        rest = [i for i, p in enumerate(after_pred) if p not in new]
        moved = 1 - len(rest) / len(rows)
        diff = _mean(after) - _mean(before)
        diff_rest = _mean([after[i] for i in rest]) - _mean([before[i] for i in rest])
        print(
            f"| {path.name} | {_mean(before):.3f} | {_mean(after):.3f} | {100 * diff:+.1f} | {moved:.1%} "
            f"| {100 * diff_rest:+.1f} |"
        )
        out["sets"][path.name] = {
            "shipped": _mean(before),
            "adapted": _mean(after),
            "moved_to_new": moved,
            "difference_on_rest": diff_rest,
        }
    return out


def _mean(values: Sequence[bool]) -> float:
    return sum(values) / len(values) if values else 0.0


def cmd_latency(ns: argparse.Namespace) -> dict[str, Any]:
    directory = D.data_dir(ns.data_dir)
    source = (
        directory / "dev.jsonl" if (directory / "dev.jsonl").is_file() else D.SHIPPED_EVAL_DIR / "realistic_blind.jsonl"
    )
    print(f"prompt bodies from {source.name}")
    results = measure_latency(Classifier(load_shipped()), D.load_examples(source))
    print_latency(results)
    return {"source": source.name, "results": results}


def cmd_cv(ns: argparse.Namespace, k: int = 5) -> dict[str, Any]:
    """k-fold CV over the hand-written prompts; leave-one-labeler-out over the real prompts."""
    directory = D.require_data_dir(D.data_dir(ns.data_dir), D.training_file_names())
    examples = D.load_files(D.training_files(directory))
    hand = [e for e in examples if e.source == D.HANDWRITTEN_SOURCE]
    out = {"handwritten": cross_validate(examples, [hand[fold::k] for fold in range(k)])}
    labelers = [json.loads(line)["labeler"] for line in (directory / D.REAL_TRAINING_FILE).open() if line.strip()]
    real = [e for e in examples if e.source == D.LABELED_REAL_SOURCE]
    if len(real) != len(labelers):
        raise SystemExit(f"{D.REAL_TRAINING_FILE}: rows and labeled real examples differ")
    folds = [[e for e, who in zip(real, labelers, strict=True) if who == name] for name in sorted(set(labelers))]
    out["real_by_labeler"] = cross_validate(examples, folds)
    for name, (recall, accuracy) in out.items():
        print(f"{name}: mean macro recall {recall:.3f}, mean accuracy {accuracy:.3f}")
    return out


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "custom": cmd_custom, "latency": cmd_latency, "cv": cmd_cv}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m serve_graph.classifier", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"third-party prompt sets (default: ${D.DATA_DIR_ENV} or {D.DEFAULT_DATA_DIR})",
    )
    ap.add_argument("--extra-eval", type=Path, action="append", default=[], help="another labeled jsonl (eval)")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    ns = ap.parse_args(argv)
    try:
        out = COMMANDS[ns.command](ns)
    except D.DataMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
