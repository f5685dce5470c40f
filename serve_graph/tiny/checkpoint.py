"""The tiny models' checkpoint: hub-style ``config.json``, ``generation_config.json`` and weights.

Weights are stored as float32 and written with ``safetensors.numpy``. numpy has no bfloat16 and
``safetensors.numpy`` writes only dtypes numpy has, so the real Qwen3 bf16 would need torch (not a
core dependency) or the library's low-level, version-dependent serializer. float32 loses nothing:
vLLM casts the weights to the engine's ``dtype`` on load (``bfloat16`` in the local profile of
``models.yaml``; ``auto`` also picks bf16 for a float32 checkpoint on x86/aarch64 CPUs), and that
cast rounds to nearest even, so the served bf16 weights are those a bf16 checkpoint would hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from serve_graph.tiny.specs import INIT_STD, MAX_POSITION_EMBEDDINGS, RMS_NORM_EPS, ROPE_THETA, TinySpec
from serve_graph.tiny.tokenizer import ENDOFTEXT, IM_END

__all__ = [
    "TORCH_DTYPE",
    "WEIGHT_DTYPE",
    "generation_config",
    "model_config",
    "random_weights",
    "weight_shapes",
    "write_weights",
]

#: The dtype the tensors are stored in, and its name in config.json (derived: the two must agree).
WEIGHT_DTYPE = np.float32
TORCH_DTYPE = np.dtype(WEIGHT_DTYPE).name

#: The safetensors header metadata transformers writes and expects ("pt": torch layout).
SAFETENSORS_METADATA = {"format": "pt"}


def model_config(spec: TinySpec, vocab_size: int, ids: dict[str, int]) -> dict[str, Any]:
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
        "torch_dtype": TORCH_DTYPE,
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


def generation_config(ids: dict[str, int]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def weight_shapes(spec: TinySpec, vocab_size: int) -> dict[str, tuple[int, ...]]:
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
        return {f"{p}.gate_proj.weight": (i, h), f"{p}.up_proj.weight": (i, h), f"{p}.down_proj.weight": (h, i)}
    mi = spec.moe_intermediate_size
    shapes: dict[str, tuple[int, ...]] = {f"{p}.gate.weight": (spec.num_experts, h)}
    for e in range(spec.num_experts):
        shapes |= {
            f"{p}.experts.{e}.gate_proj.weight": (mi, h),
            f"{p}.experts.{e}.up_proj.weight": (mi, h),
            f"{p}.experts.{e}.down_proj.weight": (h, mi),
        }
    return shapes


def random_weights(shapes: dict[str, tuple[int, ...]], seed: tuple[int, int]) -> dict[str, np.ndarray]:
    """Normal(0, INIT_STD) matrices and all-ones norm weights, as a freshly initialised model.

    Ones for the RMSNorm weights keep activations sane; small std keeps logits near uniform,
    so sampling wanders the whole vocabulary and (almost) never picks a stop token.
    """
    rng = np.random.default_rng(list(seed))
    out: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            out[name] = np.ones(shape, dtype=WEIGHT_DTYPE)
        else:
            out[name] = (rng.standard_normal(shape, dtype=np.float32) * INIT_STD).astype(WEIGHT_DTYPE, copy=False)
    return out


def write_weights(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Write ``model.safetensors`` with the safetensors library, in ``WEIGHT_DTYPE``.

    The library creates the file owner-only (0600); it is made world-readable like the other
    files, since the models may be read by other users (containers, CI).
    """
    save_file(
        {name: np.ascontiguousarray(t, dtype=WEIGHT_DTYPE) for name, t in tensors.items()},
        path,
        metadata=dict(SAFETENSORS_METADATA),
    )
    path.chmod(0o644)
