"""models.yaml validation: broken files fail with the file, the field path and what is wrong."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import serve_graph.config
from serve_graph.config import ConfigError, ResolvedProfile, Section, ServeGraphConfig, load_config, parse_config
from serve_graph.deployments import engine_kwargs, llm_config_dict

REPO = Path(__file__).resolve().parents[2]
MODELS_YAML = REPO / "models.yaml"


@pytest.fixture()
def raw() -> dict[str, Any]:
    return yaml.safe_load(MODELS_YAML.read_text())


def _write(tmp_path: Path, data: dict[str, Any]) -> Path:
    p = tmp_path / "models.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _error(tmp_path: Path, data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, data))
    return str(e.value)


def test_shipped_file_is_valid_and_has_both_profiles() -> None:
    cfg = load_config(MODELS_YAML)
    assert {"production", "local"} <= set(cfg.profiles)
    prod = cfg.resolve("production")
    tiers = {m.tier: m for m in prod.models}
    assert set(tiers) == {"small", "medium", "moe", "xl"}
    assert tiers["xl"].engine.tensor_parallel_size == 8
    assert tiers["moe"].source == "Qwen/Qwen3-30B-A3B"
    local = cfg.resolve("local")
    assert all(m.resources.is_cpu for m in local.models)
    assert all(m.autoscaling.max_replicas == 1 for m in local.models)
    # relative sources are resolved against the YAML file, not the cwd
    assert all(Path(m.source).is_absolute() for m in local.models)


def test_every_model_sets_target_ongoing_requests(raw: dict[str, Any]) -> None:
    for prof in raw["profiles"].values():
        for m in prof["models"]:
            assert "target_ongoing_requests" in m["autoscaling"], m["id"]


def test_missing_field_names_the_field(tmp_path: Path, raw: dict[str, Any]) -> None:
    del raw["profiles"]["local"]["models"][1]["tier"]
    msg = _error(tmp_path, raw)
    assert "models.yaml" in msg
    assert "profiles.local.models[1].tier" in msg
    assert "Field required" in msg


def test_missing_target_ongoing_requests_is_an_error(tmp_path: Path, raw: dict[str, Any]) -> None:
    del raw["profiles"]["production"]["models"][0]["autoscaling"]["target_ongoing_requests"]
    msg = _error(tmp_path, raw)
    assert "profiles.production.models[0].autoscaling.target_ongoing_requests" in msg


def test_tp_must_divide_heads(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][3]["engine"]["tensor_parallel_size"] = 6  # 64 heads
    msg = _error(tmp_path, raw)
    assert "profiles.production.models[3]" in msg
    assert "tensor_parallel_size 6 does not divide num_attention_heads 64" in msg


def test_tp_checked_against_local_checkpoint(tmp_path: Path, raw: dict[str, Any]) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text('{"num_attention_heads": 4, "num_key_value_heads": 2}')
    m = raw["profiles"]["local"]["models"][0]
    m["source"] = str(ckpt)
    m["engine"]["tensor_parallel_size"] = 3
    msg = _error(tmp_path, raw)
    assert "profiles.local.models[0]" in msg and "does not divide num_attention_heads 4" in msg


def test_autoscaling_min_above_max(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["local"]["models"][2]["autoscaling"].update(min_replicas=3, max_replicas=1)
    msg = _error(tmp_path, raw)
    assert "profiles.local.models[2].autoscaling" in msg
    assert "min_replicas (3) > max_replicas (1)" in msg


def test_production_placement_is_what_the_issue_asks(raw: dict[str, Any]) -> None:
    prod = load_config(MODELS_YAML).resolve("production")
    moe, xl = (next(m for m in prod.models if m.tier == t) for t in ("moe", "xl"))
    assert moe.source == "Qwen/Qwen3-30B-A3B" and moe.engine.tensor_parallel_size == 2
    assert moe.engine.enable_expert_parallel and moe.resources.accelerator_type == "A100"
    assert xl.source == "Qwen/Qwen3-235B-A22B" and xl.engine.tensor_parallel_size == 8 and xl.workers == 8
    assert xl.resources.accelerator_type == "H100" and xl.autoscaling.scales_to_zero
    assert all(m.resources.placement_strategy == "STRICT_PACK" for m in prod.models)
    assert len({m.resources.accelerator_type for m in prod.models}) == len(prod.models)


def test_autoscaling_defaults() -> None:
    from serve_graph.config import Autoscaling

    a = Autoscaling(target_ongoing_requests=4)
    assert (a.min_replicas, a.max_replicas, a.initial_replicas) == (1, 1, None)
    assert (a.max_ongoing_requests, a.max_queued_requests) == (64, 128)
    assert (a.upscale_delay_s, a.downscale_delay_s, a.look_back_period_s) == (30, 600, 30)
    assert a.downscale_to_zero_delay_s is None and not a.scales_to_zero


@pytest.mark.parametrize(
    ("section", "change", "field", "message"),
    [
        ("autoscaling", {"max_queued_requests": 0}, "autoscaling.max_queued_requests", "must be -1 or null"),
        ("autoscaling", {"max_queued_requests": -5}, "autoscaling.max_queued_requests", "must be -1 or null"),
        ("autoscaling", {"initial_replicas": 9}, "autoscaling",
         "initial_replicas (9) must lie between min_replicas (1) and max_replicas (8)"),
        ("autoscaling", {"downscale_to_zero_delay_s": 60}, "autoscaling",
         "downscale_to_zero_delay_s applies only with min_replicas 0"),
        ("autoscaling", {"target_ongoing_requests": 100}, "autoscaling",
         "target_ongoing_requests (100.0) > max_ongoing_requests (64)"),
        ("autoscaling", {"upscale_delay_s": -1}, "autoscaling.upscale_delay_s", "greater than or equal to 0"),
        ("autoscaling", {"look_back_period_s": 0}, "autoscaling.look_back_period_s", "greater than 0"),
        ("resources", {"placement_strategy": "BEST_EFFORT"}, "resources.placement_strategy", "'STRICT_PACK'"),
        ("resources", {"gpus_per_worker": 0}, "resources", "accelerator_type 'L4' needs gpus_per_worker > 0"),
    ],
)
def test_autoscaling_and_resources_errors_name_the_field(
    tmp_path: Path, raw: dict[str, Any], section: str, change: dict[str, Any], field: str, message: str
) -> None:
    raw["profiles"]["production"]["models"][0][section].update(change)
    msg = _error(tmp_path, raw)
    assert f"profiles.production.models[0].{field}: " in msg and message in msg, msg


def test_max_queued_requests_null_means_unlimited(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][0]["autoscaling"]["max_queued_requests"] = None
    raw["profiles"]["production"]["models"][1]["autoscaling"]["max_queued_requests"] = -1
    prod = load_config(_write(tmp_path, raw)).resolve("production")
    assert prod.models[0].autoscaling.max_queued_requests == prod.models[1].autoscaling.max_queued_requests == -1


def test_a_tp_group_is_never_spread(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][3]["resources"]["placement_strategy"] = "SPREAD"
    msg = _error(tmp_path, raw)
    assert "profiles.production.models[3]: " in msg
    assert "placement_strategy SPREAD would split the tensor_parallel_size 8 group" in msg


def test_scale_to_zero_can_start_awake(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][3]["autoscaling"]["initial_replicas"] = 1
    xl = load_config(_write(tmp_path, raw)).resolve("production").models[3]
    assert xl.autoscaling.min_replicas == 0 and xl.autoscaling.initial_replicas == 1


def test_router_autoscaling_fields(tmp_path: Path, raw: dict[str, Any]) -> None:
    r = load_config(MODELS_YAML).router
    assert (r.min_replicas, r.max_replicas, r.upscale_delay_s, r.downscale_delay_s) == (1, 4, 30, 600)
    raw["router"]["target_ongoing_requests"] = 5000
    msg = _error(tmp_path, raw)
    assert "router: target_ongoing_requests (5000.0) > max_ongoing_requests (1024)" in msg
    raw["router"].update(target_ongoing_requests=64, min_replicas=0)
    assert "router.min_replicas: Input should be greater than or equal to 1" in _error(tmp_path, raw)


def test_unknown_family(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][1]["family"] = "llama3"
    msg = _error(tmp_path, raw)
    assert "profiles.production.models[1].family" in msg
    assert "qwen3-instruct-2507" in msg  # the message lists what is allowed


def test_unknown_key_is_rejected(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["local"]["models"][0]["engine"]["tensor_paralel_size"] = 1
    msg = _error(tmp_path, raw)
    assert "profiles.local.models[0].engine.tensor_paralel_size" in msg


def test_instruct_2507_cannot_think(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["profiles"]["production"]["models"][0]["family"] = "qwen3-instruct-2507"
    msg = _error(tmp_path, raw)
    assert "never thinks" in msg


def test_route_candidate_must_exist(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["routes"]["categories"]["code"]["candidates"] = ["qwen-coder-does-not-exist"]
    msg = _error(tmp_path, raw)
    assert "routes.categories.code" in msg and "qwen-coder-does-not-exist" in msg


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_tiers_expand_per_profile(raw: dict[str, Any]) -> None:
    cfg = parse_config(copy.deepcopy(raw), "x", MODELS_YAML.parent)
    assert cfg.resolve("production").category_routes["math"][0] == "qwen3-30b-a3b"
    assert cfg.resolve("local").category_routes["math"][0] == "qwen3-moe-tiny"
    with pytest.raises(ConfigError, match="unknown profile"):
        cfg.resolve("staging")


def test_llm_config_has_reasoning_budget_and_no_stream_batching() -> None:
    prof = load_config(MODELS_YAML).resolve("production")
    xl = next(m for m in prof.models if m.tier == "xl")
    kw = engine_kwargs(xl)
    assert kw["tensor_parallel_size"] == 8 and "served_model_name" not in kw
    assert kw["reasoning_config"]["reasoning_end_str"].endswith("</think>\n\n")
    cfg = llm_config_dict(xl)
    assert cfg["experimental_configs"]["stream_batching_interval_ms"] == 0
    assert len(cfg["placement_group_config"]["bundles"]) == 8
    assert cfg["placement_group_config"]["bundles"][0]["GPU"] == 1
    assert cfg["accelerator_type"] == "H100"
    auto = cfg["deployment_config"]["autoscaling_config"]
    assert auto["target_ongoing_requests"] == xl.autoscaling.target_ongoing_requests
    assert auto["min_replicas"] == 0


def test_ray_accepts_every_generated_llm_config() -> None:
    """Ray's own LLMConfig validation runs on what we generate (no cluster needed)."""
    from serve_graph.deployments import llm_configs

    cfg = load_config(MODELS_YAML)
    for name in cfg.profiles:
        configs = llm_configs(cfg.resolve(name))
        assert set(configs) == {m.id for m in cfg.resolve(name).models}


