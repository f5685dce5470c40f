"""Tiny random-weight Qwen3 checkpoints for tests and the local demo.

Why this exists: the router must be exercised end to end (Ray Serve + vLLM on CPU, thinking
budgets, MoE vs dense routing) on machines with no GPU and no model hub. Real Qwen3 checkpoints
are gigabytes; these are a few megabytes, are generated in well under a second from a fixed seed,
and are shaped like the real thing where it matters to the serving stack:

* the same architectures (``Qwen3ForCausalLM``, ``Qwen3MoeForCausalLM``) and the same
  checkpoint layout (hub-style ``config.json``, per-expert MoE weight names, ``model.safetensors``
  in bf16), so vLLM and transformers load them with their real code paths;
* a byte-level BPE tokenizer with Qwen's special tokens (``<|endoftext|>``, ``<|im_start|>``,
  ``<|im_end|>``) and the non-special ``<think>`` / ``</think>`` tokens, so reasoning parsers and
  ``skip_special_tokens`` behave as with Qwen3;
* a ChatML chat template that follows Qwen3's conventions but *opens* a think block when thinking
  is on. Random weights never emit ``</think>`` by themselves, so every thinking request runs
  until vLLM's ``thinking_token_budget`` forces the end: the budget becomes observable.

Only numpy, ``tokenizers`` and the standard library are needed (no torch, no transformers), so the
generator is fast and can run before the heavy engine dependencies are imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
from tokenizers import pre_tokenizers, processors, trainers

__all__ = [
    "CHAT_TEMPLATE",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "SPECS",
    "TINY_MODELS",
    "TinySpec",
    "make_tiny_models",
]

#: Bump when the output changes in a way the spec hash cannot see (e.g. weight layout).
GENERATOR_VERSION = 1

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

# --------------------------------------------------------------------------------------------
# Model specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of one tiny model.

    head_dim is 64 on purpose: vLLM's CPU attention rejects small head sizes such as 16
    ("Unsupported CPU attention configuration"). q/k/v widths therefore need not equal hidden.
    """

    name: str
    architecture: str  # "Qwen3ForCausalLM" or "Qwen3MoeForCausalLM"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    num_experts: int = 0  # 0 means dense
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    mlp_only_layers: tuple[int, ...] = field(default_factory=tuple)
    always_thinks: bool = False  # a *-Thinking-2507 stand-in: the template always opens <think>

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


SMALL = TinySpec(
    name="qwen3-tiny-small",
    architecture="Qwen3ForCausalLM",
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=256,
)
MEDIUM = TinySpec(
    name="qwen3-tiny-medium",
    architecture="Qwen3ForCausalLM",
    hidden_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=512,
)
MOE = TinySpec(
    name="qwen3-moe-tiny",
    architecture="Qwen3MoeForCausalLM",
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    intermediate_size=256,  # unused by sparse layers; kept as in real Qwen3-MoE configs
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=64,
)

# The small model's shape with a template that always thinks (a *-Thinking-2507 stand-in).
THINKING = replace(SMALL, name="qwen3-tiny-thinking", always_thinks=True)

#: name -> spec, in a stable order.
SPECS: dict[str, TinySpec] = {s.name: s for s in (SMALL, MEDIUM, MOE, THINKING)}

#: The model directory names that ``make_tiny_models`` writes under ``out_dir``.
TINY_MODELS: tuple[str, ...] = tuple(SPECS)

MAX_POSITION_EMBEDDINGS = 4096
ROPE_THETA = 1_000_000.0  # as in Qwen3
RMS_NORM_EPS = 1e-6
INIT_STD = 0.02
VOCAB_MULTIPLE = 64

# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"

#: Special tokens (skipped by ``skip_special_tokens``), in Qwen's order.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END)
#: Added but *not* special, as in real Qwen3, so decoded text keeps the think tags.
THINK_TOKENS: tuple[str, ...] = (THINK_START, THINK_END)

#: Qwen2/Qwen3 pre-tokenizer split regex (copied from the Qwen tokenizer.json).
PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Byte-level BPE vocabulary size before added tokens (256 byte symbols + merges).
BPE_VOCAB_SIZE = 512

