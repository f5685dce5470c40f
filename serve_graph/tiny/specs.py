"""The tiny models' dimensions and the constants shared by their configs and weights."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "INIT_STD",
    "MAX_POSITION_EMBEDDINGS",
    "RMS_NORM_EPS",
    "ROPE_THETA",
    "SPECS",
    "TINY_MODELS",
    "VOCAB_MULTIPLE",
    "TinySpec",
]


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
