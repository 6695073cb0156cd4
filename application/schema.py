"""Declared request shapes, compiled once by pydantic-core, and their refusal as a 400.

A shape is a TypedDict (strict: JSON bodies are never coerced; lax for query strings and
form fields, which arrive as text). Members not declared are let through unchecked: the body
goes on to the provider as it was sent, not as pydantic's copy of it.

A refusal names the parameter as OpenAI does (`messages[0].content[1].text`) and says what
was expected; `anthropic=True` words it as Anthropic does (`messages.0.content.1.text: ...`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Callable, Union

from pydantic import ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from moneta.domain.errors import BadRequestError

JSONObject = dict[str, Any]  # free-form: any members
NonEmptyStr = Annotated[str, Field(min_length=1)]
PositiveInt = Annotated[int, Field(ge=1)]


@with_config(ConfigDict(strict=True, allow_inf_nan=False))
class Open(TypedDict):
    """An object of a JSON body: its declared members checked, any others let through."""


@with_config(ConfigDict(strict=False, allow_inf_nan=False))
class OpenText(TypedDict):
    """Query parameters or form fields: text, read as the declared types."""


def tagged(*shapes: Any) -> Any:
    """One of `shapes`, chosen by the object's `type` member (each shape declares its values)."""
    return Annotated[Union[shapes], Field(discriminator="type")]


def tagged_or_other(choices: dict[str, Any], other: Any) -> Any:
    """`choices[type]` for the object's `type` member, `other` for any other type: for APIs
    that add types faster than the gateway learns them."""
    def choose(value: Any) -> str | None:
        if not isinstance(value, dict):
            return None
        kind = value.get("type")
        return kind if isinstance(kind, str) and kind in choices else "other"

    members = [Annotated[shape, Tag(name)] for name, shape in choices.items()] + [Annotated[other, Tag("other")]]
    return Annotated[Union[tuple(members)], Discriminator(choose, custom_error_type="dict_type")]


@dataclass(frozen=True)
class _Problem:
    path: tuple[str | int, ...]
    errors: list[dict[str, Any]]  # pydantic's errors at that path: several for a union

    @property
    def param(self) -> str | None:
        return param_name(self.path)

    @property
    def missing(self) -> bool:
        return self.errors[0]["type"] == "missing"

    @property
    def expected(self) -> str | None:
        """The types wanted ("a string", "one of a string or an array") when the type is wrong."""
        if not all(error["type"] in _EXPECTED for error in self.errors):
            return None
        types = list(dict.fromkeys(_EXPECTED[error["type"]] for error in self.errors))
        return types[0] if len(types) == 1 else "one of " + " or ".join(types)

    @property
    def given(self) -> str:
        return _json_type(self.errors[0]["input"])

    @property
    def message(self) -> str:
        return next(error["msg"] for error in self.errors if error["type"] not in _EXPECTED)


def param_name(path: tuple[str | int, ...]) -> str | None:
    """OpenAI's name of a parameter (`messages[0].content`); a NUL in a key is written as an escape."""
    text = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)
    return text.removeprefix(".").replace("\x00", "\\u0000") or None


class Shape:
    """A request shape: `check(value)` returns the declared members as validated (a lax shape
    reads text as numbers) or raises BadRequestError."""

    def __init__(self, declared: Any, *, anthropic: bool = False, wording: dict[str, str] | None = None) -> None:
        self._adapter = TypeAdapter(declared)
        self._render: Callable[[_Problem], BadRequestError] = (
            (lambda problem: _anthropic_error(problem, wording or {})) if anthropic else _openai_error)

    def check(self, value: Any) -> Any:
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            raise self._render(_problem(value, exc.errors(include_url=False))) from None


def _problem(value: Any, errors: list[dict[str, Any]]) -> _Problem:
    """The most specific problem under the first error's parameter (a union's alternatives
    report at the same parameter, or deeper inside one alternative)."""
    located = [(_real_path(value, error), error) for error in errors]
    first = located[0][0]
    inside = [(path, error) for path, error in located if path[:len(first)] == first]
    deepest = max(len(path) for path, _ in inside)
    path = next(path for path, _ in inside if len(path) == deepest)
    return _Problem(path, [error for p, error in inside if p == path])


def _real_path(value: Any, error: dict[str, Any]) -> tuple[str | int, ...]:
    """pydantic's location without the names it gives union members (`str`, `text`)."""
    path: list[str | int] = []
    for step in error["loc"]:
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            continue
        path.append(step)
    if error["type"] == "missing":
        path.append(error["loc"][-1])
    elif error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path.append("type")
    return tuple(path)


_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "a boolean",
             "list_type": "an array", "dict_type": "an object", "model_attributes_type": "an object",
             "none_required": "null"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__)


def _openai_error(problem: _Problem) -> BadRequestError:
    param = problem.param
    if not param:
        return BadRequestError("The request body must be a JSON object.", code="invalid_type")
    if problem.missing:
        return BadRequestError(f"Missing required parameter: '{param}'.", param=param,
                               code="missing_required_parameter")
    if problem.expected:
        return BadRequestError(f"Invalid type for '{param}': expected {problem.expected}, but got {problem.given} "
                               "instead.", param=param, code="invalid_type")
    return BadRequestError(f"Invalid value for '{param}': {problem.message}.", param=param, code="invalid_value")


def _anthropic_error(problem: _Problem, wording: dict[str, str]) -> BadRequestError:
    """Anthropic's wording: `<dotted path>: <what is wrong>`, or the route's own wording for
    a top-level field."""
    dotted = ".".join(str(step) for step in problem.path)
    if not dotted:
        return BadRequestError("The request body must be a JSON object.")
    if dotted in wording:
        message = wording[dotted]
    elif problem.missing:
        message = "Field required"
    elif problem.expected:
        message = f"Input should be {problem.expected}"
    else:
        message = problem.message
    return BadRequestError(f"{dotted}: {message}", param=problem.param)
