"""Features of one prompt: what training and inference share, and what a model's vocabulary means.

Sparse binary tokens from a *bounded window* of the prompt (the first ``HEAD_CHARS`` and the last
``TAIL_CHARS`` characters). Instructions sit at the start or at the end of a prompt ("Summarize the
following: <passage>", "<code>\\nWhy does this crash?"), so the window keeps what decides the
category while the cost stays flat: an 8,000-token prompt costs what an 800-character one does.

Tokens: lower-cased words (digits folded to ``0``), single punctuation marks (code and math
syntax), single CJK/kana/hangul characters (no spaces in those scripts), word bigrams, word
prefixes (crude stems), the first words of the prompt and of its last line (where instructions
live), word *groups* from the term lists in ``data/lexicon/`` (so "kotlin", "luajit" or "übersetze"
borrow the weight of their group), and shape features computed over the whole text with C-level
``str`` methods (length, lines, code fences, writing systems).

A trained model is only valid for the features it was trained with. ``feature_fingerprint()``
identifies them: ``FEATURES_VERSION`` (bump it whenever this module's output for some text
changes), the window constants and the term lists. Docstrings, comments and refactors that keep
the output do not change it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

FEATURES_VERSION = 1

HEAD_CHARS = 800
TAIL_CHARS = 250
LAST_LINE_CHARS = 300
STEM_CHARS = 5

LEXICON_DIR = Path(__file__).resolve().parent.parent / "data" / "lexicon"

# CJK ideographs, kana and hangul have no spaces between words: one token per character, and the
# word bigrams below then give character bigrams. Other letters form words; any other visible
# character is its own token (``{``, ``;``, ``=``, ``$``, ``\\`` ... separate code and math from prose).
_TOKEN_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]|[^\W\d_]+|\d+|[^\w\s]")
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


def lexicon_groups(directory: Path = LEXICON_DIR) -> dict[str, tuple[str, ...]]:
    """Every word group: one term list per file, named by the file's stem (``tech.txt`` -> ``@tech``).

    One entry per line; blank lines and lines starting with ``#`` are ignored.
    """
    groups: dict[str, tuple[str, ...]] = {}
    for path in sorted(directory.glob("*.txt")):
        lines = path.read_text(encoding="utf-8").splitlines()
        groups[path.stem] = tuple(t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#"))
    return groups


def build_lexicon(groups: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Map each (tokenised) entry to the group features it fires; entries may sit in several groups.

    Only words and bigrams are looked up, so an entry is keyed by its first two tokens, digits
    normalised as in ``tokens`` ("c++" by "c +", "esp32" by "esp 00"). An entry of several words
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


LEXICON_GROUPS = lexicon_groups()
_LEXICON = build_lexicon(LEXICON_GROUPS)
_LEXICON_KEYS = frozenset(_LEXICON)


def feature_fingerprint() -> str:
    """Identity of the feature space: a model trained under another one must not be served."""
    h = hashlib.sha256()
    h.update(repr((FEATURES_VERSION, HEAD_CHARS, TAIL_CHARS, LAST_LINE_CHARS, STEM_CHARS)).encode())
    h.update(json.dumps(LEXICON_GROUPS, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:32]


def tokens(text: str) -> list[str]:
    """Lower-cased word, number, punctuation and CJK tokens, digits folded to ``0``."""
    found: list[str] = _TOKEN_RE.findall(_DIGIT_RE.sub("0", text.lower()))
    return found


def _bucket(value: int) -> str:
    """Coarse log2 bucket, so shape features generalise across nearby sizes."""
    return str(value.bit_length())


def extract_features(text: str) -> list[str]:
    """Sparse binary features of one prompt (duplicates allowed; callers de-duplicate)."""
    return featurize(text)[0]


def featurize(text: str) -> tuple[list[str], int]:
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
        toks = tokens(part)
        n_tokens += len(toks)
        grams = toks + list(map(" ".join, zip(toks, toks[1:], strict=False)))
        feats += grams
        # 5-letter prefixes of Latin-script words: "riddles"/"riddle", "estimate"/"estimation"
        # share a feature, so inflections unseen in training still count.
        feats += ["~" + t[:STEM_CHARS] for t in set(toks) if len(t) >= 4 and t.isascii() and t.isalpha()]
        for gram in _LEXICON_KEYS.intersection(grams):  # set ops run in C; hits are few
            feats += _LEXICON[gram]
    head = tokens(text[:80])[:3]
    feats += ["^" + t for t in head]
    if len(head) >= 2:
        feats.append("^" + head[0] + " " + head[1])
    stripped = text.rstrip()
    cut = stripped.rfind("\n", max(0, len(stripped) - LAST_LINE_CHARS))
    if cut > 0:  # multi-line prompt: the last line often holds the actual instruction
        last = tokens(stripped[cut + 1 :][:80])[:3]
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
