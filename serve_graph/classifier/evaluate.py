"""Measuring the classifier: per-class metrics, the confidence-threshold trade-off, latency and
cross-validation. Used by the build tool (``python -m serve_graph.classifier``) and the tests.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from serve_graph.classifier.data import Example
from serve_graph.classifier.infer import Classification, Classifier
from serve_graph.classifier.train import TrainConfig, train_model

THRESHOLDS = (0.4, 0.5, 0.6, 0.7)
CHARS_PER_TOKEN = 4  # English BPE average: "2000 tokens" is an ~8,000-character prompt
LATENCY_TOKENS = (50, 500, 2000, 8000)

Report = dict[str, Any]


def evaluate(clf: Classifier, rows: Sequence[tuple[str, str]]) -> Report:
    """Per-class precision/recall/F1, macro averages over the labels present, confusion matrix and
    the threshold trade-off."""
    labels = [c for c in clf.categories if any(lab == c for _, lab in rows)]
    columns = list(clf.categories)
    confusion = {t: dict.fromkeys(columns, 0) for t in labels}
    scored: list[tuple[float, bool]] = []
    for text, label in rows:
        result = clf.classify_text(text)
        confusion[label][result.category] += 1
        scored.append((result.confidence, result.category == label))
    per_class = {}
    for c in labels:
        tp = confusion[c][c]
        support = sum(confusion[c].values())
        predicted = sum(confusion[t][c] for t in labels)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "labels": labels,
        "columns": columns,
        "per_class": per_class,
        "macro_recall": statistics.fmean(v["recall"] for v in per_class.values()),
        "macro_f1": statistics.fmean(v["f1"] for v in per_class.values()),
        "accuracy": sum(confusion[c][c] for c in labels) / len(rows),
        "confusion": confusion,
        "n": len(rows),
        "thresholds": threshold_tradeoff(scored),
    }


def threshold_tradeoff(scored: Sequence[tuple[float, bool]]) -> dict[float, dict[str, float]]:
    """Per confidence threshold: the share of prompts routed by category, and their accuracy.

    Below ``routes.confidence_threshold`` a request takes the default route, so an operator trades
    coverage for accuracy; these are the numbers to choose it by.
    """
    out = {}
    for t in THRESHOLDS:
        kept = [ok for conf, ok in scored if conf >= t]
        out[t] = {"routed": len(kept) / len(scored), "accuracy": sum(kept) / len(kept) if kept else 0.0}
    return out


def print_report(name: str, report: Report) -> None:
    """The report as markdown (what the README's tables are made from)."""
    print(f"\n### {name} (n={report['n']})\n")
    print(
        f"macro recall **{report['macro_recall']:.3f}**, macro F1 **{report['macro_f1']:.3f}**, "
        f"accuracy {report['accuracy']:.3f}\n"
    )
    trade = ", ".join(f"{t}: {v['routed']:.0%} at {v['accuracy']:.3f}" for t, v in report["thresholds"].items())
    print(f"routed by category (confidence >= threshold) and their accuracy: {trade}\n")
    print("| class | precision | recall | F1 | support |")
    print("|---|---|---|---|---|")
    for c, v in report["per_class"].items():
        print(f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |")
    cols = report["columns"]
    print("\nconfusion (rows: true, columns: predicted)\n")
    print("| true \\ pred | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for t in report["labels"]:
        print(f"| {t} | " + " | ".join(str(report["confusion"][t][p]) for p in cols) + " |")


# -- latency ---------------------------------------------------------------------------------------


def long_prompts(rows: Sequence[tuple[str, str]], target_tokens: int, n: int, seed: int = 0) -> list[str]:
    """Realistic prompts of about ``target_tokens`` tokens: an instruction plus real text stitched
    from ``rows`` (passages and code), with the instruction at the start or at the end."""
    rng = random.Random(seed)
    prose = [t for t, lab in rows if lab in ("text", "chat", "creative") and len(t) > 200]
    code = [t for t, lab in rows if lab == "code" and len(t) > 200]
    shapes = [
        ("Summarize the following document in five bullet points:\n\n", "", prose),
        ("", "\n\nWhat are the main arguments made above? Answer briefly.", prose),
        ("Here is my code. ", "\n\nWhy does this fail with a KeyError, and how do I fix it?", code),
        ("Translate the following text into German:\n\n", "", prose),
    ]
    out = []
    target_chars = target_tokens * CHARS_PER_TOKEN
    for i in range(n):
        head, tail, pool = shapes[i % len(shapes)]
        body = ""
        while len(head) + len(body) + len(tail) < target_chars:
            body += rng.choice(pool) + "\n\n"
        out.append(head + body[: max(0, target_chars - len(head) - len(tail))] + tail)
    return out


def _percentiles(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(samples_ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def measure_latency(
    clf: Classifier,
    rows: Sequence[tuple[str, str]],
    tokens: Sequence[int] = LATENCY_TOKENS,
    n_prompts: int = 40,
    repeats: int = 25,
) -> list[dict[str, Any]]:
    """p50/p99 of ``Classification.latency_ms`` (the time the router reports) per prompt length,
    for one prompt alone and for a 3-turn conversation, with the memo cleared before each call."""
    follow_up = {"role": "user", "content": "ok, now make it shorter"}

    def history(p: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": p}, {"role": "assistant", "content": p[: len(p) // 2]}]

    calls: dict[str, Callable[[str], Classification]] = {
        "classify_text": clf.classify_text,
        "classify_messages, 3 turns, cold": lambda p: clf.classify_messages([*history(p), follow_up]),
    }
    results = []
    for target in tokens:
        prompts = long_prompts(rows, target, n_prompts)
        for p in prompts[:5]:  # warm-up
            clf.classify_text(p)
        wall: dict[str, list[float]] = {name: [] for name in calls}
        gc.disable()
        try:
            for _ in range(repeats):
                for p in prompts:
                    for name, call in calls.items():
                        clf.clear_memo()
                        wall[name].append(call(p).latency_ms)
        finally:
            gc.enable()
        for name in calls:
            p50, p99, worst = _percentiles(wall[name])
            results.append(
                {
                    "tokens": target,
                    "chars": len(prompts[0]),
                    "call": name,
                    "p50": p50,
                    "p99": p99,
                    "max": worst,
                    "n": len(wall[name]),
                }
            )
    return results


def print_latency(results: Sequence[dict[str, Any]]) -> None:
    print("\n| prompt | chars | call | p50 ms | p99 ms | max ms | samples |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| ~{r['tokens']} tokens | {r['chars']} | {r['call']} | {r['p50']:.3f} | {r['p99']:.3f} "
            f"| {r['max']:.2f} | {r['n']} |"
        )


# -- cross-validation ------------------------------------------------------------------------------


def cross_validate(
    examples: Sequence[Example], folds: Sequence[Sequence[Example]], config: TrainConfig | None = None
) -> tuple[float, float]:
    """Mean macro recall and mean accuracy over ``folds``: each fold is held out of ``examples``,
    a model trained from scratch on the rest and scored on the fold."""
    recalls, accuracies = [], []
    for i, test in enumerate(folds):
        held = {id(e) for e in test}
        clf = Classifier(train_model([e for e in examples if id(e) not in held], config))
        report = evaluate(clf, [(e.text, e.label) for e in test])
        recalls.append(report["macro_recall"])
        accuracies.append(report["accuracy"])
        print(f"fold {i}: n={len(test)} macro recall {report['macro_recall']:.3f}, accuracy {report['accuracy']:.3f}")
    return statistics.fmean(recalls), statistics.fmean(accuracies)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
