"""Tiny random-weight Qwen3 checkpoints for tests and the local demo.

Why this exists: the router must be exercised end to end (Ray Serve + vLLM on CPU, thinking
budgets, MoE vs dense routing) on machines with no GPU and no model hub. Real Qwen3 checkpoints
are gigabytes; these are a few megabytes, are generated in well under a second from a fixed seed,
and are shaped like the real thing where it matters to the serving stack:

* the same architectures (``Qwen3ForCausalLM``, ``Qwen3MoeForCausalLM``) and the same
  checkpoint layout (hub-style ``config.json``, per-expert MoE weight names, ``model.safetensors``
  written by the ``safetensors`` library), so vLLM and transformers load them with their real
  code paths. Weights are stored in float32, which vLLM casts to the engine dtype (bf16 in the
  local profile) on load; see ``checkpoint`` for why not bf16 on disk;
* a byte-level BPE tokenizer with Qwen's special tokens (``<|endoftext|>``, ``<|im_start|>``,
  ``<|im_end|>``) and the non-special ``<think>`` / ``</think>`` tokens, so reasoning parsers and
  ``skip_special_tokens`` behave as with Qwen3;
* a ChatML chat template that follows Qwen3's conventions but *opens* a think block when thinking
  is on. Random weights never emit ``</think>`` by themselves, so every thinking request runs
  until vLLM's ``thinking_token_budget`` forces the end: the budget becomes observable.

Only numpy, ``safetensors``, ``tokenizers`` and the standard library are needed (no torch, no
transformers), so the generator is fast and can run before the heavy engine dependencies are
imported.

Modules: ``specs`` (model dimensions), ``tokenizer`` (BPE, chat templates, tokenizer configs),
``checkpoint`` (config.json, generation config, weights), ``build`` (idempotent, atomic writes).
"""

from __future__ import annotations

from serve_graph.tiny.build import GENERATOR_VERSION, MARKER_FILE, make_tiny_models
from serve_graph.tiny.specs import SPECS, TINY_MODELS, TinySpec
from serve_graph.tiny.tokenizer import CHAT_TEMPLATE

__all__ = [
    "CHAT_TEMPLATE",
    "GENERATOR_VERSION",
    "MARKER_FILE",
    "SPECS",
    "TINY_MODELS",
    "TinySpec",
    "make_tiny_models",
]
