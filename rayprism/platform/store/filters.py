"""Check a Milvus boolean filter's field names against a collection before it runs.

Milvus parses the expression itself (its syntax errors come back as 400s too);
this pass only finds identifiers outside string literals and function calls and
insists each names a filterable field, so a typo gets an answer that lists the
fields instead of a search over nothing.
"""

from __future__ import annotations

import re

from rayprism.platform.errors import InvalidInputError

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<other>\S)""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "true", "false", "is", "null", "exists"}


def check_filter(expression: str, fields: list[str]) -> str:
    """The expression, stripped, if every identifier in it is one of ``fields``."""
    expression = expression.strip()
    tokens = list(_TOKEN.finditer(expression))
    for position, token in enumerate(tokens):
        name = token.group("name")
        if name is None or name.lower() in _KEYWORDS:
            continue
        following = tokens[position + 1].group() if position + 1 < len(tokens) else ""
        if following == "(":  # a function such as json_contains(...) or text_match(...)
            continue
        if name not in fields:
            raise InvalidInputError(
                f"filter: unknown field {name!r}; filterable fields are {sorted(fields)}", param="filter"
            )
    return expression
