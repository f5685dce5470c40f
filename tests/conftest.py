"""Session-wide: tests never write to the user's caches (~/.cache, ~/.config/vllm, the HF hub).

Every cache location a test may touch (ours, XDG, Hugging Face, vLLM, Triton, TorchInductor, ...)
points into one temporary directory per session, set here at import: pytest imports this file
before any test module, so before anything reads these variables. Ray workers of a cluster that a
test starts (`ray.init` in this process) inherit this environment through the raylet, so Serve
replicas and engine processes cache there too (tests/fake checks it).

Also here: the one local Ray cluster + Serve proxy of a session (`serve_cluster`), shared by the
fake-engine tier (tests/fake) and the vLLM tier (tests/e2e), and the tier order: unit tests first,
then the fake tier, then the simulated-cluster tier (tests/cluster: its own multi-node Ray session in
a subprocess, so it needs no fixture here), then e2e (fast failures first; the fake app is gone
before the engines start).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_CACHE_ROOT = Path(tempfile.mkdtemp(prefix="serve-graph-tests-"))

# variable -> directory under TEST_CACHE_ROOT
CACHE_ENV: dict[str, str] = {
    "SERVE_GRAPH_CACHE_DIR": "serve_graph",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "HF_HOME": "huggingface",
    "VLLM_CACHE_ROOT": "vllm-cache",
    "VLLM_CONFIG_ROOT": "vllm-config",
    "TRITON_CACHE_DIR": "triton",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TORCH_HOME": "torch",
    "NUMBA_CACHE_DIR": "numba",
    "OUTLINES_CACHE_DIR": "outlines",
}
# No usage reports from test runs (vLLM writes its report under ~/.config/vllm).
QUIET_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "RAY_USAGE_STATS_ENABLED": "0"}


ROOT_ENV = "SERVE_GRAPH_TEST_CACHE_ROOT"  # where tests find the root (conftest is not imported by tests)


def cache_env() -> dict[str, str]:
    """The variables this session sets, as absolute paths (for a runtime_env, a subprocess...)."""
    dirs = {name: str(TEST_CACHE_ROOT / sub) for name, sub in CACHE_ENV.items()}
    return {ROOT_ENV: str(TEST_CACHE_ROOT), **dirs, **QUIET_ENV}


os.environ.update(cache_env())


def pytest_unconfigure(config: pytest.Config) -> None:
    """Last hook of every run (also --collect-only and interrupted runs): Ray is down by now."""
    shutil.rmtree(TEST_CACHE_ROOT, ignore_errors=True)


_TIER_ORDER = {"fake": 1, "cluster": 2, "e2e": 3}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: max((_TIER_ORDER.get(m.name, 0) for m in item.iter_markers()), default=0))


# Ray counts logical CPUs: the e2e app's four tiny engines take 0.5 each, the fake app's as many.
RAY_NUM_CPUS = max(os.cpu_count() or 1, 4)


@pytest.fixture(scope="session")
def serve_cluster() -> Iterator[str]:
    """One local Ray cluster and Serve HTTP proxy for the session; yields the proxy's base URL.

    Apps deploy under their own name and route prefix and delete themselves when done.
    """
    import ray
    from ray import serve

    from serve_graph.testing.serve import free_port

    port = free_port()
    ray.init(address="local", num_cpus=RAY_NUM_CPUS, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()
