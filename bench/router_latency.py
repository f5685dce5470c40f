"""Router overhead per request, tracing off vs on, in one run on one machine.

    .venv/bin/python -m bench.router_latency [--n 3000]

The production Router request path (parse, classify, budget, route, spans, metrics, response) runs
in-process against fake model handles (bench/harness.py), so the numbers are the router's own cost,
without the network or an engine. Each mode runs in its own process (OpenTelemetry's provider is
process-global): `off` with no OTEL endpoint; `on` exporting every span (sampler always_on) over
OTLP/HTTP to a real receiver on loopback. Prints p50/p99/mean and the on/off ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Write a Python function that merges two sorted lists.",
    "Solve for x: 3x + 7 = 22.",
    "What's a good way to spend a rainy Sunday?",
    "Write a short poem about autumn.",
    "Summarize the following text: The quarterly report shows revenue grew 12% while costs fell.",
]


async def _measure(n: int) -> list[float]:
    from bench.harness import make_router, post_chat
    from serve_graph import tracing

    router, _ = make_router()
    out = []
    for i in range(n + 200):  # the first 200 warm up
        body = {"model": "auto", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": 64}
        t = time.perf_counter()
        resp = await post_chat(router, body)
        dt = time.perf_counter() - t
        assert resp.status_code == 200
        if i >= 200:
            out.append(dt * 1e6)
    tracing.force_flush()
    return out


def _child(n: int) -> None:
    lat = asyncio.run(_measure(n))
    print(json.dumps(lat))


def _run(mode: str, n: int, endpoint: str | None) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    if mode == "on":
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint or "", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_TRACES_SAMPLER="always_on")
    out = subprocess.run([sys.executable, "-m", "bench.router_latency", "--child", "--n", str(n)], env=env,
                         cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(mode: str, lat: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(lat, n=100)
    return statistics.median(lat), q[98], statistics.fmean(lat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.n)
        return
    sys.path.insert(0, str(REPO))
    from tests.otlp_receiver import OTLPReceiver

    with OTLPReceiver() as rx:
        off = _run("off", args.n, None)
        on = _run("on", args.n, rx.base_url)
        exported = len(rx.spans())
    r_off, r_on = _row("off", off), _row("on", on)
    print(f"{args.n} requests per mode through the Router request path (fake engine); spans exported: {exported}\n")
    print("| tracing | p50 µs | p99 µs | mean µs |")
    print("|---|---|---|---|")
    for mode, (p50, p99, mean) in (("off", r_off), ("on (always_on, OTLP/HTTP)", r_on)):
        print(f"| {mode} | {p50:.0f} | {p99:.0f} | {mean:.0f} |")
    print(f"| on / off | {r_on[0] / r_off[0]:.2f}x | {r_on[1] / r_off[1]:.2f}x | {r_on[2] / r_off[2]:.2f}x |")


if __name__ == "__main__":
    main()
