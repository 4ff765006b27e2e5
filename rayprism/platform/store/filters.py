"""Check a Milvus boolean filter against a collection before it runs.

Milvus parses the expression itself (its syntax errors come back as 400s too), but
some mistakes make it fail as a server would (deep nesting overflows its parser's
recursion, an integer beyond int64 overflows its conversion), and a misspelt field is
better answered with the list of fields than with a search over nothing. This pass
finds those: identifiers outside string literals and function calls must name a
filterable field, brackets must balance and nest at most
:data:`~rayprism.platform.store.filter_grammar.MAX_NESTING` deep, and
integer literals must fit int64.
"""

from __future__ import annotations

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.filter_grammar import INT64, KEYWORDS, MAX_NESTING, tokenize

MAX_CHARS = 16_384
_CLOSING = {")": "(", "]": "["}


def _refuse(message: str) -> InvalidInputError:
    return InvalidInputError(f"filter: {message}", param="filter")


def check_filter(expression: str, fields: list[str]) -> str:
    """The expression, stripped, if it passes the checks above."""
    expression = expression.strip()
    if len(expression) > MAX_CHARS:
        raise _refuse(f"longer than {MAX_CHARS} characters")
    tokens = tokenize(expression)
    open_brackets: list[str] = []
    for token, following in zip(tokens, tokens[1:]):
        text = token.text
        if token.kind == "string" and not token.closed:
            raise _refuse(f"unterminated string literal at column {token.position + 1}")
        if text in ("(", "["):
            open_brackets.append(text)
            if len(open_brackets) > MAX_NESTING:
                raise _refuse(f"brackets nested deeper than {MAX_NESTING} levels")
        elif text in _CLOSING:
            if not open_brackets or open_brackets.pop() != _CLOSING[text]:
                raise _refuse(f"unbalanced {text!r} at column {token.position + 1}")
        elif token.kind == "number" and text.isdigit() and int(text) > -INT64[0]:
            raise _refuse(f"integer {text} does not fit in 64 bits")
        if token.kind != "name" or text.lower() in KEYWORDS:
            continue
        if following.text == "(":  # a function such as json_contains(...) or text_match(...)
            continue
        if text not in fields:
            raise _refuse(f"unknown field {text!r}; filterable fields are {sorted(fields)}")
    if open_brackets:
        raise _refuse(f"{len(open_brackets)} unclosed {open_brackets[-1]!r}")
    return expression
