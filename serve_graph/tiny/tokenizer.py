"""The tiny models' tokenizer: a Qwen2/Qwen3-style byte-level BPE, its configs and chat templates.

The tokenizer is trained here from a small fixed corpus (deterministic, well under a second) and
is the same for every tiny model and every seed.
"""

from __future__ import annotations

from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from serve_graph.tiny.specs import MAX_POSITION_EMBEDDINGS, VOCAB_MULTIPLE, TinySpec

__all__ = [
    "BPE_VOCAB_SIZE",
    "CHAT_TEMPLATE",
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "SPECIAL_TOKENS",
    "THINKING_CHAT_TEMPLATE",
    "THINK_TOKENS",
    "TRAINING_CORPUS",
    "chat_template",
    "padded_vocab_size",
    "special_tokens_map",
    "token_id",
    "tokenizer_config",
    "train_tokenizer",
]

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
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
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


def train_tokenizer(corpus: tuple[str, ...] = TRAINING_CORPUS) -> Tokenizer:
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
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def token_id(tok: Tokenizer, token: str) -> int:
    """Id of an added token; fails loudly rather than writing a config with a None id."""
    tid = tok.token_to_id(token)
    if tid is None:
        raise RuntimeError(f"tokenizer lacks {token!r}")
    return tid


def padded_vocab_size(tok: Tokenizer) -> int:
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
# Tokenizer config files
# --------------------------------------------------------------------------------------------


def tokenizer_config(tok: Tokenizer, spec: TinySpec) -> dict[str, Any]:
    """tokenizer_config.json for ``PreTrainedTokenizerFast``, which loads tokenizer.json as is.

    A model-specific class (e.g. transformers 5's ``Qwen2Tokenizer``) would rebuild the pipeline
    from vocab/merges; the generic class keeps exactly what was trained here.
    """
    decoder = {
        str(token_id(tok, t)): {
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


def special_tokens_map() -> dict[str, Any]:
    """special_tokens_map.json, for loaders that still read it (transformers 4.x)."""
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
    }
