"""Router overhead per request, tracing off vs on, in one run on one machine.

    .venv/bin/python -m bench.router_latency [--n 3000]

The production Router request path (parse, classify, budget, route, spans, metrics, response) runs
in-process against fake model handles (serve_graph/testing/router.py), so the numbers are the router's own cost,
without the network or an engine. Each mode runs in its own process (OpenTelemetry's provider is
process-global): `none` with the tracing calls stubbed out (as if there were no tracing code),
`off` with no OTEL endpoint (production default), `on` exporting every span (sampler always_on)
over OTLP/HTTP to a real receiver on loopback. Prints p50/p99/mean and the ratios.
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
    from serve_graph import tracing
    from serve_graph.testing.router import make_router, post_chat

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


def _strip_tracing() -> None:
    """Mode `none`: every tracing call of the router replaced by the cheapest stand-in, as if the
    code had no tracing at all; `off` vs `none` is what the tracing code costs when switched off."""
    import contextlib

    from opentelemetry.trace import INVALID_SPAN

    from serve_graph import tracing

    @contextlib.contextmanager
    def span(*_a: object, **_k: object):  # noqa: ANN202
        yield INVALID_SPAN

    async def passthrough(_span: object, stream, **_k: object):  # noqa: ANN001, ANN202
        async for item in stream:
            yield item

    stubbed = ("server_span", "child_span", "client_span", "record_decision", "record_error", "record_first_chunk",
               "record_response", "set_attributes", "inject", "wrap_stream")
    missing = [name for name in stubbed if not hasattr(tracing, name)]
    assert not missing, f"serve_graph.tracing no longer has {missing}: update the stubs"
    for name in ("server_span", "child_span", "client_span"):
        setattr(tracing, name, span)
    for name in ("record_decision", "record_error", "record_first_chunk", "record_response",
                 "record_stream_chunk", "set_attributes"):
        setattr(tracing, name, lambda *_a, **_k: None)
    tracing.inject = lambda *_a, **_k: {}
    tracing.wrap_stream = passthrough


def _child(n: int, mode: str) -> None:
    if mode == "none":
        _strip_tracing()
    lat = asyncio.run(_measure(n))
    print(json.dumps(lat))


def _run(mode: str, n: int, endpoint: str | None) -> list[float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    if mode == "on":
        # A queue big enough that no span is dropped: the cost measured is exporting all of them.
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint or "", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                   OTEL_TRACES_SAMPLER="always_on", OTEL_BSP_MAX_QUEUE_SIZE="65536")
    out = subprocess.run([sys.executable, "-m", "bench.router_latency", "--child", mode, "--n", str(n)], env=env,
                         cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(mode: str, lat: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(lat, n=100)
    return statistics.median(lat), q[98], statistics.fmean(lat)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--child", choices=("none", "off", "on"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.n, args.child)
        return
    from serve_graph.testing.otlp import OTLPReceiver

    with OTLPReceiver() as rx:
        none = _run("none", args.n, None)
        off = _run("off", args.n, None)
        on = _run("on", args.n, rx.base_url)
        exported = len(rx.spans())
    r_none, r_off, r_on = _row("none", none), _row("off", off), _row("on", on)
    print(f"{args.n} requests per mode through the Router request path (fake engine); spans exported: {exported}\n")
    print("| tracing | p50 µs | p99 µs | mean µs |")
    print("|---|---|---|---|")
    rows = (("no tracing code (stubbed)", r_none), ("off", r_off), ("on (always_on, OTLP/HTTP)", r_on))
    for mode, (p50, p99, mean) in rows:
        print(f"| {mode} | {p50:.0f} | {p99:.0f} | {mean:.0f} |")
    for name, a, b in (("off / none", r_off, r_none), ("on / off", r_on, r_off)):
        print(f"| {name} | {a[0] / b[0]:.2f}x | {a[1] / b[1]:.2f}x | {a[2] / b[2]:.2f}x |")


if __name__ == "__main__":
    main()
