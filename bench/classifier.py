"""Retrain, evaluate and time the prompt classifier (serve_graph/router/classify.py).

    .venv/bin/python -m bench.classifier                # eval + latency (markdown, for the README)
    .venv/bin/python -m bench.classifier --retrain      # train on the shipped data, write model.npz
    .venv/bin/python -m bench.classifier --eval         # per-class P/R/F1, macro, confusion matrices
    .venv/bin/python -m bench.classifier --latency      # p50/p99 by prompt length
    .venv/bin/python -m bench.classifier --train-time   # cold training time (what an operator's
                                                        # extra examples cost at start-up)
    .venv/bin/python -m bench.classifier --cv           # CV over the hand-written prompts and
                                                        # over the labeled real user prompts

(`python bench/classifier.py ...` works too.)

Training data is only ``serve_graph/data/prompts/{train,extra*,oasst1_labeled}.jsonl``. Every set
in ``eval/`` is evaluated and never trained on: ``dev.jsonl`` (in-distribution), ``mt_bench.jsonl``
(public benchmark), ``oasst1_real.jsonl`` (real user prompts, labeled for serve_graph),
``holdout_handwritten.jsonl`` and ``realistic_blind*.jsonl`` (hand-written realistic prompts, the
blind ones written without sight of any training file or MT-Bench; see data/prompts/README.md).
``--cv`` is the signal used to tune hyper-parameters: it holds out folds of the hand-written and of
the labeled real prompts, which look like real traffic, unlike the benchmark-template-heavy dev set.

Latency prompts are built from real text (dev passages and code, stitched together) up to a target
length. Token counts use ~4 characters per token (English BPE average), so "2000 tokens" is an
~8,000-character prompt.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/classifier.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from serve_graph.router import classify as C

EVAL_DIR = C.DATA_DIR / "eval"
EVAL_SETS = tuple(sorted(p.name for p in EVAL_DIR.glob("*.jsonl")))  # a new set is evaluated as is
CHARS_PER_TOKEN = 4
LATENCY_TOKENS = (50, 500, 2000, 8000)


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def evaluate(clf: C.Classifier, rows: Sequence[tuple[str, str]]) -> dict:
    """Per-class precision/recall/F1, macro averages over the labels present, confusion matrix."""
    labels = [c for c in clf.categories if any(lab == c for _, lab in rows)]
    predicted_set = list(clf.categories)
    confusion = {t: {p: 0 for p in predicted_set} for t in labels}
    scored: list[tuple[float, bool]] = []  # (confidence, correct) for the threshold trade-off
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
        "columns": predicted_set,
        "per_class": per_class,
        "macro_recall": statistics.fmean(v["recall"] for v in per_class.values()),
        "macro_f1": statistics.fmean(v["f1"] for v in per_class.values()),
        "accuracy": sum(confusion[c][c] for c in labels) / len(rows),
        "confusion": confusion,
        "n": len(rows),
        "thresholds": _threshold_tradeoff(scored),
    }


THRESHOLDS = (0.4, 0.5, 0.6, 0.7)


def _threshold_tradeoff(scored: Sequence[tuple[float, bool]]) -> dict[float, dict[str, float]]:
    """Per confidence threshold: the share of prompts routed by category, and their accuracy.

    Below ``routes.confidence_threshold`` a request takes the default route, so an operator trades
    coverage for accuracy; these are the numbers to choose it by.
    """
    out = {}
    for t in THRESHOLDS:
        kept = [ok for conf, ok in scored if conf >= t]
        out[t] = {"routed": len(kept) / len(scored), "accuracy": sum(kept) / len(kept) if kept else 0.0}
    return out


def print_report(name: str, report: dict) -> None:
    print(f"\n### {name} (n={report['n']})\n")
    print(
        f"macro recall **{report['macro_recall']:.3f}**, macro F1 **{report['macro_f1']:.3f}**, "
        f"accuracy {report['accuracy']:.3f}\n"
    )
    print(
        "routed by category (confidence >= threshold) and their accuracy: "
        + ", ".join(f"{t}: {v['routed']:.0%} at {v['accuracy']:.3f}" for t, v in report["thresholds"].items())
        + "\n"
    )
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


# ------------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------------


def _long_prompts(target_tokens: int, n: int, seed: int = 0) -> list[str]:
    """Realistic prompts of about ``target_tokens`` tokens: an instruction plus real text.

    Bodies are stitched from dev-set passages and code (varied vocabulary and layout, so the
    tokenizer sees what it would in production); instructions sit at the start or the end.
    """
    rng = random.Random(seed)
    rows = C.load_examples(EVAL_DIR / "dev.jsonl")
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
        body = body[: max(0, target_chars - len(head) - len(tail))]
        out.append(head + body + tail)
    return out


def _percentiles(samples_ms: Sequence[float]) -> tuple[float, float, float]:
    a = np.asarray(samples_ms)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def measure_latency(
    clf: C.Classifier, tokens: Sequence[int] = LATENCY_TOKENS, n_prompts: int = 40, repeats: int = 25
) -> list[dict]:
    """p50/p99 of ``Classification.latency_ms`` (the time the router reports) per prompt length."""
    results = []
    for target in tokens:
        prompts = _long_prompts(target, n_prompts)
        for p in prompts[:5]:  # warm-up
            clf.classify_text(p)
        def history(p: str) -> list[dict]:
            return [{"role": "user", "content": p}, {"role": "assistant", "content": p[: len(p) // 2]}]

        follow_up = {"role": "user", "content": "ok, now make it shorter"}

        def seen_history(p: str) -> None:  # the previous request classified the user turn; the
            # assistant answer is new (it was generated since), as in a real chat
            clf._memo.clear()
            clf.classify_messages(history(p))

        # name -> (untimed set-up, timed call); the memo is cleared so nothing is served from it
        # unless the scenario says so.
        calls: dict[str, tuple[Callable[[str], object], Callable[[str], C.Classification]]] = {
            "classify_text": (lambda p: clf._memo.clear(), clf.classify_text),
            "classify_messages, 3 turns, cold": (
                lambda p: clf._memo.clear(),
                lambda p: clf.classify_messages([*history(p), follow_up]),
            ),
            "classify_messages, 3 turns, earlier user turn seen": (
                seen_history,
                lambda p: clf.classify_messages([*history(p), follow_up]),
            ),
        }
        wall: dict[str, list[float]] = {name: [] for name in calls}
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        gc.disable()
        try:
            for _ in range(repeats):
                for p in prompts:
                    for name, (setup, call) in calls.items():
                        setup(p)
                        t0 = time.thread_time_ns()
                        result = call(p)
                        cpu[name].append((time.thread_time_ns() - t0) / 1e6)
                        wall[name].append(result.latency_ms)
        finally:
            gc.enable()
        for name in calls:
            p50, p99, worst = _percentiles(wall[name])
            cpu50, cpu99, _ = _percentiles(cpu[name])
            results.append(
                {
                    "tokens": target, "chars": len(prompts[0]), "call": name, "p50": p50, "p99": p99,
                    "max": worst, "cpu_p50": cpu50, "cpu_p99": cpu99, "n": len(wall[name]),
                }
            )
    return results


def print_latency(results: Sequence[dict]) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n### Classifier latency (in-process, 1 thread; {os.cpu_count()} CPUs, load average {load})\n")
    print("`latency_ms` as reported per request (wall clock), and the CPU time of the same calls.\n")
    print("| prompt | chars | call | p50 ms | p99 ms | max ms | CPU p50 ms | CPU p99 ms | samples |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| ~{r['tokens']} tokens | {r['chars']} | {r['call']} | {r['p50']:.3f} | {r['p99']:.3f} "
            f"| {r['max']:.2f} | {r['cpu_p50']:.3f} | {r['cpu_p99']:.3f} | {r['n']} |"
        )


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _timed(fn: Callable[[], C.Classifier]) -> tuple[C.Classifier, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    clf = fn()
    return clf, time.perf_counter() - wall, time.process_time() - cpu


def retrain() -> C.Classifier:
    """Train on the shipped data and write the shipped artifact that start-up loads."""
    clf, wall, cpu = _timed(lambda: C.build_classifier(use_cache=False, use_shipped=False))
    C.save_model(clf._model, C.SHIPPED_MODEL, C.default_fingerprint())
    size = C.SHIPPED_MODEL.stat().st_size / 1e6
    print(
        f"trained in {wall:.1f}s wall / {cpu:.1f}s CPU: {len(clf._model.vocab)} features, "
        f"wrote {C.SHIPPED_MODEL} ({size:.1f} MB, fingerprint {clf.fingerprint})"
    )
    return clf


def train_time(repeats: int = 3) -> None:
    """Cold start-up cost when the shipped model cannot be used (operator examples given)."""
    extra = {"sql": ["SELECT name FROM users WHERE age > 30", "write a SQL query that counts orders per day"]}
    print("\n### Training time (shipped data + 2 operator examples, no cache)\n")
    print("| run | wall s | CPU s |")
    print("|---|---|---|")
    for i in range(repeats):
        _, wall, cpu = _timed(lambda: C.build_classifier(extra, use_cache=False))
        print(f"| {i + 1} | {wall:.2f} | {cpu:.2f} |")
    _, wall, cpu = _timed(lambda: C.build_classifier())
    print(f"| shipped model.npz load | {wall:.2f} | {cpu:.2f} |")


def cross_validate(k: int = 5) -> None:
    """Two held-out estimates for realistic prompts, the rest of the training data always in.

    * k-fold CV over the hand-written prompts;
    * leave-one-labeler-out over the labeled real user prompts (oasst1): each fold is the prompts
      one labeler labeled, so a labeler's habits are never both trained on and scored.
    """
    examples = C.default_examples()
    hand = [e for e in examples if e.source == C.HANDWRITTEN_SOURCE]
    folds = [[e for i, e in enumerate(hand) if i % k == fold] for fold in range(k)]
    _cv_report(f"{k}-fold CV on the hand-written prompts", examples, folds)
    labelers = _labelers(C.DATA_DIR / "oasst1_labeled.jsonl")
    real = [e for e in examples if e.source == C.LABELED_REAL_SOURCE]
    assert len(real) == len(labelers), "oasst1_labeled.jsonl rows and labeled real examples differ"
    by_labeler = [[e for e, who in zip(real, labelers) if who == name] for name in sorted(set(labelers))]
    _cv_report("leave-one-labeler-out CV on the labeled real prompts", examples, by_labeler)


def _labelers(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["labeler"] for line in fh if line.strip()]


def _cv_report(title: str, examples: Sequence[C._Example], folds: Sequence[Sequence[C._Example]]) -> None:
    recalls, accuracies = [], []
    for i, test in enumerate(folds):
        held = {id(e) for e in test}
        clf = C.Classifier(C.train_model([e for e in examples if id(e) not in held]))
        report = evaluate(clf, [(e.text, e.label) for e in test])
        recalls.append(report["macro_recall"])
        accuracies.append(report["accuracy"])
        print(f"fold {i}: n={len(test)} macro recall {report['macro_recall']:.3f}, accuracy {report['accuracy']:.3f}")
    n = sum(len(f) for f in folds)
    print(
        f"\n{title} (n={n}): mean macro recall {statistics.fmean(recalls):.3f}, "
        f"mean accuracy {statistics.fmean(accuracies):.3f}\n"
    )


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--retrain", action="store_true", help="retrain and write serve_graph/data/prompts/model.npz")
    ap.add_argument("--eval", action="store_true", help="accuracy on every set in eval/")
    ap.add_argument("--latency", action="store_true", help="p50/p99 latency by prompt length")
    ap.add_argument("--train-time", action="store_true", help="cold training time")
    ap.add_argument("--cv", action="store_true", help="CV over the hand-written and the labeled real prompts")
    ap.add_argument("--extra-eval", type=Path, action="append", default=[], help="another labeled jsonl to evaluate")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON here")
    ns = ap.parse_args(argv)
    if not (ns.retrain or ns.eval or ns.latency or ns.train_time or ns.cv or ns.extra_eval):
        ns.eval = ns.latency = True
    out: dict = {}
    clf = retrain() if ns.retrain else C.build_classifier()
    if ns.eval or ns.extra_eval:
        paths = ([EVAL_DIR / n for n in EVAL_SETS] if ns.eval else []) + list(ns.extra_eval)
        for path in paths:
            report = evaluate(clf, C.load_examples(path))
            print_report(path.name, report)
            out[path.name] = {
                k: report[k] for k in ("macro_recall", "macro_f1", "accuracy", "per_class", "confusion", "thresholds")
            }
    if ns.latency:
        results = measure_latency(clf)
        print_latency(results)
        out["latency"] = results
    if ns.train_time:
        train_time()
    if ns.cv:
        cross_validate()
    if ns.json:
        ns.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
