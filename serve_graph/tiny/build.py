"""Writing the tiny model dirs: idempotence marker, atomic swap-in, and ``make_tiny_models``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from serve_graph.tiny.checkpoint import (
    TORCH_DTYPE,
    generation_config,
    model_config,
    random_weights,
    weight_shapes,
    write_weights,
)
from serve_graph.tiny.specs import INIT_STD, MAX_POSITION_EMBEDDINGS, ROPE_THETA, SPECS, TINY_MODELS, TinySpec
from serve_graph.tiny.tokenizer import (
    BPE_VOCAB_SIZE,
    SPECIAL_TOKENS,
    THINK_TOKENS,
    TRAINING_CORPUS,
    chat_template,
    padded_vocab_size,
    special_tokens_map,
    token_id,
    tokenizer_config,
    train_tokenizer,
)

__all__ = ["GENERATOR_VERSION", "MARKER_FILE", "REQUIRED_FILES", "make_tiny_models"]

#: Bump when the output changes in a way the spec hash cannot see (e.g. weight layout).
#: 2: weights stored as float32 by the safetensors library (1: hand-written bf16).
GENERATOR_VERSION = 2

#: Written last into each model dir; its presence + matching hash means "complete and current".
MARKER_FILE = "serve_graph_tiny.json"

#: Files a complete model dir must contain besides the marker.
REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


def _spec_hash(spec: TinySpec, seed: int) -> str:
    """Hash of everything that determines a model dir's content, for the idempotence marker."""
    payload = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "spec": asdict(spec),
        "corpus": TRAINING_CORPUS,
        "bpe_vocab_size": BPE_VOCAB_SIZE,
        "chat_template": chat_template(spec),
        "max_pos": MAX_POSITION_EMBEDDINGS,
        "rope_theta": ROPE_THETA,
        "std": INIT_STD,
        "dtype": TORCH_DTYPE,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _marker(spec: TinySpec, seed: int) -> dict[str, Any]:
    return {
        "generator": "serve_graph.tiny",
        "version": GENERATOR_VERSION,
        "spec_hash": _spec_hash(spec, seed),
        "seed": seed,
        "name": spec.name,
    }


def _is_current(model_dir: Path, spec: TinySpec, seed: int) -> bool:
    """True when the dir holds every file and a marker from this exact generator + spec."""
    try:
        marker = json.loads((model_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    if marker != _marker(spec, seed):
        return False
    return all((model_dir / f).is_file() for f in REQUIRED_FILES)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _write_model_dir(target: Path, spec: TinySpec, tok: Tokenizer, seed: int, index: int) -> None:
    """Write one model into a temp dir beside ``target`` and swap it in with renames.

    Readers therefore see either the old complete dir or the new complete dir, never a partial
    one (the marker is also written last). A concurrent writer that wins the race is kept.
    """
    ids = {t: token_id(tok, t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    vocab_size = padded_vocab_size(tok)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; other users (containers, CI) may read models
        weights = random_weights(weight_shapes(spec, vocab_size), (seed, index))
        write_weights(tmp / "model.safetensors", weights)
        _write_json(tmp / "config.json", model_config(spec, vocab_size, ids))
        _write_json(tmp / "generation_config.json", generation_config(ids))
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok, spec))
        _write_json(tmp / "special_tokens_map.json", special_tokens_map())
        (tmp / "chat_template.jinja").write_text(chat_template(spec))
        _write_json(tmp / MARKER_FILE, _marker(spec, seed))
        _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace ``target`` by ``tmp``: move any old dir aside, rename, then delete the old one.

    A directory cannot be renamed over a non-empty one, so there is a brief moment with no
    ``target`` during a *re*write; a first write is a single atomic rename.
    """
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    try:
        try:
            os.rename(target, old / "d")
        except FileNotFoundError:
            pass  # first write (or a concurrent writer moved it)
        try:
            os.rename(tmp, target)
        except OSError:
            if target.is_dir():  # a concurrent writer got there first: keep theirs
                return
            if (old / "d").is_dir():  # a real failure: put the old dir back, then raise
                os.rename(old / "d", target)
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def make_tiny_models(out_dir: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write the tiny checkpoints under ``out_dir`` (if needed) and return their paths.

    Returns ``{name: path}`` for every name in ``TINY_MODELS``, in that order.
    Idempotent: dirs already written by this generator version with the same seed are left
    untouched (not even re-timestamped), so callers can run it before every test session.
    Each model gets its own weight stream (derived from ``seed``, which must be >= 0) so the
    models differ; the tokenizer is the same for all models and for every seed.
    """
    root = Path(out_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / name for name in TINY_MODELS}
    stale = [n for n in TINY_MODELS if not _is_current(paths[n], SPECS[n], seed)]
    if stale:
        tok = train_tokenizer()
        for index, name in enumerate(TINY_MODELS):
            if name in stale:
                _write_model_dir(paths[name], SPECS[name], tok, seed, index)
    return paths
