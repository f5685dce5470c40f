"""`serve-graph`: the operator's command line.

    serve-graph validate [--config models.yaml]             check the file, list each profile
    serve-graph render --profile P [--config F]             Serve config YAML on stdout
    serve-graph render --profile P --into cluster/rayservice.yaml   ... into a RayService's serveConfigV2
    serve-graph make-tiny-models DIR                        random-weight Qwen3 / Qwen3-MoE for CPU
    serve-graph classify [--config F --profile P] < in.jsonl one {"category","confidence"} per line
    serve-graph explain "prompt" [--config F --profile P]   the full routing decision, and why
"""

from __future__ import annotations

import argparse
import json
import re
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
    with only the rendered profile (local sources made absolute), so a RayService or
    `serve run serve_config.yaml` needs no file beside it."""
    path = Path(config)
    raw = yaml.safe_load(path.read_text())
    parse_config(raw, str(path), path.parent.resolve()).resolve(profile)  # fail here, not on the cluster
    models = {**raw, "profiles": {profile: raw["profiles"][profile]}}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8000},
        "applications": [
            {
                "name": app_name,
                "route_prefix": "/",
                "import_path": "serve_graph.app:build_app",
                "args": {"profile": profile, "models": models},
            }
        ],
    }


class _RenderDumper(yaml.SafeDumper):
    """Multi-line strings (the early-stop text) as one double-quoted line with `\\n` escapes."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if "\n" in value else None)


_RenderDumper.add_representer(str, _str)


def render_text(serve_config: dict[str, Any]) -> str:
    """The Serve config as YAML, byte for byte what `render` prints and what `--into` embeds."""
    return yaml.dump(serve_config, Dumper=_RenderDumper, sort_keys=False, width=4096)


_SERVE_CONFIG_KEY = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*(#.*)?$")


def embed_serve_config(manifest: str, serve_config_text: str) -> str:
    """`manifest` (a KubeRay RayService) with its `serveConfigV2: |` block replaced by
    `serve_config_text`; every other line, comments included, stays as it was."""
    lines = manifest.splitlines(keepends=True)
    keys = [(i, m) for i, line in enumerate(lines) if (m := _SERVE_CONFIG_KEY.match(line.rstrip("\n")))]
    if len(keys) != 1:
        raise ValueError(f"expected exactly one `serveConfigV2: |` block, found {len(keys)}")
    start, key = keys[0]
    indent = len(key["indent"])

    def inside(line: str) -> bool:
        return not line.strip() or len(line) - len(line.lstrip(" ")) > indent

    end = start + 1
    while end < len(lines) and inside(lines[end]):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines after the block stay
        end -= 1
    pad = " " * (indent + 2)
    body = "".join(pad + line if line.strip() else line for line in serve_config_text.splitlines(keepends=True))
    return "".join(lines[:start]) + f"{' ' * indent}serveConfigV2: |\n" + body + "".join(lines[end:])


def serve_config_in(manifest: str) -> str | None:
    """The serveConfigV2 text of the RayService in a (multi-document) manifest."""
    for doc in yaml.safe_load_all(manifest):
        if isinstance(doc, dict) and doc.get("kind") == "RayService":
            text = (doc.get("spec") or {}).get("serveConfigV2")
            return text if isinstance(text, str) else None
    return None


def _cmd_render(ns: argparse.Namespace) -> int:
    text = render_text(render(ns.config, ns.profile, ns.app_name))
    if ns.into is None:
        sys.stdout.write(text)
        return 0
    target = Path(ns.into)
    try:
        updated = embed_serve_config(target.read_text(), text)
        if serve_config_in(updated) != text:  # never write a manifest that would not round-trip
            raise ValueError("the embedded serveConfigV2 would not read back as rendered")
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"{target}: {e}", file=sys.stderr)
        return 2
    target.write_text(updated)
    print(f"{target}: serveConfigV2 <- profile {ns.profile} of {ns.config}", file=sys.stderr)
    return 0


def _cmd_make_tiny(ns: argparse.Namespace) -> int:
    from serve_graph.tiny import make_tiny_models

    for name, path in make_tiny_models(ns.dir).items():
        print(f"{name}: {path}")
    return 0


def _classifier(examples: dict[str, list[str]]):  # noqa: ANN202 - lazy import keeps `validate` fast
    from serve_graph.classifier import build_classifier

    return build_classifier(examples)


def _cmd_classify(ns: argparse.Namespace) -> int:
    """JSON lines in (`text` or `messages`), one JSON line out per input, same order."""
    clf = _classifier(load_config(ns.config).resolve(ns.profile).examples)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if isinstance(row.get("messages"), list):
                c = clf.classify_messages(row["messages"])
            elif isinstance(row.get("text"), str):
                c = clf.classify_text(row["text"])
            else:
                raise ValueError("each line needs a `text` string or a `messages` list")
            out = {"category": c.category, "confidence": round(c.confidence, 4)}
        except (ValueError, AttributeError) as e:
            out = {"error": str(e)}
        print(json.dumps(out), flush=True)
    return 0


def explain(prompt: str, config: str, profile: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The router's plan for one prompt (the same `plan_request`), assuming every model is healthy."""
    from serve_graph.router.plan import classify_request, plan_request

    prof = load_config(config).resolve(profile)
    data = {"model": "auto", "messages": [{"role": "user", "content": prompt}], **(body or {})}
    classification = classify_request(_classifier(prof.examples), "chat", data)
    plan = plan_request("chat", data, prof, classification, {m.id for m in prof.models})
    c, d, b = plan.classification, plan.decision, plan.budget
    return {
        "category": c.category if c else None,
        "confidence": round(c.confidence, 4) if c else None,
        "scores": {k: round(v, 4) for k, v in sorted(c.scores.items(), key=lambda kv: -kv[1])} if c else {},
        "route": d.route,
        "candidates": list(d.candidates),
        "model": d.model,
        "thinking_budget": b.tokens if b else None,
        "thinking_budget_source": b.source if b else None,
        "thinking_budget_capped_by": b.capped_by if b else None,
        "why": d.reason,
    }


def _cmd_explain(ns: argparse.Namespace) -> int:
    extra = json.loads(ns.body) if ns.body else None
    print(json.dumps(explain(ns.prompt, ns.config, ns.profile, extra), indent=2))
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
    r.add_argument("--into", metavar="MANIFEST",
                   help="replace the serveConfigV2 block of this KubeRay RayService manifest (rest kept)")
    r.set_defaults(fn=_cmd_render)

    t = sub.add_parser("make-tiny-models", help="write tiny random-weight Qwen3 checkpoints")
    t.add_argument("dir")
    t.set_defaults(fn=_cmd_make_tiny)
    c = sub.add_parser("classify", help="classify JSON lines from stdin")
    c.add_argument("--config", default="models.yaml")
    c.add_argument("--profile", default="local")
    c.set_defaults(fn=_cmd_classify)

    e = sub.add_parser("explain", help="show the routing decision for a prompt")
    e.add_argument("prompt")
    e.add_argument("--config", default="models.yaml")
    e.add_argument("--profile", default="local")
    e.add_argument("--body", help='extra request fields as JSON, e.g. \'{"reasoning_effort": "high"}\'')
    e.set_defaults(fn=_cmd_explain)
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
