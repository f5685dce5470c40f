"""Task-category classifier for the router: which kind of model should answer this chat request?

Design (and why):

* **Features**: sparse binary tokens from a *bounded window* of the prompt (the first
  ``HEAD_CHARS`` and the last ``TAIL_CHARS`` characters). Instructions sit at the start or at the end
  of a prompt ("Summarize the following: <passage>", "<code>\\nWhy does this crash?"), so the window
  keeps what decides the category while the cost stays flat: an 8,000-token prompt costs what an
  800-character one does. Tokens: lower-cased words (digits folded to ``0``), single punctuation
  marks (code and math syntax), single CJK/kana/hangul characters (no spaces in those scripts), word
  bigrams, word prefixes (crude stems), the first words of the prompt and of its last line (where
  instructions live), word *groups* from a lexicon (inline groups plus the term lists in
  ``data/lexicon/``, so "kotlin", "luajit" or "übersetze" borrow the weight of their group), and
  shape features computed over the whole text with C-level ``str`` methods (length, lines, code
  fences, writing systems).
* **Model**: multinomial logistic regression, trained by a small numpy L-BFGS on a CSR-style matrix
  (no scipy/sklearn). Inference is a dict lookup per feature, one gather-and-sum over the weight
  rows and a softmax: pure Python + numpy, ~0.2-0.6 ms on this 2-core machine. The softmax
  probability of the top class is the confidence (calibration measured in bench/classifier.py).
* **Data**: ``serve_graph/data/prompts/train.jsonl`` (public benchmarks and hand-labeled prompts) +
  ``extra*.jsonl`` (hand-written realistic prompts) + ``oasst1_labeled.jsonl`` (real user prompts,
  labeled) + the operator's ``extra_examples``. Benchmark templates dominate ``train.jsonl`` (BBH,
  FOLIO, CommonGen, P3) and a model fitted to them learns templates, not tasks; so each source's
  total weight is capped, classes are balanced and hand-written, real and operator examples weigh
  more. Evaluation data (``eval/``) is never trained on.
* **Start-up**: the default model is shipped (``model.npz``, loaded in ~0.1 s). With operator
  examples the model is trained at start-up (9-12 s CPU on 2 cores) and cached on disk; every model
  carries a fingerprint of the data, hyper-parameters and this module's code, and is only used when
  it matches, so nothing stale is ever served and no manual retraining step exists.
* **Operator categories**: new names become categories; examples for an existing one sharpen it.
  Two mechanisms, because training alone lets 1,000 shipped ``code`` rows outvote 8 ``sql``
  examples: shipped rows that look like an operator category's examples are down-weighted in
  training, and at inference a prompt similar to an operator example (TF-IDF cosine) is pulled
  towards that example's category.
* **Multi-turn**: the latest user turn decides, in proportion to its evidence (length x confidence);
  the rest of the decision comes from earlier user turns (decaying), assistant answers (less) and
  the system prompt (a little), so "now make it faster" after a coding turn stays ``code``.
  Per-text results are memoised, since clients resend the history with every request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections import Counter
from itertools import repeat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILTIN_CATEGORIES: tuple[str, ...] = (
    "code",
    "math",
    "reasoning",
    "creative",
    "text",
    "chat",
    "translation",
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"
DEFAULT_TRAINING_FILES: tuple[str, ...] = (
    "train.jsonl",
    "extra.jsonl",
    "extra2.jsonl",
    "extra3.jsonl",
    "extra4.jsonl",
    "extra5.jsonl",
    "oasst1_labeled.jsonl",
)
SHIPPED_MODEL = DATA_DIR / "model.npz"
HANDWRITTEN_SOURCE = "serve_graph/handwritten"
# Real user prompts (OpenAssistant oasst1 train split) labeled for serve_graph: see the data README.
LABELED_REAL_SOURCE = "oasst1/train-labeled"
OPERATOR_SOURCE = "operator"

# Any edit to this module changes the fingerprint of every model (shipped, cached), so a model is
# never served with features or training code other than its own. Run
# `python -m bench.classifier --retrain` after editing; until then start-up retrains (and caches).
_CODE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

HEAD_CHARS = 800
TAIL_CHARS = 250
LAST_LINE_CHARS = 300
STEM_CHARS = 5


# --------------------------------------------------------------------------------------------------
# Public result type
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    """One routing decision; the caller applies its confidence threshold and default route."""

    category: str
    confidence: float  # probability of `category`, 0..1
    scores: dict[str, float]  # all categories' probabilities
    latency_ms: float  # time spent classifying this request


# --------------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------------

# CJK ideographs, kana and hangul have no spaces between words: one token per character, and the
# word bigrams below then give character bigrams. Other letters form words; any other visible
# character is its own token (``{``, ``;``, ``=``, ``$``, ``\\`` ... separate code and math from prose).
_TOKEN_RE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\d_]+|\d+|[^\w\s]"
)
_DIGIT_RE = re.compile(r"\d")
_SCRIPT_RES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("cyrillic", r"[\u0400-\u04ff]"),
        ("greek", r"[\u0370-\u03ff]"),
        ("arabic", r"[\u0600-\u06ff]"),
        ("hebrew", r"[\u0590-\u05ff]"),
        ("devanagari", r"[\u0900-\u097f]"),
        ("bengali", r"[\u0980-\u09ff]"),
        ("telugu", r"[\u0c00-\u0c7f]"),
        ("thai", r"[\u0e00-\u0e7f]"),
        ("kana", r"[\u3040-\u30ff]"),
        ("han", r"[\u4e00-\u9fff]"),
        ("hangul", r"[\uac00-\ud7af]"),
    )
)
_LATIN_EXT_RE = re.compile(r"[\u00c0-\u024f]")  # accented Latin: de/fr/es/tr/vi... text

# Prior knowledge: word groups that signal a category. The model learns one weight per *group* as
# well as per word, so a word never seen in training ("kotlin", "villanelle", "übersetze") still
# borrows the strength of its group. Entries are one or two tokens (after `_tokens`); the weights
# are learned, nothing here decides a category by itself.
_LEXICON_SOURCE: dict[str, str] = {
    "prog_lang": """python java javascript typescript js ts node nodejs c++ c# csharp golang rust kotlin swift
        ruby php perl scala haskell elixir erlang clojure lua dart julia matlab fortran cobol assembly
        bash shell powershell zsh sql mysql postgres postgresql sqlite mongodb redis graphql html css scss
        react vue angular svelte django flask fastapi express spring laravel rails jquery pandas numpy
        pytorch tensorflow docker kubernetes k8s terraform ansible nginx linux git github gitlab npm pip
        yarn maven gradle cargo webpack vite jest pytest junit aws lambda s3 excel vba regex json yaml xml
        api apis sdk cli jupyter vscode vim emacs""",
    "code_term": """code coding program programming function functions method methods class classes variable
        variables compile compiler compiles runtime script scripts debug debugging bug bugs error errors
        exception exceptions traceback stack crash crashes crashed segfault refactor refactoring implement
        implementation algorithm algorithms array arrays list lists dict dictionary hashmap string strings
        integer boolean loop loops recursion recursive pointer pointers null undefined nonetype typeerror
        valueerror import module package library framework endpoint endpoints backend frontend database
        query queries schema table index deploy deployment server client request response http https
        async await thread threads concurrency mutex repo repository commit branch merge build unit test
        tests testing syntax parse parser regex snippet sorting binary tree node nodes linked queue
        heap graph dependency dependencies install container containers config configuration env
        localhost port cors webhook""",
    "math_term": """solve equation equations integral integrate derivative differentiate limit limits
        probability matrix matrices determinant eigenvalue eigenvalues vector vectors polynomial
        quadratic linear logarithm log exponent exponential factorial prime primes divisible remainder
        modulo gcd lcm fraction fractions decimal percent percentage ratio proportion sum product
        quotient sqrt root roots theorem prove proof lemma induction geometry triangle circle radius
        diameter area perimeter volume angle angles hypotenuse parabola slope tangent sine cosine
        calculus algebra arithmetic statistics mean median mode variance deviation average compute
        calculate evaluate simplify expand factor factorize inequality inequalities series sequence
        converge converges convergence infinite digits integers integer real numbers complex
        combinatorics permutations combinations dice coin expected value interest compounded""",
    "reason_term": """puzzle puzzles riddle riddles logic logical logically deduce deduction deduct infer
        inference premise premises conclusion conclude valid validity fallacy fallacies syllogism
        paradox assumption assumptions hypothesis hypotheses argument arguments reasoning reason step
        plan planning schedule scheduling constraint constraints prioritize priority tradeoff tradeoffs
        trade-off pros cons analyze analyse analysis evaluate weigh compare decision decide strategy
        strategic scenario scenarios estimate estimation consequences implications root cause causes
        truth lying liar liars knight knights knave knaves true false uncertain order arrangement
        sequence pattern next""",
    "creative_term": """story stories tale fable poem poems poetry haiku sonnet limerick villanelle verse
        verses rhyme rhyming lyrics song songs rap jingle slogan slogans tagline taglines caption captions
        headline headlines speech toast eulogy letter email emails blog post posts tweet tweets thread
        newsletter ad ads advertisement copy copywriting pitch press release brainstorm brainstorming
        ideas names name invent imagine imaginative creative fiction fictional novel chapter plot
        character characters scene screenplay script dialogue monologue roleplay role-play role persona
        pretend play act embody character stay narrate narrator fantasy sci-fi horror mystery romance
        bedtime joke jokes funny humorous invitation greeting wish wishes congratulations cover""",
    "text_term": """summarize summarise summary summarizing summarization tl;dr tldr condense shorten
        rewrite rewriting rephrase reword paraphrase proofread proofreading grammar spelling punctuation
        correct correction edit edits polish tone formal informal concise simplify extract extraction
        classify classification categorize categorise label sentiment keywords key points outline
        bullet bullets passage paragraph paragraphs text texts article excerpt document transcript
        notes review reviews email following below above given context according based quote table
        json csv list format reformat convert contradictions inconsistencies""",
    "chat_term": """hi hello hey thanks thank morning evening how's you're your advice tips tip recommend
        recommendation recommendations suggest should feel feeling lonely worried stressed anxious
        happy sad why explain what who where when history historical science meaning difference
        opinion favorite favourite think healthy health travel visit learn""",
    "translate_verb": """translate translated translating translation translations translator traduce
        traducir traduzca traducción traduis traduire traduisez traduction übersetze übersetzen
        übersetzung übersetzt traduci tradurre traduzione traduza traduzir tradução vertaal vertalen
        przetłumacz переведи переведите перевести перевод перевод çevir çevirir çeviri dịch ترجم
        翻译 翻譯 翻訳 訳し 訳 번역""",
    "lang_name": """english spanish french german italian portuguese dutch russian chinese mandarin
        cantonese japanese korean arabic hindi bengali turkish vietnamese thai polish swedish
        norwegian danish finnish greek hebrew czech hungarian romanian ukrainian indonesian malay
        tagalog swahili persian farsi urdu latin inglés español francés alemán italiano portugués
        englisch spanisch französisch deutsch italienisch russisch chinesisch japanisch anglais
        espagnol allemand français italien chinois japonais russe английский английского
        английском русский русского немецкий немецкого французский французского испанский
        китайский японский inglês espanhol francês alemão ingilizce ingilizceye türkçe türkçeden
        anh 英文 英语 英語 中文 汉语 日语 日本語 法语 德语 俄语 西班牙语 韩语 영어""",
}


LEXICON_DIR = Path(__file__).resolve().parent.parent / "data" / "lexicon"
# Larger word groups kept as data files (term lists, one per line): group name -> file.
LEXICON_FILES: dict[str, str] = {"tech": "tech.txt", "math_concept": "math.txt"}


def _lexicon_groups() -> dict[str, tuple[str, ...]]:
    """Every word group: the inline ones above plus the term lists in ``data/lexicon/``."""
    groups = {name: tuple(words.split()) for name, words in _LEXICON_SOURCE.items()}
    for name, filename in LEXICON_FILES.items():
        lines = (LEXICON_DIR / filename).read_text(encoding="utf-8").splitlines()
        groups[name] = tuple(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
    return groups


def _build_lexicon(groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Map each (tokenised) entry to the group features it fires; entries may sit in several groups.

    Only words and bigrams are looked up, so an entry is keyed by its first two tokens, digits
    normalised as in ``_tokens`` ("c++" by "c +", "esp32" by "esp 00"). An entry of several words
    that tokenises to more than two tokens is skipped: "two-factor authentication" keyed by "two -"
    would fire on unrelated text.
    """
    lexicon: dict[str, tuple[str, ...]] = {}
    for group, entries in groups.items():
        for entry in entries:
            toks = _TOKEN_RE.findall(_DIGIT_RE.sub("0", entry.lower()))
            if len(toks) > 2 and len(entry.split()) > 1:
                continue
            key = " ".join(toks[:2])
            if key and "@" + group not in lexicon.get(key, ()):
                lexicon[key] = lexicon.get(key, ()) + ("@" + group,)
    return lexicon


