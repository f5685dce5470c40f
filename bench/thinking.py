"""Thinking tokens spent under the budget policy vs always-think vs never-think.

    .venv/bin/python -m bench.thinking --url http://127.0.0.1:8000 [--n 42] [--answer 32]

Runs a mixed prompt set (MT-Bench and dev prompts, several per category) through a running
serve_graph three times:
  policy        model=auto, no thinking fields: the category's default budget decides;
  always-think  model=auto, enable_thinking true with a fixed large budget (what "thinking on"
                costs when nothing bounds it: `--always` tokens);
  never-think   model=auto, enable_thinking false.
Each request asks for `budget + --answer` tokens so that every mode gets the same answer length;
the difference is the thinking. Reports generated, reasoning and wall time per mode, and the
ratios to always-think. On the tiny random-weight models no request stops early, so the numbers
show what the budgets *allow*; on real models thinking often ends before the budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx

from serve_graph.config import load_config
from serve_graph.router.budget import BudgetRequest, resolve_budget

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "serve_graph" / "data" / "prompts" / "eval"


def prompt_set(n: int) -> list[dict[str, Any]]:
    """n prompts, round-robin over categories, MT-Bench first then dev (held-out data only)."""
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name in ("mt_bench.jsonl", "dev.jsonl"):
        for line in (DATA / name).read_text().splitlines():
            row = json.loads(line)
            if len(row["text"]) < 1500:
                by_cat[row["label"]].append(row)
    out: list[dict[str, Any]] = []
    i = 0
    while len(out) < n:
        for rows in by_cat.values():
            if i < len(rows) and len(out) < n:
                out.append(rows[i])
        i += 1
    return out


def run_mode(client: httpx.Client, prompts: list[dict[str, Any]], mode: str, args: argparse.Namespace,
             policy: Any) -> dict[str, float]:
    gen = reasoning = 0
    t0 = time.perf_counter()
    latencies = []
    for row in prompts:
        messages = [{"role": "user", "content": row["text"]}]
        body: dict[str, Any] = {"model": "auto", "messages": messages}
        if mode == "always-think":
            body["thinking_token_budget"] = args.always
            budget = args.always
        elif mode == "never-think":
            body["chat_template_kwargs"] = {"enable_thinking": False}
            budget = 0
        else:  # the policy's budget for this prompt's category, resolved as the router will
            budget = resolve_budget(BudgetRequest(messages=messages), row["label"], policy).tokens
        body["max_tokens"] = min(budget, args.always) + args.answer
        t = time.perf_counter()
        r = client.post("/v1/chat/completions", json=body)
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()
        usage = r.json()["usage"]
        gen += usage["completion_tokens"]
        reasoning += (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"generated": gen, "reasoning": reasoning, "wall_s": time.perf_counter() - t0,
            "p50_s": statistics.median(latencies)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--n", type=int, default=42)
    p.add_argument("--answer", type=int, default=32)
    p.add_argument("--always", type=int, default=1024, help="budget of always-think (and cap for policy)")
    args = p.parse_args()
    policy = load_config(REPO / "models.yaml").budgets
    prompts = prompt_set(args.n)
    with httpx.Client(base_url=args.url, timeout=600) as client:
        results = {m: run_mode(client, prompts, m, args, policy) for m in ("always-think", "policy", "never-think")}
    base = results["always-think"]
    print(f"{len(prompts)} prompts, answer {args.answer} tokens, always-think budget {args.always}\n")
    print("| mode | generated tokens | reasoning tokens | wall s | p50 s | generated vs always-think |")
    print("|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['generated']} | {r['reasoning']} | {r['wall_s']:.1f} | {r['p50_s']:.2f} | "
              f"{r['generated'] / base['generated']:.2f} |")


if __name__ == "__main__":
    main()
