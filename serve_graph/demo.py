"""`make demo`: the local profile under `serve run`, a ready line, and a clean stop.

We start a local Ray head ourselves (`ray start --head`) and point `serve run` at it, because
tearing down a cluster that `serve run` started implicitly depends on it finishing a graceful
Serve shutdown (vLLM engines included) in time. On Ctrl-C or SIGTERM: SIGINT to `serve run`
(its own clean shutdown), then `ray stop`, which ends every Ray process of that cluster, engines
included, so nothing is left holding port 8000 or the CPUs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

GRACE_S = 30.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _ray(*args: str) -> int:
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *args], check=False).returncode


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    _ray("stop")  # the head main() started: graceful, then forced after its own timeout
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode or 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="models.yaml")
    p.add_argument("--profile", default="local")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--startup-timeout", type=float, default=900)
    ns = p.parse_args(argv)

    t0 = time.monotonic()
    url = f"http://127.0.0.1:{ns.port}"
    if _healthy(url):
        print(f"something already answers on {url}; stop it first", file=sys.stderr)
        return 1
    if _ray("start", "--head", "--disable-usage-stats", "--include-dashboard=false") != 0:
        print("could not start a local Ray head (is one running? `ray stop` ends it)", file=sys.stderr)
        return 1
    cmd = [str(Path(sys.executable).parent / "serve"), "run", "--address", "auto", "serve_graph.app:build_app",
           f"config={ns.config}", f"profile={ns.profile}"]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, start_new_session=True)

    stopping = {"now": False}

    def _on_signal(signum: int, _frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        while not _healthy(url):
            if stopping["now"] or proc.poll() is not None or time.monotonic() - t0 > ns.startup_timeout:
                print("serve_graph did not come up", file=sys.stderr)
                return _stop(proc) or 1
            time.sleep(1)
        print(
            f"\nserve_graph READY in {time.monotonic() - t0:.0f}s at {url} (profile {ns.profile}). Try:\n"
            f"  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\\n"
            f"    -d '{{\"model\": \"auto\", \"messages\": [{{\"role\": \"user\", \"content\": \"Write a haiku\"}}], "
            f"\"max_tokens\": 32}}'\n"
            f"  curl -s {url}/v1/models\n"
            "Ctrl-C stops it.\n",
            flush=True,
        )
        while not stopping["now"] and proc.poll() is None:
            time.sleep(0.5)
    finally:
        code = _stop(proc)
        print("serve_graph stopped", flush=True)
    return 0 if stopping["now"] else code


if __name__ == "__main__":
    sys.exit(main())
