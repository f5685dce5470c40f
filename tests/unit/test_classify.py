"""Prompt classifier: accuracy floors on held-out data, multi-turn, operator categories, odd input.

Floors are a few points under the numbers measured with `python -m serve_graph.classifier eval`
(macro recall at the time of writing: dev 0.952, mt_bench 0.783, oasst1_real 0.678 (accuracy
0.877; 95 % routed at the default threshold, with 0.902 accuracy), holdout_handwritten 0.933,
realistic_blind 0.957, realistic_blind2 0.895, realistic_blind3 0.886): stable, but a real
regression (a broken feature, lost training data, a stale shipped model) fails them. The dev floor
is the issue's target (92 %).

The third-party sets (dev, mt_bench, oasst1_real and the training corpus) live outside the repo
(``../shared/data/prompts/``): tests that need them skip, saying so, on a clone without them, and
fail instead of skipping under CI (``CI=true``), which has them.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import serve_graph.classifier as C
import serve_graph.classifier.build as build_module
from serve_graph.classifier import BUILTIN_CATEGORIES, Classification, build_classifier, load_examples
from serve_graph.classifier import data as D
from serve_graph.classifier.__main__ import SAMPLE_OPERATOR_EXAMPLES
from serve_graph.classifier.build import load_shipped, shipped_fingerprint
from serve_graph.classifier.evaluate import evaluate
from serve_graph.classifier.features import LEXICON_GROUPS
from serve_graph.classifier.store import load_model
from serve_graph.config import Routes

DATA = D.data_dir()
HAVE_DATA = D.has_third_party_data(DATA)
if not HAVE_DATA and os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(f"CI must have the third-party prompt sets in {DATA} (../shared/data/prompts)")
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"third-party prompt sets not found in {DATA} (they are not part of the repo)"
)


def eval_path(name: str) -> Path:
    """An evaluation set by name: shipped (hand-written) or third-party."""
    shipped = D.SHIPPED_EVAL_DIR / name
    return shipped if shipped.exists() else DATA / name


def _param(name: str) -> object:
    """A set name as a test parameter, skipped when it is third-party and absent."""
    return pytest.param(name, marks=needs_data) if name in D.THIRD_PARTY_EVAL_FILES else name


# measured (`python -m serve_graph.classifier eval`): see the module docstring. (macro recall, macro F1).
MACRO_FLOORS: dict[str, tuple[float, float]] = {
    "dev.jsonl": (0.92, 0.92),
    "mt_bench.jsonl": (0.71, 0.68),
    "oasst1_real.jsonl": (0.62, 0.65),  # 5 classes, two of them tiny (math 21, reasoning 10)
    "holdout_handwritten.jsonl": (0.90, 0.90),
    "realistic_blind.jsonl": (0.91, 0.91),
    "realistic_blind2.jsonl": (0.85, 0.85),
    "realistic_blind3.jsonl": (0.86, 0.86),
}
# Sets whose class mix is that of real traffic: there plain accuracy is what users see.
ACCURACY_FLOORS: dict[str, float] = {"oasst1_real.jsonl": 0.85}
# oasst1_real at the default confidence threshold: (share routed by category, their accuracy).
ROUTED_FLOOR = (0.90, 0.88)
NEAR_DUPLICATE_JACCARD = 0.6

# A new category (sql) and a sharpened builtin one ("what does <foreign phrase> mean" is translation).
SQL_EXAMPLES = SAMPLE_OPERATOR_EXAMPLES["sql"]
MEANING_EXAMPLES = SAMPLE_OPERATOR_EXAMPLES["translation"]


def _user(text: object) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.fixture(scope="module")
def clf() -> C.Classifier:
    return build_classifier()


@pytest.fixture(scope="module")
def custom_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture(scope="module")
def custom(custom_cache: Path) -> C.Classifier:
    """A new category and a sharpened one: the shipped model adapted at start-up (~1-2 s), cached."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SERVE_GRAPH_CACHE_DIR", str(custom_cache))
        return build_classifier({"sql": SQL_EXAMPLES, "translation": MEANING_EXAMPLES})


# -- accuracy on held-out data ---------------------------------------------------------------------


def test_shipped_model_is_in_the_current_feature_space() -> None:
    """Start-up refuses a model trained with other features; this keeps that from ever shipping."""
    assert load_model(D.SHIPPED_MODEL) is not None
    assert load_shipped().categories == BUILTIN_CATEGORIES


@needs_data
def test_shipped_model_matches_the_training_data() -> None:
    """model.npz must be retrained (`python -m serve_graph.classifier train`) when the data, the
    features or the training recipe change."""
    assert load_shipped().meta["fingerprint"] == shipped_fingerprint(DATA)