_LEXICON_GROUPS = _lexicon_groups()
_LEXICON = _build_lexicon(_LEXICON_GROUPS)
_LEXICON_KEYS = frozenset(_LEXICON)


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(_DIGIT_RE.sub("0", text.lower()))


def _bucket(value: int) -> str:
    """Coarse log2 bucket, so shape features generalise across nearby sizes."""
    return str(value.bit_length())


def extract_features(text: str) -> list[str]:
    """Sparse binary features of one prompt (duplicates allowed; callers de-duplicate)."""
    return _featurize(text)[0]


def _featurize(text: str) -> tuple[list[str], int]:
    """Features and the number of tokens in the window (how much evidence the text carries).

    Only a bounded head+tail window is tokenised, so the cost does not grow with the prompt.
    """
    if len(text) > HEAD_CHARS + TAIL_CHARS:
        parts: tuple[str, ...] = (text[:HEAD_CHARS], text[-TAIL_CHARS:])
    else:
        parts = (text,)
    feats: list[str] = []
    n_tokens = 0
    for part in parts:
        toks = _tokens(part)
        n_tokens += len(toks)
        grams = toks + list(map(" ".join, zip(toks, toks[1:])))
        feats += grams
        # 5-letter prefixes of Latin-script words: "riddles"/"riddle", "estimate"/"estimation"
        # share a feature, so inflections unseen in training still count (CV +1.2 points).
        feats += ["~" + t[:STEM_CHARS] for t in set(toks) if len(t) >= 4 and t.isascii() and t.isalpha()]
        for gram in _LEXICON_KEYS.intersection(grams):  # set ops run in C; hits are few
            feats += _LEXICON[gram]
    head = _tokens(text[:80])[:3]
    feats += ["^" + t for t in head]
    if len(head) >= 2:
        feats.append("^" + head[0] + " " + head[1])
    stripped = text.rstrip()
    cut = stripped.rfind("\n", max(0, len(stripped) - LAST_LINE_CHARS))
    if cut > 0:  # multi-line prompt: the last line often holds the actual instruction
        last = _tokens(stripped[cut + 1 :][:80])[:3]
        feats += ["$" + t for t in last]
    feats += _shape_features(text, parts)
    return feats, n_tokens


