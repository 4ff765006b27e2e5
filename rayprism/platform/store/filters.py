"""Check a Milvus boolean filter against a collection before it runs.

Milvus parses the expression itself (its syntax errors come back as 400s too), but
some mistakes make it fail as a server would (deep nesting overflows its parser's
recursion, an integer beyond int64 overflows its conversion), and a misspelt field is
better answered with the list of fields than with a search over nothing. This pass
finds those: identifiers outside string literals and function calls must name a
filterable field, brackets must balance and nest at most :data:`MAX_DEPTH` deep, and
integer literals must fit int64.
"""

from __future__ import annotations

import re

from rayprism.platform.errors import InvalidInputError

MAX_CHARS = 16_384
MAX_DEPTH = 64
INT64_MAGNITUDE = 2**63
"""|-2**63| is the largest magnitude an int64 literal may have."""

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<other>\S)""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "like", "true", "false", "is", "null", "exists"}
_CLOSING = {")": "(", "]": "["}


def _refuse(message: str) -> InvalidInputError:
    return InvalidInputError(f"filter: {message}", param="filter")


def check_filter(expression: str, fields: list[str]) -> str:
    """The expression, stripped, if it passes the checks above."""
    expression = expression.strip()
    if len(expression) > MAX_CHARS:
        raise _refuse(f"longer than {MAX_CHARS} characters")
    tokens = list(_TOKEN.finditer(expression))
    open_brackets: list[str] = []
    for position, token in enumerate(tokens):
        text = token.group()
        if text in "([":
            open_brackets.append(text)
            if len(open_brackets) > MAX_DEPTH:
                raise _refuse(f"brackets nested deeper than {MAX_DEPTH} levels")
        elif text in _CLOSING:
            if not open_brackets or open_brackets.pop() != _CLOSING[text]:
                raise _refuse(f"unbalanced {text!r} at column {token.start() + 1}")
        elif token.group("number") and text.isdigit() and int(text) > INT64_MAGNITUDE:
            raise _refuse(f"integer {text} does not fit in 64 bits")
        name = token.group("name")
        if name is None or name.lower() in _KEYWORDS:
            continue
        following = tokens[position + 1].group() if position + 1 < len(tokens) else ""
        if following == "(":  # a function such as json_contains(...) or text_match(...)
            continue
        if name not in fields:
            raise _refuse(f"unknown field {name!r}; filterable fields are {sorted(fields)}")
    if open_brackets:
        raise _refuse(f"{len(open_brackets)} unclosed {open_brackets[-1]!r}")
    return expression