def test_early_stop_text_is_forced_at_the_budget(tmp_path: Path, raw: dict[str, Any]) -> None:
    prod = load_config(MODELS_YAML).resolve("production")
    for m in prod.models:
        end = engine_kwargs(m)["reasoning_config"]["reasoning_end_str"]
        assert end.startswith("\n\nConsidering the limited time") and end.rstrip().endswith("</think>")
    raw["profiles"]["local"]["models"][0]["engine"]["reasoning_end"] = "Time is up."
    msg = _error(tmp_path, raw)
    assert "profiles.local.models[0].engine.reasoning_end" in msg and "must end with </think>" in msg


# ---- `x-` extension keys ------------------------------------------------------------------------

# Every section of the file, as a path into the raw mapping; the value is what to create there when
# models.yaml does not have the section (None: it is always there).
SECTIONS: list[tuple[tuple[str | int, ...], Any]] = [
    ((), None),
    (("routes",), None),
    (("routes", "default"), None),
    (("routes", "categories", "code"), None),
    (("routes", "categories", "math", "escalate"), None),
    (("routes", "vision"), {"candidates": ["small"]}),
    (("budgets",), None),
    (("budgets", "categories", "math"), None),
    (("tracing",), {}),
    (("router",), None),
    (("profiles", "production"), None),
    (("profiles", "local", "routes"), {"default": {"candidates": ["small"]}}),
    (("profiles", "production", "models", 3), None),
    (("profiles", "production", "models", 3, "engine"), None),
    (("profiles", "production", "models", 3, "resources"), None),
    (("profiles", "production", "models", 3, "autoscaling"), None),
    (("profiles", "production", "models", 3, "architecture"), None),
    (("profiles", "production", "models", 3, "capabilities"), {}),
    (("profiles", "local", "models", 0), None),
]


