"""`serve-graph`: the operator's command line.

    serve-graph validate [--config models.yaml]             check the file, list each profile
    serve-graph render --profile P [--config F]             Serve config YAML on stdout
    serve-graph make-tiny-models DIR                        random-weight Qwen3 / Qwen3-MoE for CPU
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from serve_graph.config import ConfigError, load_config, parse_config


def _cmd_validate(ns: argparse.Namespace) -> int:
    cfg = load_config(ns.config)
    for name in cfg.profiles:
        prof = cfg.resolve(name)
        models = ", ".join(f"{m.id} ({m.tier})" for m in prof.models)
        print(f"{ns.config}: profile {name}: {models}; default route {prof.default_route}")
    return 0


def render(config: str, profile: str, app_name: str = "serve_graph") -> dict[str, Any]:
    """A Serve config that is self-contained: the validated models.yaml travels inline in `args`
    (local sources made absolute), so a RayService or `serve run serve_config.yaml` needs no
    file beside it."""
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    parse_config(raw, str(path), path.parent.resolve()).resolve(profile)  # fail here, not on the cluster
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [
            {
                "name": app_name,
                "route_prefix": "/",
                "import_path": "serve_graph.app:build_app",
                "args": {"profile": profile, "models": raw},
            }
        ],
    }


def _cmd_render(ns: argparse.Namespace) -> int:
    yaml.safe_dump(render(ns.config, ns.profile, ns.app_name), sys.stdout, sort_keys=False)
    return 0


def _cmd_make_tiny(ns: argparse.Namespace) -> int:
    from serve_graph.tiny import make_tiny_models

    for name, path in make_tiny_models(ns.dir).items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="serve-graph", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    v = sub.add_parser("validate", help="validate models.yaml")
    v.add_argument("--config", default="models.yaml")
    v.set_defaults(fn=_cmd_validate)

    r = sub.add_parser("render", help="print a Serve config for `serve run` / RayService")
    r.add_argument("--config", default="models.yaml")
    r.add_argument("--profile", required=True)
    r.add_argument("--app-name", default="serve_graph")
    r.set_defaults(fn=_cmd_render)

    t = sub.add_parser("make-tiny-models", help="write tiny random-weight Qwen3 checkpoints")
    t.add_argument("dir")
    t.set_defaults(fn=_cmd_make_tiny)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.fn(ns)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