def _shape_features(text: str, window: Sequence[str]) -> list[str]:
    """Length, layout and writing-system features, all computed with C-level string methods."""
    # "#any" is in every row: no row is empty (np.add.reduceat needs that) and it acts as a bias.
    feats = ["#any", "#len" + _bucket(len(text)), "#lines" + _bucket(text.count("\n"))]
    if "```" in text:
        feats.append("#fence")
    if "    " in text or "\t" in text:
        feats.append("#indent")
    for part in window:
        if part.isascii():  # the common case: no other writing system to look for
            continue
        for name, rx in _SCRIPT_RES:
            if rx.search(part):
                feats.append("#script_" + name)
        if _LATIN_EXT_RE.search(part):
            feats.append("#script_latin_ext")
    return feats


# --------------------------------------------------------------------------------------------------
# Messages -> turns
# --------------------------------------------------------------------------------------------------


def message_text(message: Mapping[str, Any]) -> str:
    """Text of one OpenAI chat message; image/audio parts and malformed parts are ignored."""
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, Mapping) and part.get("type", "text") in ("text", "input_text"):
                value = part.get("text")
                if isinstance(value, str):
                    texts.append(value)
        return "\n".join(texts)
    return ""


# --------------------------------------------------------------------------------------------------
# Training: multinomial logistic regression with numpy L-BFGS over a CSR matrix
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters, chosen by CV over the hand-written prompts and, since they exist, over the
    labeled real prompts (leave one labeler out; bench/classifier.py --cv): those look like real
    traffic, unlike the benchmark-heavy dev set."""

    l2: float = 1e-5  # L2 penalty per unit of (normalised) sample weight
    # L-BFGS iterations. 40 was flat on the hand-written CV before the real prompts; with them,
    # running to convergence (~80) gains 1.3 points of real-prompt CV accuracy and 1 of hand-written
    # (150 adds nothing). It doubles training time, not inference time.
    max_iter: int = 80
    # Features seen in fewer documents are dropped (except operator examples). 3 rather than 2: CV
    # is the same (within 0.4 points) and the vocabulary ~50k instead of ~80k features, which makes
    # the per-feature lookups ~30 % faster (fewer cache misses), bench.classifier --latency.
    min_df: int = 3
    source_cap: float = 120.0  # a source contributes at most this many examples' worth of weight
    handwritten_weight: float = 5.0
    real_prompt_weight: float = 5.0  # labeled real user prompts (LABELED_REAL_SOURCE)
    operator_weight: float = 4.0  # on top of class balancing (see _sample_weights)
    max_class_boost: float = 1000.0  # per-example cap on the up-weighting that balances classes
    temperature: float = 1.0  # softmax temperature applied at inference
    conflict_ratio: float = 0.5  # see _operator_precedence
    conflict_discount: float = 0.05


@dataclass
class _Example:
    text: str
    label: str
    source: str


@dataclass
class _Csr:
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1


def _build_matrix(
    feature_lists: Sequence[list[str]], vocab: Mapping[str, int]
) -> _Csr:
    indptr = [0]
    indices: list[int] = []
    values: list[float] = []
    for feats in feature_lists:
        ids = sorted({vocab[f] for f in feats if f in vocab})
        indices += ids
        values += [1.0 / math.sqrt(len(ids))] * len(ids) if ids else []
        indptr.append(len(indices))
    return _Csr(
        np.asarray(indptr, dtype=np.int64),
        np.asarray(indices, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        len(vocab),
    )


class _SoftmaxObjective:
    """Weighted cross-entropy + L2 and its gradient, vectorised over a CSR matrix.

    Weights are kept class-major, ``WT`` of shape (classes, features), so that both products run
    along contiguous rows: ``X @ W`` gathers the columns of ``WT`` per non-zero and sums them per
    document with ``np.add.reduceat``; ``X.T @ G`` does the same on a feature-sorted copy of the
    non-zeros. float32 for the gathers halves memory traffic; the loss is accumulated in float64.
    """

    def __init__(self, X: _Csr, y: np.ndarray, w: np.ndarray, n_classes: int, l2: float) -> None:
        self.X, self.k, self.l2 = X, n_classes, l2
        self.w = w / w.sum()
        self.Y = np.zeros((n_classes, X.n_rows))
        self.Y[y, np.arange(X.n_rows)] = 1.0
        rows = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
        order = np.argsort(X.indices, kind="stable")
        self.t_rows = rows[order]
        self.t_vals = X.values[order].astype(np.float32)
        sorted_idx = X.indices[order]
        self.t_starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        if len(self.t_starts) != X.n_features:
            raise ValueError("every feature must occur in at least one training row")
        self.row_starts = X.indptr[:-1]
        self.vals = X.values.astype(np.float32)

    def scores(self, WT: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(classes, rows) logits."""
        gathered = np.take(WT.astype(np.float32), self.X.indices, axis=1)
        gathered *= self.vals
        return np.add.reduceat(gathered, self.row_starts, axis=1).astype(np.float64) + b[:, None]

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        V, k = self.X.n_features, self.k
        WT = theta[: V * k].reshape(k, V)
        b = theta[V * k :]
        Z = self.scores(WT, b)
        Z -= Z.max(axis=0)
        logp = Z - np.log(np.exp(Z).sum(axis=0))
        loss = -float((self.w * (logp * self.Y).sum(axis=0)).sum())
        loss += 0.5 * self.l2 * _dot(theta[: V * k], theta[: V * k])
        G = (np.exp(logp) - self.Y) * self.w
        spread = np.take(G.astype(np.float32), self.t_rows, axis=1)
        spread *= self.t_vals
        gWT = np.add.reduceat(spread, self.t_starts, axis=1).astype(np.float64)
        gWT += self.l2 * WT
        return loss, np.concatenate([gWT.ravel(), G.sum(axis=1)])


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: OpenBLAS threads spin badly on a busy 2-core box (20x slower)."""
    return float(np.einsum("i,i->", a, b))


def _lbfgs(fun, theta: np.ndarray, max_iter: int, memory: int = 10, tol: float = 1e-6) -> np.ndarray:
    """Plain L-BFGS with Armijo backtracking: enough for a smooth convex objective, no scipy needed."""
    loss, grad = fun(theta)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for _ in range(max_iter):
        q = grad.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist)):
            a = _dot(s, q) / _dot(yv, s)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= _dot(s_hist[-1], y_hist[-1]) / _dot(y_hist[-1], y_hist[-1])
        for (s, yv), a in zip(zip(s_hist, y_hist), reversed(alphas)):
            q += s * (a - _dot(yv, q) / _dot(yv, s))
        direction = -q
        slope = _dot(grad, direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -grad, -_dot(grad, grad)
        step = 1.0 if s_hist else 1.0 / max(1.0, float(np.abs(grad).max()))
        while True:
            new_theta = theta + step * direction
            new_loss, new_grad = fun(new_theta)
            if new_loss <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = new_theta - theta, new_grad - grad
        if _dot(s, yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        converged = abs(loss - new_loss) <= tol * max(1.0, abs(loss))
        theta, loss, grad = new_theta, new_loss, new_grad
        if converged:
            break
    return theta


def _source_group(source: str) -> str:
    """The dataset a row comes from: ``bbh/navigate`` -> ``bbh``; P3 keeps its sub-dataset."""
    parts = source.split("/")
    return "/".join(parts[:2]) if parts[0] == "p3" else parts[0]


def _operator_precedence(
    X: _Csr, y: np.ndarray, operator: np.ndarray, doc_freq: np.ndarray, cfg: TrainConfig
) -> np.ndarray:
    """Per-row weight factor: shipped rows that look like an operator category's examples yield.

    An operator who adds a ``sql`` category with "write a SQL query that ..." examples means those
    prompts to go there, but the shipped data labels such prompts ``code``; with both in the
    training set the few operator rows lose to the many shipped ones. So, for each category the
    operator gave examples for, shipped rows of *other* categories whose TF-IDF cosine to that
    category's example centroid is at least ``conflict_ratio`` times the examples' own typical
    similarity are down-weighted by ``conflict_discount``.
    """
    factor = np.ones(X.n_rows)
    if not operator.any():
        return factor
    idf = np.log((1.0 + X.n_rows) / (1.0 + doc_freq)) + 1.0
    rows = np.repeat(np.arange(X.n_rows), np.diff(X.indptr))
    vals = idf[X.indices]
    norms = np.sqrt(np.bincount(rows, weights=vals * vals, minlength=X.n_rows))
    vals = vals / np.maximum(norms[rows], 1e-12)
    for c in np.unique(y[operator]):
        members = np.flatnonzero(operator & (y == c))
        centroid = np.zeros(X.n_features)
        for i in members:
            lo, hi = X.indptr[i], X.indptr[i + 1]
            centroid[X.indices[lo:hi]] += vals[lo:hi]
        centroid /= len(members)
        sims = np.bincount(rows, weights=vals * centroid[X.indices], minlength=X.n_rows)
        threshold = cfg.conflict_ratio * float(np.median(sims[members]))
        factor[(~operator) & (y != c) & (sims >= threshold)] *= cfg.conflict_discount
    return factor


def _sample_weights(
    examples: Sequence[_Example],
    categories: Sequence[str],
    cfg: TrainConfig,
    discount: np.ndarray | None = None,
) -> np.ndarray:
    """Cap each source's total weight, up-weight curated prompts, then balance the classes.

    Without the source cap, 800 BIG-Bench-Hard puzzles would define ``reasoning`` and 200 CommonGen
    templates ``creative``; real users write neither. ``discount`` (per row) applies before the
    class balancing.
    """
    per_source = Counter(_source_group(ex.source) for ex in examples)
    w = np.empty(len(examples))
    for i, ex in enumerate(examples):
        if ex.source == OPERATOR_SOURCE:
            w[i] = 1.0  # scaled by operator_weight after the class balancing
        elif ex.source == HANDWRITTEN_SOURCE:
            w[i] = cfg.handwritten_weight
        elif ex.source == LABELED_REAL_SOURCE:
            w[i] = cfg.real_prompt_weight
        else:
            w[i] = min(1.0, cfg.source_cap / per_source[_source_group(ex.source)])
    if discount is not None:
        w *= discount
    labels = np.array([categories.index(ex.label) for ex in examples])
    totals = np.bincount(labels, weights=w, minlength=len(categories))
    target = totals[totals > 0].mean()
    counts = np.bincount(labels, minlength=len(categories))
    for c in range(len(categories)):
        if totals[c] > 0:
            boost = min(target / totals[c], cfg.max_class_boost * counts[c] / max(totals[c], 1e-9))
            w[labels == c] *= boost if boost > 0 else 1.0
    # Operator examples state intent: they outweigh the shipped rows of their class, and a new
    # category of 8 examples ends up with more total weight than a builtin one.
    w[np.array([ex.source == OPERATOR_SOURCE for ex in examples])] *= cfg.operator_weight
    return w


@dataclass
class _Model:
    categories: tuple[str, ...]
    vocab: dict[str, int]
    W: np.ndarray  # (n_features, n_classes) float32
    b: np.ndarray  # (n_classes,) float32
    temperature: float = 1.0
    # For the operator-example memory (empty when there are no operator examples):
    idf: np.ndarray | None = None  # (n_features,) float32
    memory: tuple[tuple[str, str], ...] = ()  # (text, category) of the operator's examples


def train_model(examples: Sequence[_Example], cfg: TrainConfig = TrainConfig()) -> _Model:
    """Fit the classifier. Categories are taken from the labels: builtin first, new ones after."""
    present = {ex.label for ex in examples}
    categories = tuple(c for c in BUILTIN_CATEGORIES if c in present) + tuple(
        sorted(present - set(BUILTIN_CATEGORIES))
    )
    feature_lists = [extract_features(ex.text) for ex in examples]
    df: Counter[str] = Counter()
    forced: set[str] = set()
    for ex, feats in zip(examples, feature_lists):
        uniq = set(feats)
        df.update(uniq)
        if ex.source == OPERATOR_SOURCE:
            forced |= uniq  # a handful of operator examples must be able to define a category
    names = sorted(f for f, n in df.items() if n >= cfg.min_df or f in forced)
    vocab = {f: i for i, f in enumerate(names)}
    X = _build_matrix(feature_lists, vocab)
    y = np.array([categories.index(ex.label) for ex in examples])
    operator = np.array([ex.source == OPERATOR_SOURCE for ex in examples])
    doc_freq = np.array([df[f] for f in names], dtype=np.float64)
    discount = _operator_precedence(X, y, operator, doc_freq, cfg)
    w = _sample_weights(examples, categories, cfg, discount)
    objective = _SoftmaxObjective(X, y, w, len(categories), cfg.l2)
    theta = _lbfgs(objective, np.zeros(len(vocab) * len(categories) + len(categories)), cfg.max_iter)
    k = len(categories)
    W = np.ascontiguousarray(theta[: len(vocab) * k].reshape(k, len(vocab)).T, dtype=np.float32)
    b = theta[len(vocab) * k :].astype(np.float32)
    memory = tuple((ex.text, ex.label) for ex in examples if ex.source == OPERATOR_SOURCE)
    idf = (np.log((1.0 + len(examples)) / (1.0 + doc_freq)) + 1.0).astype(np.float32)
    return _Model(categories, vocab, W, b, cfg.temperature, idf if memory else None, memory)


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContextConfig:
    """How earlier turns are blended into the decision for the latest user turn.

    The latest turn keeps a share ``a = min(1, tokens / full_evidence_tokens) * (0.5 + 0.5 * conf)``
    of the decision; the rest goes to the context: earlier user turns (weight 1, then decaying),
    assistant answers (less: an answer's style says less about the task than a request) and the
    system prompt (a little). If the context weights sum to less than 1, the remainder stays with
    the latest turn, so a lone system prompt can only nudge a decision.
    """

    full_evidence_tokens: int = 16
    user_decay: float = 0.6
    assistant_weight: float = 0.3
    system_weight: float = 0.25
    max_user_turns: int = 3
    max_assistant_turns: int = 2


@dataclass(frozen=True)
class MemoryConfig:
    """How strongly a prompt that resembles an operator example is pulled to that example's category.

    TF-IDF cosine over word uni/bigrams. Measured with 8 SQL examples: SQL requests score 0.25-0.3,
    the 99th percentile of unrelated dev prompts 0.07 (max 0.10).
    """

    low: float = 0.12  # below this similarity: no pull
    high: float = 0.35  # at or above: full pull
    strength: float = 0.9  # share of the probability mass moved at full pull


class _ExampleMemory:
    """Operator examples as nearest-neighbour rules, on top of the trained model.

    Training alone cannot guarantee that 8 examples of a new category beat 1,000 shipped rows that
    share its vocabulary ("write a SQL query" is ``code`` in the shipped data). The operator's intent
    is explicit, so a prompt similar to one of their examples moves probability mass to that
    example's category, in proportion to the similarity.
    """

    def __init__(
        self,
        idf0: np.ndarray,
        column: np.ndarray,
        vectors: np.ndarray,
        owner: np.ndarray,
        cfg: MemoryConfig,
    ) -> None:
        self._idf0 = idf0  # (V + 1,) idf of word n-gram rows, 0 elsewhere (row 0: unknown)
        self._column = column  # (V + 1,) row -> column of `vectors`, -1 if in no example
        self._vectors = vectors  # (n_memory_features, n_examples) L2-normalised TF-IDF
        self._owner = owner  # (n_examples,) category index of each example
        self._cfg = cfg

    @classmethod
    def build(cls, model: _Model, row_get: Any, cfg: MemoryConfig = MemoryConfig()) -> _ExampleMemory:
        assert model.idf is not None
        word = np.array([f[:1] not in "^$#@~" for f in model.vocab], dtype=bool)
        idf0 = np.concatenate([[0.0], np.where(word, model.idf, 0.0)]).astype(np.float32)
        example_rows = []
        for text, _ in model.memory:
            keys = set(_featurize(text)[0])
            rows = np.fromiter(map(row_get, keys, repeat(0)), dtype=np.intp, count=len(keys))
            example_rows.append(np.unique(rows[idf0[rows] > 0]))
        used = np.unique(np.concatenate(example_rows)) if example_rows else np.zeros(0, np.intp)
        column = np.full(len(idf0), -1, dtype=np.intp)
        column[used] = np.arange(len(used))
        vectors = np.zeros((len(used), len(example_rows)), dtype=np.float32)
        for j, rows in enumerate(example_rows):
            weights = idf0[rows]
            norm = float(np.sqrt((weights * weights).sum()))
            if norm > 0:
                vectors[column[rows], j] = weights / norm
        owner = np.array([model.categories.index(label) for _, label in model.memory], dtype=np.intp)
        return cls(idf0, column, vectors, owner, cfg)

    def apply(self, p: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Pull ``p`` toward the category of the most similar operator example."""
        rows = np.unique(rows)
        weights = self._idf0[rows]
        norm = float(np.sqrt((weights * weights).sum()))
        cols = self._column[rows]
        hit = cols >= 0
        if norm == 0.0 or not hit.any():
            return p
        sims = weights[hit] @ self._vectors[cols[hit]] / norm
        best = int(sims.argmax())
        cfg = self._cfg
        pull = cfg.strength * min(1.0, max(0.0, (float(sims[best]) - cfg.low) / (cfg.high - cfg.low)))
        if pull <= 0.0:
            return p
        p = p * (1.0 - pull)
        p[self._owner[best]] += pull
        return p


class Classifier:
    """Immutable after construction apart from a small memo; safe to share between threads."""

    MEMO_SIZE = 4096

    def __init__(
        self, model: _Model, context: ContextConfig = ContextConfig(), fingerprint: str = ""
    ) -> None:
        self._model = model
        self.fingerprint = fingerprint
        self._context = context
        self.categories: tuple[str, ...] = model.categories
        # Row i + 1 of _W0 holds feature i; row 0 is zeros for unknown features.
        self._row_get = {f: i + 1 for f, i in model.vocab.items()}.get
        self._W0 = np.vstack([np.zeros((1, model.W.shape[1]), dtype=model.W.dtype), model.W])
        self._b = model.b.astype(np.float64)
        self._inv_t = 1.0 / model.temperature
        self._memory = _ExampleMemory.build(model, self._row_get) if model.memory else None
        self._memo: dict[tuple[int, int], tuple[np.ndarray, int]] = {}

    # -- single text -------------------------------------------------------------------------------

    def _proba(self, text: str) -> tuple[np.ndarray, int]:
        """Class probabilities and the number of tokens seen (a measure of evidence), memoised.

        Chat clients resend the whole history with every request, so the earlier turns that
        ``classify_messages`` blends in were usually classified one request ago. The memo is keyed
        by (hash, length) of the text, not the text itself, so it holds no prompt content.
        """
        key = (hash(text), len(text))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        result = self._compute_proba(text)
        result[0].flags.writeable = False  # shared through the memo: callers must copy, not mutate
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()  # cheap and rare; an LRU would cost more per request than it saves
        self._memo[key] = result
        return result

    def _compute_proba(self, text: str) -> tuple[np.ndarray, int]:
        feats, n_tokens = _featurize(text)
        if n_tokens == 0:  # nothing to go on: say so, the caller's threshold picks the default route
            return np.full(len(self.categories), 1.0 / len(self.categories)), 0
        keys = set(feats)
        # unknown features map to row 0, which is all zeros; the loop runs in C (map + fromiter)
        rows = np.fromiter(map(self._row_get, keys, repeat(0)), dtype=np.intp, count=len(keys))
        known = int(np.count_nonzero(rows))
        z = self._b.copy()
        if known:
            z += self._W0[rows].sum(axis=0, dtype=np.float64) / math.sqrt(known)
        z *= self._inv_t
        z -= z.max()
        p = np.exp(z)
        p /= p.sum()
        if self._memory is not None:
            p = self._memory.apply(p, rows)
        return p, n_tokens

    def _result(self, p: np.ndarray, start: float) -> Classification:
        top = int(p.argmax())
        return Classification(
            category=self.categories[top],
            confidence=float(p[top]),
            scores={c: float(v) for c, v in zip(self.categories, p)},
            latency_ms=(time.perf_counter() - start) * 1000.0,
        )

    def classify_text(self, text: str) -> Classification:
        """Classify one prompt on its own (no conversation context)."""
        start = time.perf_counter()
        p, _ = self._proba(text if isinstance(text, str) else "")
        return self._result(p, start)

    # -- conversation ------------------------------------------------------------------------------

    def classify_messages(self, messages: Sequence[Mapping[str, Any]]) -> Classification:
        """Classify a chat request from its message list.

        The latest user turn decides, weighted by how much evidence it carries (its length and
        confidence). A short or uncertain follow-up ("now make it faster", "and in French?") leaves
        room for earlier user turns, assistant answers and the system prompt, with decaying weights.
        """
        start = time.perf_counter()
        turns = [
            (m.get("role"), message_text(m)) for m in messages if isinstance(m, Mapping)
        ] if isinstance(messages, Sequence) else []
        user = [t for r, t in turns if r == "user" and t.strip()]
        if not user:  # no user text: fall back to whatever text there is
            user = [t for _, t in turns if t.strip()][-1:]
        if not user:
            p, _ = self._proba("")
            return self._result(p, start)
        p_last, n_tokens = self._proba(user[-1])
        cfg = self._context
        share = min(1.0, n_tokens / cfg.full_evidence_tokens) * (0.5 + 0.5 * float(p_last.max()))
        if share < 0.95:  # skip the extra work when the latest turn clearly stands on its own
            p_last = share * p_last + (1.0 - share) * self._context_mix(turns, user, p_last)
        return self._result(p_last, start)

    def _context_mix(
        self, turns: Sequence[tuple[Any, str]], user: Sequence[str], p_last: np.ndarray
    ) -> np.ndarray:
        """Weighted mixture of earlier turns' probabilities; unused weight falls back to ``p_last``."""
        cfg = self._context
        weighted: list[tuple[float, str]] = []
        for k, text in enumerate(reversed(user[:-1][-cfg.max_user_turns :])):
            weighted.append((cfg.user_decay**k, text))
        last_user = max((i for i, (r, _) in enumerate(turns) if r == "user"), default=len(turns))
        answers = [t for r, t in turns[:last_user] if r == "assistant" and t.strip()]
        for k, text in enumerate(reversed(answers[-cfg.max_assistant_turns :])):
            weighted.append((cfg.assistant_weight * cfg.user_decay**k, text))
        system = [t for r, t in turns if r in ("system", "developer") and t.strip()]
        if system:
            weighted.append((cfg.system_weight, system[0]))
        total = sum(w for w, _ in weighted)
        mix = max(0.0, 1.0 - total) * p_last
        scale = 1.0 / max(1.0, total)
        for w, text in weighted:
            mix += (w * scale) * self._proba(text)[0]
        return mix


# --------------------------------------------------------------------------------------------------
# Data loading, caching and the public builder
# --------------------------------------------------------------------------------------------------


def load_examples(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(text, label) pairs from a jsonl file with ``text`` and ``label`` fields."""
    return [(ex.text, ex.label) for ex in _load_jsonl(Path(path))]


def _load_jsonl(path: Path) -> list[_Example]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                out.append(_Example(row["text"], row["label"], row.get("source", path.stem)))
    return out


def _default_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return [data_dir / name for name in DEFAULT_TRAINING_FILES if (data_dir / name).exists()]


def default_examples(data_dir: Path = DATA_DIR) -> list[_Example]:
    """The shipped training set: ``DEFAULT_TRAINING_FILES`` (public sources, hand-written, real)."""
    return [ex for path in _default_files(data_dir) for ex in _load_jsonl(path)]


def operator_examples(extra_examples: Mapping[str, Sequence[str]] | None) -> list[_Example]:
    """Operator-supplied examples; category names are normalised to stripped lower case."""
    out = []
    for label, texts in (extra_examples or {}).items():
        name = str(label).strip().lower()
        if not name:
            raise ValueError("extra_examples: empty category name")
        if isinstance(texts, str):
            raise TypeError(f"extra_examples[{label!r}] must be a list of prompts, not a string")
        out += [_Example(str(t), name, OPERATOR_SOURCE) for t in texts if str(t).strip()]
    return out


def _fingerprint(
    files: Sequence[Path], examples: Sequence[_Example], cfg: TrainConfig
) -> str:
    """Identity of a trained model: code version, hyper-parameters, lexicon and every training row.

    Files are hashed as bytes (cheap: no JSON parsing needed to find out that a cached or shipped
    model is still valid).
    """
    h = hashlib.sha256()
    h.update(_CODE_HASH.encode())
    h.update(repr((cfg, HEAD_CHARS, TAIL_CHARS, LAST_LINE_CHARS, STEM_CHARS)).encode())
    h.update(json.dumps(_LEXICON_GROUPS, sort_keys=True).encode())
    for path in files:
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for ex in examples:
        h.update(json.dumps([ex.text, ex.label, ex.source], ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def _cache_dir() -> Path:
    env = os.environ.get("SERVE_GRAPH_CACHE_DIR")
    if env:
        return Path(env) / "classifier"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "serve_graph" / "classifier"


def save_model(model: _Model, path: Path, fingerprint: str) -> None:
    """Write atomically (tmp + rename) so concurrent replicas never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {
            "fingerprint": fingerprint,
            "categories": list(model.categories),
            "vocab": list(model.vocab),
            "temperature": model.temperature,
            "memory": [list(m) for m in model.memory],
        },
        ensure_ascii=False,
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            arrays = {"W": model.W, "b": model.b, "meta": np.array(meta)}
            if model.idf is not None:
                arrays["idf"] = model.idf
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the shipped file must be readable by all
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_model(path: Path, fingerprint: str) -> _Model | None:
    """The model stored at ``path`` if it was trained from exactly this data and code, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("fingerprint") != fingerprint:
                return None
            return _Model(
                tuple(meta["categories"]),
                {f: i for i, f in enumerate(meta["vocab"])},
                np.ascontiguousarray(data["W"], dtype=np.float32),
                np.asarray(data["b"], dtype=np.float32),
                float(meta["temperature"]),
                np.asarray(data["idf"], dtype=np.float32) if "idf" in data.files else None,
                tuple((t, c) for t, c in meta.get("memory", [])),
            )
    except Exception as exc:  # corrupt or foreign file: retrain instead of failing start-up
        log.warning("ignoring unreadable classifier model %s: %s", path, exc)
        return None


def default_fingerprint(config: TrainConfig = TrainConfig()) -> str:
    """Fingerprint the shipped ``model.npz`` must carry to be used (see ``bench/classifier.py``)."""
    return _fingerprint(_default_files(), [], config)


def build_classifier(
    extra_examples: Mapping[str, Sequence[str]] | None = None,
    *,
    use_cache: bool = True,
    use_shipped: bool = True,
    config: TrainConfig = TrainConfig(),
    examples: Sequence[tuple[str, str]] | None = None,
) -> Classifier:
    """Default training data (shipped) + operator examples -> ready classifier.

    ``extra_examples`` maps a category name to example prompts: an unknown name creates a new
    category, a known one gets sharper. No manual step is needed: the model comes, in order, from
    the shipped ``model.npz`` (default data, no extras), the on-disk cache (same data and code seen
    before), or training here (a few seconds on 2 cores), whose result is then cached. Each source
    is only used when its fingerprint matches, so a stale file can never serve the wrong model.
    ``examples`` replaces the shipped data (experiments, benchmarks).
    """
    operator = operator_examples(extra_examples)
    if examples is None:
        files = _default_files()
        base: list[_Example] | None = None
    else:
        files = []
        base = [_Example(t, l, "custom") for t, l in examples]
    fingerprint = _fingerprint(files, (base or []) + operator, config)
    model = None
    if use_shipped and examples is None and not operator:
        model = _load_model(SHIPPED_MODEL, fingerprint)
        if model is None and SHIPPED_MODEL.exists():
            log.warning("shipped %s is stale (data or code changed): retraining", SHIPPED_MODEL.name)
    cache_path = _cache_dir() / f"model-{fingerprint}.npz"
    if model is None and use_cache:
        model = _load_model(cache_path, fingerprint)
    if model is None:
        data = (default_examples() if base is None else base) + operator
        if not data:
            raise ValueError("no training examples")
        t0 = time.perf_counter()
        model = train_model(data, config)
        log.info(
            "trained the prompt classifier on %d examples (%d features; categories %s) in %.1fs",
            len(data), len(model.vocab), ",".join(model.categories), time.perf_counter() - t0,
        )
        if use_cache:
            try:
                save_model(model, cache_path, fingerprint)
            except OSError as exc:  # read-only home etc.: still serve, just without the cache
                log.warning("could not cache the classifier at %s: %s", cache_path, exc)
    return Classifier(model, fingerprint=fingerprint)
