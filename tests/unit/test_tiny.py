"""The tiny checkpoints load as real Qwen3 models in transformers (no Ray, no vLLM here).

vLLM loading is heavier (an engine start per model) and belongs to the e2e tests; this file
checks what every later test relies on: configs, tokenizer, chat template, weights, idempotence.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from serve_graph.tiny import CHAT_TEMPLATE, MARKER_FILE, TINY_MODELS, make_tiny_models

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

EXPECTED = {
    "qwen3-tiny-small": ("Qwen3ForCausalLM", "qwen3", 128, 2),
    "qwen3-tiny-medium": ("Qwen3ForCausalLM", "qwen3", 256, 4),
    "qwen3-moe-tiny": ("Qwen3MoeForCausalLM", "qwen3_moe", 128, 2),
    "qwen3-tiny-thinking": ("Qwen3ForCausalLM", "qwen3", 128, 2),
}
SYSTEM_AND_PARTS = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "first part"},
            {"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}},
            {"type": "text", "text": "second part"},
        ],
    },
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(tiny: dict[str, Path]):
    return transformers.AutoTokenizer.from_pretrained(tiny["qwen3-tiny-small"])


def test_returns_the_three_dirs(tiny: dict[str, Path]) -> None:
    assert list(tiny) == list(TINY_MODELS) == list(EXPECTED)
    for name, path in tiny.items():
        assert path.name == name and (path / "model.safetensors").is_file()
        assert (path / MARKER_FILE).is_file()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_config(tiny: dict[str, Path], name: str) -> None:
    arch, model_type, hidden, layers = EXPECTED[name]
    cfg = transformers.AutoConfig.from_pretrained(tiny[name])
    assert cfg.architectures == [arch] and cfg.model_type == model_type
    assert (cfg.hidden_size, cfg.num_hidden_layers) == (hidden, layers)
    assert cfg.head_dim == 64  # vLLM CPU attention rejects small head sizes
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2)
    assert cfg.tie_word_embeddings is True
    assert cfg.max_position_embeddings == 4096
    tok = transformers.AutoTokenizer.from_pretrained(tiny[name])
    assert cfg.vocab_size >= len(tok) and cfg.vocab_size % 64 == 0
    assert cfg.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    raw = json.loads((tiny[name] / "config.json").read_text())
    assert raw["torch_dtype"] == "float32"  # the stored dtype; engines cast (the local profile to bf16)
    gen = json.loads((tiny[name] / "generation_config.json").read_text())
    assert gen["eos_token_id"] == tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    if model_type == "qwen3_moe":
        assert (cfg.num_experts, cfg.num_experts_per_tok, cfg.moe_intermediate_size) == (8, 2, 64)
        assert cfg.decoder_sparse_step == 1 and cfg.mlp_only_layers == []


def test_special_tokens(tokenizer) -> None:
    assert 400 <= len(tokenizer) <= 1000
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert token in tokenizer.all_special_tokens
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    for token in ("<think>", "</think>"):
        assert token not in tokenizer.all_special_tokens
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    ids = tokenizer.encode("<|im_start|>a<think>b</think>c<|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a<think>b</think>c"


@pytest.mark.parametrize("text", ["Hello, world!", "你好，世界 🚀", "  x\n\tλ ∫ dx = 0 \u200b"])
def test_byte_level_round_trip(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_chat_template_thinking_on_by_default(tokenizer) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    default = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    explicit = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert default == explicit == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n"


def test_chat_template_thinking_off(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_thinking_only_model_ignores_enable_thinking(tiny: dict[str, Path]) -> None:
    """The *-Thinking-2507 stand-in opens <think> whatever the request says."""
    tok = transformers.AutoTokenizer.from_pretrained(tiny["qwen3-tiny-thinking"])
    for flag in (True, False):
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True, enable_thinking=flag
        )
        assert prompt.endswith("<|im_start|>assistant\n<think>\n"), prompt


def test_chat_template_system_and_content_parts(tokenizer) -> None:
    prompt = tokenizer.apply_chat_template(SYSTEM_AND_PARTS, tokenize=False, add_generation_prompt=False)
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nfirst part\nsecond part<|im_end|>\n"
    )


def test_chat_template_drops_historical_reasoning(tokenizer) -> None:
    msgs = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nsecret\n</think>\n\nanswer"},
        {"role": "user", "content": "q2"},
    ]
    prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "secret" not in prompt
    assert "<|im_start|>assistant\nanswer<|im_end|>\n" in prompt


def test_template_files_agree(tiny: dict[str, Path]) -> None:
    path = tiny["qwen3-tiny-small"]
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == CHAT_TEMPLATE
    assert (path / "chat_template.jinja").read_text() == CHAT_TEMPLATE


@pytest.mark.parametrize("name", list(EXPECTED))
def test_safetensors_reads_back_the_weights(tiny: dict[str, Path], name: str) -> None:
    """The file is a standard safetensors file: every tensor the config implies, all float32."""
    _, _, hidden, layers = EXPECTED[name]
    cfg = json.loads((tiny[name] / "config.json").read_text())
    vocab, head_dim = cfg["vocab_size"], cfg["head_dim"]
    with safe_open(tiny[name] / "model.safetensors", framework="np") as f:
        assert f.metadata() == {"format": "pt"}
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float32)}
    assert "lm_head.weight" not in tensors  # tied embeddings
    assert tensors["model.embed_tokens.weight"].shape == (vocab, hidden)
    assert tensors["model.norm.weight"].shape == (hidden,)
    assert (tensors["model.norm.weight"] == 1).all()
    assert 0.015 < float(tensors["model.embed_tokens.weight"].std()) < 0.025
    for i in range(layers):
        p = f"model.layers.{i}"
        assert tensors[f"{p}.self_attn.q_proj.weight"].shape == (4 * head_dim, hidden)
        assert tensors[f"{p}.self_attn.k_proj.weight"].shape == (2 * head_dim, hidden)
        assert tensors[f"{p}.self_attn.o_proj.weight"].shape == (hidden, 4 * head_dim)
        assert tensors[f"{p}.self_attn.q_norm.weight"].shape == (head_dim,)
        if name == "qwen3-moe-tiny":
            assert tensors[f"{p}.mlp.gate.weight"].shape == (8, hidden)
            for e in range(8):
                assert tensors[f"{p}.mlp.experts.{e}.gate_proj.weight"].shape == (64, hidden)
                assert tensors[f"{p}.mlp.experts.{e}.down_proj.weight"].shape == (hidden, 64)
            assert f"{p}.mlp.gate_proj.weight" not in tensors
        else:
            inter = cfg["intermediate_size"]
            assert tensors[f"{p}.mlp.up_proj.weight"].shape == (inter, hidden)
            assert tensors[f"{p}.mlp.down_proj.weight"].shape == (hidden, inter)
    per_layer = 8 + (1 + 8 * 3 if name == "qwen3-moe-tiny" else 3)
    assert len(tensors) == 2 + layers * per_layer
    assert load_file(tiny[name] / "model.safetensors").keys() == tensors.keys()


def test_files_are_world_readable(tiny: dict[str, Path]) -> None:
    for path in tiny.values():
        assert path.stat().st_mode & 0o755 == 0o755
        for file in path.iterdir():
            assert file.stat().st_mode & 0o444 == 0o444, file


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_forward_pass(tiny: dict[str, Path], tokenizer, name: str, dtype: str | None) -> None:
    """Loads as stored (float32) and cast to bf16, as the local profile serves it."""
    kwargs = {} if dtype is None else {"dtype": getattr(torch, dtype)}
    model, info = transformers.AutoModelForCausalLM.from_pretrained(tiny[name], output_loading_info=True, **kwargs)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert type(model).__name__ == EXPECTED[name][0]
    assert model.dtype == getattr(torch, dtype or "float32")
    batch = tokenizer.apply_chat_template(
        SYSTEM_AND_PARTS, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits.float()).all()


def test_second_call_is_a_fast_no_op(tiny: dict[str, Path]) -> None:
    root = tiny["qwen3-tiny-small"].parent
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    started = time.perf_counter()
    assert make_tiny_models(root) == tiny
    assert time.perf_counter() - started < 0.5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_rewrites_stale_or_partial_dirs(tmp_path: Path) -> None:
    paths = make_tiny_models(tmp_path, seed=1)
    small = paths["qwen3-tiny-small"]
    weights = (small / "model.safetensors").read_bytes()
    (small / "tokenizer.json").unlink()  # partial dir
    marker = paths["qwen3-tiny-medium"] / MARKER_FILE
    marker.write_text(json.dumps({"version": -1}))  # other generator version
    untouched = paths["qwen3-moe-tiny"] / "model.safetensors"
    moe_mtime = untouched.stat().st_mtime_ns
    make_tiny_models(tmp_path, seed=1)
    assert (small / "tokenizer.json").is_file()
    assert (small / "model.safetensors").read_bytes() == weights  # deterministic for a seed
    assert json.loads(marker.read_text())["version"] != -1
    assert untouched.stat().st_mtime_ns == moe_mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_seed_changes_weights(tmp_path: Path) -> None:
    a = make_tiny_models(tmp_path / "a", seed=0)["qwen3-tiny-small"]
    b = make_tiny_models(tmp_path / "b", seed=1)["qwen3-tiny-small"]
    assert (a / "model.safetensors").read_bytes() != (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
