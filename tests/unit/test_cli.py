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