def _section(raw: dict[str, Any], path: tuple[str | int, ...], create: Any) -> dict[str, Any]:
    node: Any = raw
    for i, key in enumerate(path):
        if isinstance(node, dict) and key not in node:
            assert i == len(path) - 1 and create is not None, f"models.yaml has no {path[: i + 1]}"
            node[key] = copy.deepcopy(create)
        node = node[key]
    assert isinstance(node, dict), path
    return node


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


@pytest.mark.parametrize(("path", "create"), SECTIONS, ids=[_dotted(p) or "<root>" for p, _ in SECTIONS])
def test_x_keys_are_accepted_in_every_section(
    tmp_path: Path, raw: dict[str, Any], path: tuple[str | int, ...], create: Any
) -> None:
    _section(raw, path, create)  # the section as the file would have it, without extensions
    expected = load_config(_write(tmp_path, raw))
    section = _section(raw, path, create)
    section["x-anchor"] = {"reuse": ["me", 1]}
    section["x-note"] = "extension fields are ignored"
    assert load_config(_write(tmp_path, raw)) == expected

    # the same key without the prefix is a misspelt option: rejected, with its path
    section["anchor"] = 1
    msg = _error(tmp_path, raw)
    assert f"{_dotted((*path, 'anchor'))}: Extra inputs are not permitted" in msg


