"""Milvus boolean filters: their words, limits and the one tokenizer that reads them, and the check every
search filter passes before it runs.

Both readers of a filter use the tokenizer: the check below and the in-memory compiler
(:mod:`~rayprism.platform.store.filter_compiler`), so the two cannot split an expression, call a
word a field, or accept a nesting depth differently. Tokens are raw text: each reader decides what
a token means to it (the checker looks for fields and brackets, the compiler decodes literals).

Milvus parses the expression itself (its syntax errors come back as 400s too), but some mistakes
make it fail as a server would (deep nesting overflows its parser's recursion, an integer beyond
int64 overflows its conversion), and a misspelt field is better answered with the list of fields
than with a search over nothing. :func:`check_filter` finds those: identifiers outside string
literals and function calls must name a filterable field, brackets must balance and nest at most
:data:`MAX_NESTING` deep, and integer literals must fit int64.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from rayprism.platform.errors import InvalidInputError

MAX_NESTING = 64
"""Deepest bracket nesting a filter may have. Milvus's parsers recurse per level (a Milvus server
overflows on deep nesting, Milvus Lite somewhere between 120 and 200 levels): 64 is what the check
of every search filter has always allowed, so the in-memory path accepts nothing Milvus is never asked."""
INT64 = (-(2**63), 2**63 - 1)
"""The range an integer literal and an int64 field value must lie in."""

OPERATORS = frozenset({"and", "or", "not", "in", "like"})
"""Operator words, in any case (``AND`` too)."""
BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
"""The spellings of the boolean literals (Milvus's, and only those)."""
MILVUS_ONLY = frozenset({"is", "null", "exists", "iso", "interval"})
"""Words of ``is null``, ``exists`` and timestamp expressions: valid Milvus, never compiled in memory."""
KEYWORDS = OPERATORS | {"true", "false"} | MILVUS_ONLY
"""Every word that is not a field name (compared in lower case)."""
SYMBOLS = ("==", "!=", "<=", ">=", "&&", "||", "<", ">", "!", "(", ")", "[", "]", ",", "-")
"""Operators and punctuation, longest first where one begins another."""

_WHITESPACE = " \t\r\n"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Token:
    kind: str
    """``string`` (quotes and escapes as written), ``number``, ``name``, ``symbol`` (one of
    :data:`SYMBOLS`), ``other`` (any other single character) or ``end``."""
    text: str
    position: int
    closed: bool = True
    """False for a string literal that ends at a line break or the end of the expression."""


def tokenize(expression: str) -> list[Token]:
    """Every token of ``expression`` in order, then one ``end`` token; never refuses anything."""
    tokens, at = [], 0
    while at < len(expression):
        char = expression[at]
        if char in _WHITESPACE:
            at += 1
            continue
        if char in "\"'":
            token = _string(expression, at)
        elif char.isascii() and char.isdigit():
            token = Token("number", _NUMBER.match(expression, at).group(), at)
        elif name := _NAME.match(expression, at):
            token = Token("name", name.group(), at)
        else:
            symbol = next((s for s in SYMBOLS if expression.startswith(s, at)), None)
            token = Token("other", char, at) if symbol is None else Token("symbol", symbol, at)
        tokens.append(token)
        at += len(token.text)
    tokens.append(Token("end", "", len(expression)))
    return tokens


def _string(expression: str, start: int) -> Token:
    """A backslash takes the next character with it; an unescaped line break ends the literal unclosed."""
    quote, at = expression[start], start + 1
    while at < len(expression) and expression[at] != quote:
        if expression[at] in "\r\n" or expression[at:] == "\\":
            break
        at += 2 if expression[at] == "\\" else 1
    closed = at < len(expression) and expression[at] == quote
    return Token("string", expression[start: at + 1] if closed else expression[start:at], start, closed)


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


UNQUOTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""Characters a Milvus string literal cannot hold: JSON writes them as ``\\uXXXX``, an escape Milvus lacks."""


def string_literal(value: str) -> str:
    """``value`` as a Milvus string literal. JSON's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\t`` …) are Milvus's own, except
    ``\\uXXXX``: a value with a character of :data:`UNQUOTABLE` is never written (ids refuse them)."""
    return json.dumps(value, ensure_ascii=False)


def ids_filter(ids: list, field: str = "id") -> str:
    """``id in [...]`` for these ids, each quoted safely: pymilvus's ``get(ids=...)`` and ``delete(ids=...)``
    quote strings without escaping, so an id holding a quote or a backslash is refused or, worse, missed."""
    return f"{field} in [{', '.join(string_literal(i) if isinstance(i, str) else str(int(i)) for i in ids)}]"


def renamed_field(expression: str, old: str, new: str) -> str:
    """``expression`` with the field ``old`` called ``new`` (a chunked collection's ``id`` is its pieces'
    ``doc_id``); string literals, function names and keywords are left alone."""
    tokens = tokenize(expression)
    renamed, at = [], 0
    for token, following in zip(tokens, tokens[1:]):
        if token.kind == "name" and token.text == old and following.text != "(":
            renamed += [expression[at:token.position], new]
            at = token.position + len(old)
    return "".join(renamed) + expression[at:]

