"""`serve-graph` commands: classify, explain (custom categories from models.yaml), render, validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from serve_graph.cli import explain, main, render
from serve_graph.config import parse_config

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models.yaml"
SQL_EXAMPLES = [
    "Write a SQL query that joins the orders and customers tables on customer_id",
    "SELECT the ten most recent rows from the events table ordered by created_at",
    "How do I write a LEFT JOIN in PostgreSQL that keeps customers without orders?",
    "Write an SQL statement to count users grouped by country having more than 100 rows",
    "Create a SQL table for invoices with a foreign key to customers",
    "Optimize this SQL query: SELECT * FROM sales WHERE YEAR(date) = 2024",
    "Write a SQL window function query computing a running total of revenue per month",
    "Give me a SQL query to delete duplicate rows from the contacts table keeping the lowest id",
]


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "serve_graph.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def test_classify_jsonl_keeps_order() -> None:
    lines = [
        {"text": "Write a haiku about the sea"},
        {"messages": [{"role": "user", "content": "Solve 2x + 3 = 9 for x"}]},
        {"nothing": 1},
        {"text": "Translate into Spanish: where is the train station?"},
    ]
    out = _run("classify", stdin="\n".join(json.dumps(x) for x in lines) + "\n")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r.get("category") for r in rows] == ["creative", "math", None, "translation"]
    assert "error" in rows[2]
    assert all(0 <= r["confidence"] <= 1 for r in rows if "confidence" in r)


def test_explain_shows_the_decision() -> None:
    d = explain("Prove that the square root of 2 is irrational", str(MODELS), "production",
                {"reasoning_effort": "high"})
    assert d["category"] == "math" and d["model"] == "qwen3-235b-a22b"
    assert d["candidates"][0] == "qwen3-235b-a22b" and "escalated" in d["why"]
    assert d["thinking_budget"] == 16384 and d["thinking_budget_source"] == "reasoning_effort"


def test_custom_category_examples_in_models_yaml_change_the_decision(tmp_path: Path) -> None:
    prompt = "Write a SQL query listing customers with no orders in the last 90 days"
    before = explain(prompt, str(MODELS), "production")
    assert before["category"] != "sql"

    raw = yaml.safe_load(MODELS.read_text())
    raw["routes"]["categories"]["sql"] = {"candidates": ["moe"], "examples": SQL_EXAMPLES}
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(raw))
    after = explain(prompt, str(path), "production")
    assert after["category"] == "sql" and after["route"] == "sql"
    assert after["model"] == "qwen3-30b-a3b" != before["model"]


def test_render_is_a_self_contained_serve_config() -> None:
    cfg = render(str(MODELS), "local")
    app: dict[str, Any] = cfg["applications"][0]
    assert app["import_path"] == "serve_graph.app:build_app" and app["args"]["profile"] == "local"
    inline = parse_config(app["args"]["models"], "inline")
    assert all(Path(m.source).is_absolute() for m in inline.resolve("local").models)
    out = _run("render", "--profile", "production")
    assert out.returncode == 0 and yaml.safe_load(out.stdout)["applications"][0]["args"]["profile"] == "production"


def test_validate_reports_errors_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load(MODELS.read_text())
    raw["profiles"]["local"]["models"][0]["autoscaling"]["min_replicas"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["validate", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "profiles.local.models[0].autoscaling" in err and "min_replicas (5) > max_replicas (1)" in err
    assert main(["validate", "--config", str(MODELS)]) == 0


def test_rendered_args_build_the_same_profile_as_the_file(tmp_path: Path) -> None:
    """`serve run serve_config.yaml` calls build_app with the rendered args: same profile, from
    any working directory."""
    from serve_graph.app import load_profile

    args = render(str(MODELS), "local")["applications"][0]["args"]
    from_args = load_profile({**args, "base_dir": str(tmp_path)})
    from_file = load_profile({"config": str(MODELS), "profile": "local"})
    assert from_args == from_file


# ---- cluster/rayservice.yaml: serveConfigV2 is the rendered production config ----------------------

RAYSERVICE = REPO / "cluster" / "rayservice.yaml"
RERENDER = "serve-graph render --profile production --into cluster/rayservice.yaml"


def test_rayservice_serve_config_is_the_rendered_production_config() -> None:
    from serve_graph.cli import render_text, serve_config_in

    embedded = serve_config_in(RAYSERVICE.read_text())
    assert embedded == render_text(render(str(MODELS), "production")), (
        f"cluster/rayservice.yaml's serveConfigV2 drifted from models.yaml; run: {RERENDER}"
    )


def test_render_embeds_only_the_rendered_profile() -> None:
    args = render(str(MODELS), "production")["applications"][0]["args"]
    assert list(args["models"]["profiles"]) == ["production"]
    assert parse_config(args["models"], "inline").resolve("production") == parse_config(
        yaml.safe_load(MODELS.read_text()), "file", MODELS.parent).resolve("production")


def test_render_into_rewrites_only_the_serve_config_block(tmp_path: Path) -> None:
    """Edit models.yaml, re-render into a copy of the manifest: the drift is gone and every other
    line (comments, the cluster spec, the second document) is as it was."""
    from serve_graph.cli import render_text, serve_config_in

    raw = yaml.safe_load(MODELS.read_text())
    raw["profiles"]["production"]["models"][0]["autoscaling"]["max_replicas"] = 12
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump(raw, sort_keys=False))
    manifest = tmp_path / "rayservice.yaml"
    before = RAYSERVICE.read_text()
    manifest.write_text(before)
    assert main(["render", "--config", str(models), "--profile", "production", "--into", str(manifest)]) == 0
    after = manifest.read_text()
    rendered = render_text(render(str(models), "production"))
    assert serve_config_in(after) == rendered != serve_config_in(before)
    assert "max_replicas: 12" in serve_config_in(after)  # type: ignore[operator]

    def outside(text: str) -> list[str]:
        lines = text.splitlines()
        start = lines.index("  serveConfigV2: |")
        end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() and not lines[i].startswith("    "))
        return lines[:start] + lines[end:]

    assert outside(after) == outside(before)
    docs = list(yaml.safe_load_all(after))
    assert [d["kind"] for d in docs] == ["RayService", "Service"]
    # idempotent
    assert main(["render", "--config", str(models), "--profile", "production", "--into", str(manifest)]) == 0
    assert manifest.read_text() == after


def test_render_into_a_file_without_the_block_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "other.yaml"
    target.write_text("apiVersion: v1\nkind: Service\n")
    assert main(["render", "--profile", "production", "--into", str(target)]) == 2
    assert "expected exactly one `serveConfigV2: |` block, found 0" in capsys.readouterr().err
    assert target.read_text() == "apiVersion: v1\nkind: Service\n"


def test_render_stdout_is_the_text_that_is_embedded() -> None:
    from serve_graph.cli import render_text

    out = _run("render", "--profile", "production")
    assert out.returncode == 0 and out.stdout == render_text(render(str(MODELS), "production"))