#: Small training corpus: enough English, code, math and a little CJK for ~250 merges.
#: Byte-level BPE can encode any text whatever the corpus; the corpus only shapes the merges.
TRAINING_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog. A router decides which model answers a "
    "request: small questions go to the small model, hard ones to the larger model.",
    "Serving large language models means batching requests, caching keys and values, and "
    "streaming tokens back to the client as soon as they are generated.",
    "When the model thinks before it answers, the reasoning is wrapped in think tags. A "
    "thinking budget limits how many tokens the model may spend on reasoning.",
    "Please summarize the following article in three sentences. What is the capital of "
    "France? Paris is the capital and largest city of France.",
    "The system prompt tells the assistant how to behave. The user asks a question and the "
    "assistant replies. Then the user asks a follow-up question about the answer.",
    "Explain the difference between a process and a thread. Write a haiku about autumn "
    "leaves. Translate this sentence into German, French and Spanish.",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "import json\nfrom pathlib import Path\n\n\nclass Config:\n    def __init__(self, path):\n"
    "        self.data = json.loads(Path(path).read_text())\n",
    "for (int i = 0; i < n; i++) {\n    sum += values[i];\n}\nreturn sum;\n",
    "SELECT name, count(*) FROM requests WHERE latency_ms > 100 GROUP BY name;",
    'curl -X POST http://localhost:8000/v1/chat/completions -d \'{"model": "auto"}\'',
    "Solve for x: 2x + 3 = 11, so 2x = 8 and x = 4. The integral of x^2 dx is x^3/3 + C.",
    "Let f(x) = 3x^2 - 5x + 7. Then f'(x) = 6x - 5. 1 + 1 = 2, 12 * 12 = 144, 3.14159.",
    "Prove that the square root of 2 is irrational. Suppose sqrt(2) = p/q in lowest terms.",
    "你好，世界。今天天气很好。我们来讨论一下机器学习和大语言模型。",
    "请用中文回答这个问题。思考一下，然后给出答案。",
)


def _train_tokenizer(corpus: tuple[str, ...] = TRAINING_CORPUS) -> Tokenizer:
    """Train a Qwen2-style byte-level BPE and append Qwen's added tokens after the merges.

    The pipeline (NFC, Qwen regex split, ByteLevel without prefix space, ByteLevel decoder)
    mirrors Qwen's tokenizer.json, so whitespace and unicode behave as with the real one. Added
    tokens go after the BPE vocab, as in Qwen (where ``<|endoftext|>`` is 151643).
    """
    tok = Tokenizer(
        models.BPE(
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    tok.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    )
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def _token_id(tok: Tokenizer, token: str) -> int:
    """Id of an added token; fails loudly rather than writing a config with a None id."""
    tid = tok.token_to_id(token)
    if tid is None:
        raise RuntimeError(f"tokenizer lacks {token!r}")
    return tid


def _padded_vocab_size(tok: Tokenizer) -> int:
    """Model vocab: the full tokenizer size rounded up, as Qwen pads 151665 to 151936."""
    n = tok.get_vocab_size(with_added_tokens=True)
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


# --------------------------------------------------------------------------------------------
# Chat template
# --------------------------------------------------------------------------------------------

#: Qwen3-style ChatML template (no tools). Differences from Qwen3's own, and why:
#: * with thinking on (the default) the generation prompt *opens* ``<think>\n`` so a
#:   random-weight model is inside a think block and vLLM's thinking budget has to end it;
#: * reasoning is dropped from *every* historical assistant turn (Qwen3 keeps it only after the
#:   last user turn, which matters only for multi-step tool calls, which this template omits).
#: Content may be a string or a list of OpenAI content parts: ``text`` parts are joined with
#: newlines (as vLLM does when it flattens parts itself); other parts (images) are ignored.
CHAT_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is none -%}"
    "{%- elif content is string -%}{{- content -}}"
    "{%- else -%}"
    "{{- content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('\\n') -}}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- set content = render_content(message['content']) -%}"
    "{%- if message['role'] == 'assistant' and '</think>' in content -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}"
    "{{- '<think>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

