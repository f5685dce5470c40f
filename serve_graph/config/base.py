"""The one base of every `models.yaml` section, and the error every config problem becomes."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

EXTENSION_PREFIX = "x-"


class ConfigError(ValueError):
    """A models.yaml problem, phrased for the operator: file, field path, what is wrong."""


def is_extension(key: object) -> bool:
    """Keys starting with `x-` are extension fields (YAML anchors to reuse), as in docker-compose."""
    return isinstance(key, str) and key.startswith(EXTENSION_PREFIX)


def drop_extensions(data: Any) -> Any:
    """``data`` without its `x-` keys (anything that is not a mapping is returned as is)."""
    if isinstance(data, dict) and any(is_extension(k) for k in data):
        return {k: v for k, v in data.items() if not is_extension(k)}
    return data


T = TypeVar("T")

# A map keyed by names the operator chooses (profiles, routes.categories, budgets.categories): `x-`
# keys are extensions there too, so names starting with `x-` are reserved.
Named = Annotated[dict[str, T], BeforeValidator(drop_extensions)]


def check_scaling(min_replicas: int, max_replicas: int, target: float, max_ongoing: int) -> None:
    """The bounds every autoscaled deployment (a model, the router) must keep; ValueError if not."""
    if min_replicas > max_replicas:
        raise ValueError(f"min_replicas ({min_replicas}) > max_replicas ({max_replicas})")
    if target > max_ongoing:
        raise ValueError(
            f"target_ongoing_requests ({target}) > max_ongoing_requests ({max_ongoing}): "
            "the target could never be reached"
        )


class Section(BaseModel):
    """Every section of models.yaml: frozen, unknown keys are errors (a misspelt option must not be
    silently ignored), and `x-` keys are dropped before validation, so an operator may park an
    anchor (`x-early-stop: &early_stop "..."`) in any section and reuse it elsewhere.

    The rule lives here only: a section that does not derive from this class would reject `x-`
    keys, which the tests catch for every section path.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_extensions(cls, data: Any) -> Any:
        return drop_extensions(data)
