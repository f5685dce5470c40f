"""Helpers for tests that start a real Serve app: a free port, waiting for `/healthz`, an app
deployed for the length of a `with` block."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(base_url: str, timeout_s: float, interval_s: float = 0.5) -> float:
    """Seconds until `{base_url}/healthz` answered 200; TimeoutError (with the last answer) after timeout_s."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout_s:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
                last = r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:  # 503 while a model has no running replica yet
            last = e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            last = repr(e)
        time.sleep(interval_s)
    raise TimeoutError(f"app not healthy after {timeout_s:.0f}s; last /healthz: {last[:500]}")


@contextmanager
def deployed(app: Any, base_url: str, name: str, prefix: str, timeout_s: float) -> Iterator[tuple[str, float]]:
    """Run `app` under `name` at `prefix` on the Serve instance at `base_url` until the block ends.

    Yields the app's URL and the seconds from the call to its first `/healthz` 200 (the start-up
    the caller measures from building the app is on top); the app is deleted on exit, also when
    it never became healthy.
    """
    from ray import serve

    t0 = time.monotonic()
    serve.run(app, name=name, route_prefix=prefix, blocking=False)
    url = base_url + prefix
    try:
        wait_healthy(url, timeout_s, interval_s=0.25)
        yield url, time.monotonic() - t0
    finally:
        serve.delete(name)