#: Like Qwen3-*-Thinking-2507: the generation prompt always opens ``<think>\n``, whatever
#: ``enable_thinking`` says (such a model cannot be switched off, only cut short by a budget).
THINKING_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}"
    "{{- '<think>\\n' -}}"
    "{%- endif -%}",
    "{{- '<think>\\n' -}}",
)
assert THINKING_CHAT_TEMPLATE != CHAT_TEMPLATE


def chat_template(spec: TinySpec) -> str:
    return THINKING_CHAT_TEMPLATE if spec.always_thinks else CHAT_TEMPLATE


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def _model_config(spec: TinySpec, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
    """A hub-style config.json (the shape Qwen ships), readable by transformers 4.x/5.x and vLLM.

    ``rope_theta`` is written at top level as in Qwen's own files; transformers 5 folds it into
    ``rope_parameters`` on load.
    """
    cfg: dict[str, Any] = {
        "architectures": [spec.architecture],
        "model_type": "qwen3_moe" if spec.is_moe else "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "pad_token_id": ids[ENDOFTEXT],
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": INIT_STD,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "max_window_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab_size,
    }
    if spec.is_moe:
        cfg.update(
            {
                "decoder_sparse_step": 1,
                "mlp_only_layers": list(spec.mlp_only_layers),
                "moe_intermediate_size": spec.moe_intermediate_size,
                "norm_topk_prob": True,
                "num_experts": spec.num_experts,
                "num_experts_per_tok": spec.num_experts_per_tok,
                "output_router_logits": False,
                "router_aux_loss_coef": 0.001,
            }
        )
    return cfg


def _generation_config(ids: dict[str, int]) -> dict[str, Any]:
    """Qwen3's generation_config.json shape: stop on either <|im_end|> or <|endoftext|>.

    The sampling defaults are Qwen3's thinking-mode ones; vLLM applies them unless a request
    overrides them, as it would for the real model.
    """
    return {
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        "pad_token_id": ids[ENDOFTEXT],
        "do_sample": True,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
    }


def _tokenizer_config(tok: Tokenizer, spec: TinySpec) -> dict[str, Any]:
    """tokenizer_config.json for ``PreTrainedTokenizerFast``, which loads tokenizer.json as is.

    A model-specific class (e.g. transformers 5's ``Qwen2Tokenizer``) would rebuild the pipeline
    from vocab/merges; the generic class keeps exactly what was trained here.
    """
    decoder = {
        str(_token_id(tok, t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
        for t in SPECIAL_TOKENS + THINK_TOKENS
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "split_special_tokens": False,
        "chat_template": chat_template(spec),
    }


def _special_tokens_map() -> dict[str, Any]:
    """special_tokens_map.json, for loaders that still read it (transformers 4.x)."""
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
    }


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _weight_shapes(spec: TinySpec, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes in the hub checkpoint layout (per-expert MoE weights).

    This is the layout real Qwen3 / Qwen3-MoE checkpoints use; vLLM loads it directly and
    transformers 5 converts it (e.g. fusing experts) on load. No ``lm_head``: embeddings are tied.
    """
    h, hd = spec.hidden_size, spec.head_dim
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab_size, h)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (h,),
            f"{p}.post_attention_layernorm.weight": (h,),
            f"{p}.self_attn.q_proj.weight": (q_out, h),
            f"{p}.self_attn.k_proj.weight": (kv_out, h),
            f"{p}.self_attn.v_proj.weight": (kv_out, h),
            f"{p}.self_attn.o_proj.weight": (h, q_out),
            f"{p}.self_attn.q_norm.weight": (hd,),
            f"{p}.self_attn.k_norm.weight": (hd,),
        }
        shapes |= _mlp_shapes(spec, i)
    shapes["model.norm.weight"] = (h,)
    return shapes


def _mlp_shapes(spec: TinySpec, layer: int) -> dict[str, tuple[int, ...]]:
    """MLP tensors of one layer: dense SwiGLU, or router + per-expert SwiGLU."""
    h, p = spec.hidden_size, f"model.layers.{layer}.mlp"
    if not spec.is_moe or layer in spec.mlp_only_layers:
        i = spec.intermediate_size
        return {f"{p}.gate_proj.weight": (i, h), f"{p}.up_proj.weight": (i, h),
                f"{p}.down_proj.weight": (h, i)}
    mi = spec.moe_intermediate_size
    shapes: dict[str, tuple[int, ...]] = {f"{p}.gate.weight": (spec.num_experts, h)}
    for e in range(spec.num_experts):
        shapes |= {f"{p}.experts.{e}.gate_proj.weight": (mi, h),
                   f"{p}.experts.{e}.up_proj.weight": (mi, h),
                   f"{p}.experts.{e}.down_proj.weight": (h, mi)}
    return shapes


def _random_weights(
    shapes: dict[str, tuple[int, ...]], seed: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Normal(0, INIT_STD) matrices and all-ones norm weights, as a freshly initialised model.

    Ones for the RMSNorm weights keep activations sane; small std keeps logits near uniform,
    so sampling wanders the whole vocabulary and (almost) never picks a stop token.
    """
    rng = np.random.default_rng(list(seed))
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            out[name] = np.ones(shape, dtype=np.float32)
        else:
            out[name] = rng.standard_normal(shape, dtype=np.float32) * INIT_STD
    return out


def _to_bf16_bytes(a: np.ndarray) -> bytes:
    """float32 -> bfloat16 bytes (round to nearest even), since numpy has no bf16 dtype."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype("<u2").tobytes()


def _write_safetensors_bf16(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write a safetensors file of BF16 tensors directly (format: u64 header len, JSON, data).

    Doing it by hand avoids importing torch (seconds) just to get a bf16 dtype.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        blob = _to_bf16_bytes(tensors[name])
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)


# --------------------------------------------------------------------------------------------
# Idempotence and atomic writes
# --------------------------------------------------------------------------------------------


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
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _marker(spec: TinySpec, seed: int) -> dict[str, Any]:
    return {"generator": "serve_graph.tiny", "version": GENERATOR_VERSION,
            "spec_hash": _spec_hash(spec, seed), "seed": seed, "name": spec.name}


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


def _write_model_dir(
    target: Path, spec: TinySpec, tok: Tokenizer, seed: int, index: int
) -> None:
    """Write one model into a temp dir beside ``target`` and swap it in with renames.

    Readers therefore see either the old complete dir or the new complete dir, never a partial
    one (the marker is also written last). A concurrent writer that wins the race is kept.
    """
    ids = {t: _token_id(tok, t) for t in SPECIAL_TOKENS + THINK_TOKENS}
    vocab_size = _padded_vocab_size(tok)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; other users (containers, CI) may read models
        weights = _random_weights(_weight_shapes(spec, vocab_size), (seed, index))
        _write_safetensors_bf16(tmp / "model.safetensors", weights)
        _write_json(tmp / "config.json", _model_config(spec, vocab_size, ids))
        _write_json(tmp / "generation_config.json", _generation_config(ids))
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", _tokenizer_config(tok, spec))
        _write_json(tmp / "special_tokens_map.json", _special_tokens_map())
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


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def make_tiny_models(out_dir: str | Path, *, seed: int = 0) -> dict[str, Path]:
    """Write the three tiny checkpoints under ``out_dir`` (if needed) and return their paths.

    Returns ``{"qwen3-tiny-small": path, "qwen3-tiny-medium": path, "qwen3-moe-tiny": path}``.
    Idempotent: dirs already written by this generator version with the same seed are left
    untouched (not even re-timestamped), so callers can run it before every test session.
    Each model gets its own weight stream (derived from ``seed``, which must be >= 0) so the
    models differ; the tokenizer is the same for all three and for every seed.
    """
    root = Path(out_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / name for name in TINY_MODELS}
    stale = [n for n in TINY_MODELS if not _is_current(paths[n], SPECS[n], seed)]
    if stale:
        tok = _train_tokenizer()
        for index, name in enumerate(TINY_MODELS):
            if name in stale:
                _write_model_dir(paths[name], SPECS[name], tok, seed, index)
    return paths
