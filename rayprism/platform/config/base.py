"""What every config section shares: strict models, common field types, loading and error messages.

Configs are validated when loaded, before Ray starts: a bad file fails in a
second with the file, the key path and the offending value in the message.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from rayprism.platform.errors import ConfigError


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def _custom_only(resources: dict[str, float]) -> dict[str, float]:
    builtin = sorted(set(resources) & set(RAY_BUILTIN_RESOURCES))
    if builtin:
        raise ValueError(f"{builtin} are Ray's own resources: set num_cpus / num_gpus instead")
    return resources


CustomResources = Annotated[dict[str, Annotated[float, Field(gt=0)]], AfterValidator(_custom_only)]
"""Ray custom resources an actor needs, e.g. ``{gpu_node: 1}``: it is placed only on nodes started with
them (``ray start --resources``, a KubeRay worker group's ``rayStartParams``), which is how a config
pins a deployment or a job's workers to one kind of node."""


def _number_only(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ValueError("must be an integer")
    return value


Integer = Annotated[int, BeforeValidator(_number_only)]
"""An integer field as JSON Schema has it: 3 and 3.0, not true or "3" (pydantic's lax int takes both,
its strict int refuses 3.0). Bounds go on the field (``Field(gt=0)``) or through :func:`bounded`."""


def bounded(**bounds: int) -> Any:
    """:data:`Integer` within ``bounds`` where no field carries them (a list's items): bounds placed
    after the validator would reach the schema as unknown ``ge``/``le`` keywords."""
    return Annotated[int, Field(**bounds), BeforeValidator(_number_only)]


NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""Model names: also used as metric labels and in URLs."""
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
"""Collection and field names, as Milvus accepts them."""
Identifier = Annotated[str, StringConstraints(pattern=f"^{IDENTIFIER.pattern}$")]
"""A field of that kind: checked by pydantic and shown as ``pattern`` in the HTTP schema (one rule, both)."""


def full_match(pattern: re.Pattern, value: str) -> bool:
    """Whole-string match: ``$`` would accept a trailing newline."""
    return pattern.fullmatch(value) is not None


NAME_RULE = "must start with a letter and use only letters, digits, '_', '.', '-' (≤ 64 chars)"
IDENTIFIER_RULE = "must start with a letter or '_' and use only letters, digits and '_'"


def valid_name(name: str) -> str:
    """``name`` if it is a :data:`NAME` (a model, group or training run), else the one message for all."""
    if not full_match(NAME, name):
        raise ValueError(NAME_RULE)
    return name


def check_unique(kind: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{kind} names must be unique, repeated: {duplicates}")


def is_lite_uri(uri: str) -> bool:
    """A Milvus Lite file path, as opposed to ``http://host:19530``."""
    return not re.match(r"^[a-z][a-z0-9+.-]*://", uri)


def nested_problems(error: ValidationError) -> str:
    """A nested model's validation errors in one line, for the message of its parent's error."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        + (f" (got {item['input']!r})" if item["type"] != "missing" else "")
        for item in error.errors()
    )


ConfigT = TypeVar("ConfigT", bound=BaseModel)


def format_validation_error(error: ValidationError, origin: str) -> str:
    """One line per problem: ``origin: key.path[0].leaf: message (got <value>)``."""
    lines = [f"invalid config {origin}:"]
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif not str(part).startswith("function-"):  # pydantic's name for a validator step
                path += f".{part}" if path else str(part)
        got = item.get("input")
        shown = "" if isinstance(got, dict) or item["type"] == "missing" else f" (got {got!r})"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path or '<root>'}: {message}{shown}")
    return "\n".join(lines)


def parse_config(model: type[ConfigT], data: Any, origin: str) -> ConfigT:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {origin}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, origin)) from None


def load_config(model: type[ConfigT], path: str | Path) -> ConfigT:
    """Read and validate a YAML file; every failure is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid YAML in {path}: {error}") from None
    return parse_config(model, data, str(path))
