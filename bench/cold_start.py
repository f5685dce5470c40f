"""Cold start of `make demo`: seconds from the command to the first 200 of a chat completion,
then seconds from SIGTERM to a clean stop (no Ray process left).

    .venv/bin/python -m bench.cold_start            (run with nothing else on port 8000)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
URL = "http://127.0.0.1:8000"
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Write a haiku"}], "max_tokens": 8}


def first_200(timeout_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if httpx.post(f"{URL}/v1/chat/completions", json=BODY, timeout=30).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("no 200 from the demo")


def ray_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "raylet|gcs_server|EngineCore|ray::"], capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def main() -> int:
    t0 = time.monotonic()
    proc = subprocess.Popen(["make", "demo"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        first_200(1200)
        ready = time.monotonic() - t0
    finally:
        t1 = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=300)
        stop = time.monotonic() - t1
    left = ray_processes()
    print(f"make demo -> first 200: {ready:.0f} s; SIGTERM -> stopped: {stop:.0f} s; "
          f"Ray processes left: {len(left)}")
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
