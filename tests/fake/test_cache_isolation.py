"""Tests never write to the user's caches: every cache location resolves under the session's
temporary directory (tests/conftest.py sets the variables before anything reads them)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ["SERVE_GRAPH_TEST_CACHE_ROOT"])
HOME_CACHE = Path.home() / ".cache"


def test_cache_root_is_a_temporary_directory() -> None:
    assert ROOT.is_dir()
    assert not ROOT.is_relative_to(HOME_CACHE)


def test_classifier_cache_resolves_under_the_test_dir() -> None:
    from serve_graph.classifier.store import cache_dir

    assert cache_dir().is_relative_to(ROOT)


def test_vllm_and_hugging_face_caches_resolve_under_the_test_dir() -> None:
    import vllm.envs as envs

    for path in (envs.VLLM_CACHE_ROOT, envs.VLLM_CONFIG_ROOT, envs.VLLM_ASSETS_CACHE):
        assert Path(path).is_relative_to(ROOT), path
    from huggingface_hub import constants

    assert Path(constants.HF_HOME).is_relative_to(ROOT)
    assert Path(constants.HF_HUB_CACHE).is_relative_to(ROOT)
