"""Test seams shipped with serve_graph (like httpx ships its mock transport).

- `serve_graph.testing.otlp`: a real OTLP/HTTP trace receiver (`OTLPReceiver`).
- `serve_graph.testing.handles`: fake model handles, `NullMetrics`, fake chat responses.
- `serve_graph.testing.router`: a router factory (`make_router`, `post_chat`).
- `serve_graph.testing.fake_engine`: a fake engine for Ray's `LLMServer` (no vLLM engine, no GPU);
  `build_app({..., "engine": "fake"})` serves the whole app on it.
- `serve_graph.testing.serve`: a free port, waiting for an app's `/healthz`.

Submodules are imported on demand so that importing one seam does not pull in Ray or OpenTelemetry.
"""