def test_every_eval_set_has_a_floor() -> None:
    shipped = {p.name for p in D.SHIPPED_EVAL_DIR.glob("*.jsonl")}
    assert set(MACRO_FLOORS) == shipped | set(D.THIRD_PARTY_EVAL_FILES)


def test_no_third_party_text_in_the_package() -> None:
    """Only hand-written prompt files ship: every row of every shipped jsonl is our own."""
    shipped = sorted(D.PACKAGE_DATA.rglob("*.jsonl"))
    assert shipped
    for path in shipped:
        sources = {ex.source for ex in D.load_jsonl(path)}
        assert all(src.startswith("serve_graph/") for src in sources), (path.name, sources)
    assert not {p.name for p in shipped} & {*D.THIRD_PARTY_EVAL_FILES, *D.training_file_names()}


@pytest.mark.parametrize("name", [_param(n) for n in MACRO_FLOORS])
def test_macro_accuracy_on_held_out_sets(clf: C.Classifier, name: str) -> None:
    """Every evaluation set (provenance of each in data/prompts/README) above its floor."""
    recall_floor, f1_floor = MACRO_FLOORS[name]
    report = evaluate(clf, load_examples(eval_path(name)))
    recall, f1 = report["macro_recall"], report["macro_f1"]
    assert recall >= recall_floor, (name, recall)
    assert f1 >= f1_floor, (name, f1)


@pytest.mark.parametrize("name", [_param(n) for n in ACCURACY_FLOORS])
def test_accuracy_on_real_traffic_mix(clf: C.Classifier, name: str) -> None:
    rows = load_examples(eval_path(name))
    accuracy = sum(clf.classify_text(text).category == label for text, label in rows) / len(rows)
    assert accuracy >= ACCURACY_FLOORS[name], (name, accuracy)


@needs_data
def test_confident_decisions_on_real_traffic(clf: C.Classifier) -> None:
    """At the default ``routes.confidence_threshold`` most real prompts are routed by category, and
    those are right more often than all prompts are: the threshold is what buys that accuracy."""
    threshold = Routes.model_fields["confidence_threshold"].default
    results = [(clf.classify_text(text), label) for text, label in load_examples(eval_path("oasst1_real.jsonl"))]
    routed = [r.category == label for r, label in results if r.confidence >= threshold]
    share, accuracy = len(routed) / len(results), sum(routed) / len(routed)
    assert share >= ROUTED_FLOOR[0], share
    assert accuracy >= ROUTED_FLOOR[1], accuracy


def _training_files() -> list[Path]:
    """Every training file present: the third-party ones only where they are."""
    return D.training_files(DATA) if HAVE_DATA else D.handwritten_files()


def _eval_names() -> list[str]:
    return [n for n in MACRO_FLOORS if eval_path(n).exists()]


def test_eval_sets_are_not_in_training_data() -> None:
    train = {" ".join(t.lower().split()) for path in _training_files() for t, _ in load_examples(path)}
    for name in _eval_names():
        overlap = [t for t, _ in load_examples(eval_path(name)) if " ".join(t.lower().split()) in train]
        assert not overlap, (name, overlap[:3])


def _word_set(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def test_no_near_duplicates_of_realistic_eval_prompts_in_training() -> None:
    """Curated training prompts must not come close to an eval prompt (word Jaccard >= 0.6).

    Independent writers of the same model family do converge ("what gets wetter the more it
    dries?" was written into both a training and the blind eval file), and real users ask the same
    things ("who are you?"); such rows were removed from training, and this keeps them out.
    """
    curated = [
        _word_set(ex.text)
        for ex in D.load_files(_training_files())
        if ex.source in (D.HANDWRITTEN_SOURCE, D.LABELED_REAL_SOURCE)
    ]
    by_word: dict[str, list[int]] = {}
    for i, words in enumerate(curated):
        for w in words:
            by_word.setdefault(w, []).append(i)
    for name in [n for n in _eval_names() if n != "dev.jsonl"]:  # dev: split by the dataset's groups
        for text, _ in load_examples(eval_path(name)):
            words = _word_set(text)
            shared = Counter(i for w in words for i in by_word.get(w, ()))
            best = max((n / len(words | curated[i]) for i, n in shared.items()), default=0.0)
            assert best < NEAR_DUPLICATE_JACCARD, (name, text[:80], best)


def test_lexicon_files_feed_word_groups() -> None:
    """Terms in data/lexicon/ fire their group feature, one- and two-word ones; comments do not."""
    assert "@tech" in C.extract_features("What is LuaJIT?")
    assert "@tech" in C.extract_features("how do I rotate a public key")
    assert "@tech" in C.extract_features("my ESP32 keeps rebooting")  # digits normalised alike
    assert "@math_concept" in C.extract_features("What is a bijective mapping?")
    assert "@tech" not in C.extract_features("Any tips for sleeping better when it's hot?")
    assert not any(t.startswith("#") for terms in LEXICON_GROUPS.values() for t in terms)
    assert {"prog_lang", "translate_verb", "tech", "math_concept"} <= set(LEXICON_GROUPS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Write a Python function that merges two sorted lists.", "code"),
        ("What is the derivative of sin(x) * x^2?", "math"),
        ("Knights always tell the truth and knaves always lie. A says B is a knave. Who is who?", "reasoning"),
        ("Write a short poem about a lighthouse in winter.", "creative"),
        ("Summarize the following text in two sentences:\n\nThe board met on Monday and approved the budget.", "text"),
        ("Any tips for sleeping better when it's hot?", "chat"),
        ("Translate into Spanish: the meeting is postponed until next week.", "translation"),
    ],
)
def test_obvious_prompts(clf: C.Classifier, text: str, expected: str) -> None:
    assert clf.classify_text(text).category == expected