NAMED_MAPS: list[tuple[str, ...]] = [("profiles",), ("routes", "categories"), ("budgets", "categories")]


@pytest.mark.parametrize("path", NAMED_MAPS, ids=[".".join(p) for p in NAMED_MAPS])
def test_x_keys_are_extensions_in_maps_of_names_too(tmp_path: Path, raw: dict[str, Any], path: tuple[str, ...]) -> None:
    """`x-` marks an extension in every mapping of the file, including those keyed by names the
    operator chooses (a profile or a category named `x-...` is reserved): an anchor parked there
    is not read as a profile or category."""
    expected = load_config(_write(tmp_path, raw))
    _section(raw, path, None)["x-defaults"] = {"not": "a profile or a category"}
    assert load_config(_write(tmp_path, raw)) == expected


def _section_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every pydantic model reachable from `model`'s field annotations."""
    if model in seen:
        return seen
    seen.add(model)
    hints = typing.get_type_hints(model, include_extras=False)
    stack = [hints[name] for name in model.model_fields]
    while stack:
        tp = stack.pop()
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            _section_models(tp, seen)
        stack.extend(typing.get_args(tp))
    return seen


def test_every_section_derives_from_the_one_strict_base() -> None:
    models = _section_models(ServeGraphConfig, set())
    assert len(models) >= 14
    assert all(issubclass(m, Section) for m in models), [m.__name__ for m in models if not issubclass(m, Section)]
    # ResolvedProfile is not a section of the file but carries them
    assert _section_models(ResolvedProfile, set()) - {ResolvedProfile} <= models


# ---- config is the leaf -------------------------------------------------------------------------

CONFIG_DIR = Path(serve_graph.config.__file__).parent


def _imported_modules(tree: ast.Module) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_config_imports_nothing_else_of_serve_graph() -> None:
    files = sorted(CONFIG_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "base.py"}
    for f in files:
        for module in _imported_modules(ast.parse(f.read_text(), str(f))):
            root = module.split(".")
            assert root[0] != "serve_graph" or root[:2] == ["serve_graph", "config"], f"{f.name} imports {module}"


def test_importing_config_loads_no_other_serve_graph_module() -> None:
    proc = subprocess.run([sys.executable, "-m", "tests.scenarios.config_leaf"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "serve_graph.config" in loaded
    assert [m for m in loaded if m != "serve_graph" and not m.startswith("serve_graph.config")] == []


def test_config_modules_stay_small() -> None:
    for f in CONFIG_DIR.glob("*.py"):
        assert len(f.read_text().splitlines()) <= 400, f.name
