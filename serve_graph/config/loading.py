"""Reading models.yaml: YAML -> validated `ServeGraphConfig`, every failure a `ConfigError` that
names the file, the field path and the problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from serve_graph.config.base import ConfigError
from serve_graph.config.profiles import ServeGraphConfig


def format_errors(err: ValidationError, source: str) -> str:
    """One line per problem: `file: a.b[2].c: message` (pydantic's loc, written as a path)."""
    lines = [f"{source}: invalid configuration ({err.error_count()} problem(s))"]
    for e in err.errors():
        path = ""
        for part in e["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {source}: {path or '<root>'}: {msg}")
    return "\n".join(lines)


def _resolve_sources(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative local `source` paths are relative to the YAML file, not to the cwd of `serve run`."""
    profiles = raw.get("profiles")
    for prof in profiles.values() if isinstance(profiles, dict) else ():
        models = prof.get("models") if isinstance(prof, dict) else None
        for m in models if isinstance(models, list) else ():
            src = m.get("source") if isinstance(m, dict) else None
            if isinstance(src, str) and src.startswith(("./", "../", ".")) and not os.path.isabs(src):
                m["source"] = str((base / src).resolve())
    return raw


def parse_config(raw: Any, source: str = "<inline>", base_dir: Path | None = None) -> ServeGraphConfig:
    """Validate an already-loaded mapping (e.g. the inline copy `render` embeds in serve_config)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    raw = _resolve_sources(raw, base_dir or Path.cwd())
    try:
        return ServeGraphConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def load_config(path: str | os.PathLike[str]) -> ServeGraphConfig:
    """Read and validate models.yaml; every failure is a ConfigError naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(raw, str(p), p.parent.resolve())