# -- result shape ----------------------------------------------------------------------------------


def test_result_is_a_probability_distribution(clf: C.Classifier) -> None:
    assert clf.categories == BUILTIN_CATEGORIES
    for text in ["hi", "Write a haiku about rain", "x" * 50_000, "", "   \n\t", "🙂🙂🙂", "print('hi')"]:
        r = clf.classify_text(text)
        assert isinstance(r, Classification)
        assert set(r.scores) == set(clf.categories)
        assert 0.0 <= r.confidence <= 1.0
        assert r.confidence == pytest.approx(max(r.scores.values()))
        assert r.scores[r.category] == r.confidence
        assert sum(r.scores.values()) == pytest.approx(1.0)
        assert r.latency_ms >= 0.0


def test_confident_on_clear_and_unsure_on_empty(clf: C.Classifier) -> None:
    assert clf.classify_text("Translate to French: where is the train station?").confidence > 0.9
    assert clf.classify_text("").confidence < 0.7


# -- multi-turn ------------------------------------------------------------------------------------

CODE_TURN = [
    _user("Write a Python function that parses a CSV file and returns the rows as dicts."),
    _assistant(
        "```python\nimport csv\n\ndef read_rows(path):\n"
        "    with open(path) as f:\n        return list(csv.DictReader(f))\n```"
    ),
]


@pytest.mark.parametrize(
    "follow_up", ["now make it faster", "and in French?", "can you add type hints?", "thanks, shorter please"]
)
def test_short_follow_up_keeps_the_conversation_category(clf: C.Classifier, follow_up: str) -> None:
    r = clf.classify_messages([*CODE_TURN, _user(follow_up)])
    assert r.category == "code", (follow_up, r)


@pytest.mark.parametrize(
    ("history", "follow_up", "expected"),
    [
        (
            [_user("Write a poem about the sea at night."), _assistant("The waves hum low beneath the moon...")],
            "make it shorter",
            "creative",
        ),
        ([_user("Solve 3x + 7 = 22."), _assistant("x = 5")], "and what if it were 3x + 7 = 40?", "math"),
        (
            [_user("Translate to Spanish: where is the station?"), _assistant("¿Dónde está la estación?")],
            "and in French?",
            "translation",
        ),
        (
            [
                _user("Summarize this:\n\nThe council approved the budget after a long debate. Parks get 10% more."),
                _assistant("Budget approved; parks +10%."),
            ],
            "shorter please",
            "text",
        ),
    ],
)
def test_follow_ups_in_other_categories(clf: C.Classifier, history: list, follow_up: str, expected: str) -> None:
    assert clf.classify_messages([*history, _user(follow_up)]).category == expected


def test_latest_turn_dominates_when_clear(clf: C.Classifier) -> None:
    messages = [*CODE_TURN, _user("Write a poem about autumn leaves falling in the park at dusk.")]
    assert clf.classify_messages(messages).category == "creative"
    messages = [*CODE_TURN, _user("Translate 'good morning, how are you today?' into German, please.")]
    assert clf.classify_messages(messages).category == "translation"


def test_single_turn_messages_equal_classify_text(clf: C.Classifier) -> None:
    text = "Write a limerick about a cat who loves lasagna."
    assert clf.classify_messages([_user(text)]).scores == pytest.approx(clf.classify_text(text).scores)


def test_system_prompt_only_nudges(clf: C.Classifier) -> None:
    question = "Any tips for sleeping better when it's hot?"
    plain = clf.classify_messages([_user(question)])
    with_system = clf.classify_messages(
        [{"role": "system", "content": "You are a senior Python developer."}, _user(question)]
    )
    assert with_system.category == plain.category == "chat"


# -- odd input -------------------------------------------------------------------------------------

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "system", "content": "You are a helpful assistant."}],
        [{"role": "assistant", "content": "Hello! How can I help?"}],
        [_user([IMAGE])],
        [_user([])],
        [_user(None)],
        [_user(123)],
        [{"content": "no role"}],
        [{"role": "user"}],
        ["not a dict", None, 42],
        [_user([{"type": "text"}, {"type": "text", "text": None}, IMAGE, "bare string part"])],
        [{"role": "tool", "content": '{"ok": true}'}, _user("")],
    ],
)
def test_odd_messages_do_not_crash(clf: C.Classifier, messages: list) -> None:
    r = clf.classify_messages(messages)
    assert r.category in clf.categories
    assert 0.0 <= r.confidence <= 1.0


def test_list_content_text_parts_are_used_and_images_ignored(clf: C.Classifier) -> None:
    parts = [{"type": "text", "text": "Write a Python function that reverses a linked list."}, IMAGE]
    r = clf.classify_messages([_user(parts)])
    assert r.category == "code"
    assert r.scores == pytest.approx(clf.classify_text(parts[0]["text"]).scores)


# -- operator categories ---------------------------------------------------------------------------


def test_new_category_from_a_handful_of_examples(custom: C.Classifier) -> None:
    assert custom.categories == (*BUILTIN_CATEGORIES, "sql")
    r = custom.classify_text("write a SQL query that joins orders and customers")
    assert r.category == "sql", r
    assert custom.classify_text("Write a SQL query listing the products that were never ordered").category == "sql"


def test_new_category_does_not_steal_other_prompts(clf: C.Classifier, custom: C.Classifier) -> None:
    for text in [
        "write a python function to reverse a list",
        "Fix this JavaScript: undefined is not a function",
        "Write a poem about autumn",
        "Translate to German: good night",
        "What is the integral of x^2 from 0 to 3?",
    ]:
        assert custom.classify_text(text).category == clf.classify_text(text).category, text
    # On every evaluation set present: at most 1 % of the prompts go to the new category, and the
    # prompts that do not are classified as before within 0.5 points of accuracy.
    for name in _eval_names():
        rows = load_examples(eval_path(name))
        rest = [(t, label) for t, label in rows if custom.classify_text(t).category != "sql"]
        assert len(rows) - len(rest) <= max(2, len(rows) // 100), name
        before = sum(clf.classify_text(t).category == label for t, label in rest) / len(rest)
        after = sum(custom.classify_text(t).category == label for t, label in rest) / len(rest)
        assert after >= before - 0.005, (name, before, after)


def test_examples_sharpen_an_existing_category(custom: C.Classifier) -> None:
    r = custom.classify_text("what does 'carpe diem' mean")
    assert r.category == "translation"
    assert custom.classify_text("What does 'joie de vivre' mean?").category == "translation"


def test_operator_model_is_cached(custom: C.Classifier, custom_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second start-up with the same examples loads the cached model instead of training."""
    assert list(custom_cache.rglob("model-*.npz"))
    monkeypatch.setenv("SERVE_GRAPH_CACHE_DIR", str(custom_cache))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(build_module, "adapt_model", no_training)
    again = build_classifier({"sql": SQL_EXAMPLES, "translation": MEANING_EXAMPLES})
    assert again.fingerprint == custom.fingerprint
    text = "write a SQL query that joins orders and customers"
    assert again.classify_text(text).scores == pytest.approx(custom.classify_text(text).scores)


def test_bad_operator_examples_are_rejected() -> None:
    with pytest.raises(ValueError):
        build_classifier({"  ": ["x"]})
    with pytest.raises(TypeError):
        build_classifier({"sql": "SELECT 1"})  # type: ignore[dict-item]


# -- latency ---------------------------------------------------------------------------------------


def test_latency_is_bounded_for_long_prompts(clf: C.Classifier) -> None:
    """The window keeps the cost flat; generous bounds (CI machines are noisy), real numbers in bench/."""
    passage = " ".join(t for t, _ in load_examples(D.SHIPPED_EVAL_DIR / "realistic_blind.jsonl")[:200])
    prompt = "Summarize the following document:\n\n" + passage[:8000]  # ~2,000 tokens
    huge = prompt * 20  # ~40,000 tokens
    for text in (prompt, huge):
        samples = []
        for i in range(50):
            unique = f"{text} ({i})"  # a new prompt each time: no memo hits
            t0 = time.perf_counter()
            clf.classify_text(unique)
            samples.append((time.perf_counter() - t0) * 1000)
        assert float(np.median(samples)) < 5.0, samples
