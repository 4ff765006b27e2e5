"""Milvus boolean filters evaluated in memory, over the columns the store's mirror keeps
beside its vectors, with Milvus Lite's answers.

:func:`compile_filter` turns an expression into a :class:`~rayprism.numba_kernels.FilterProgram`
that :func:`~rayprism.numba_kernels.mask_from_columns` runs over a :class:`Columns`. The
subset: ``== != < <= > >=`` between a field and a literal (either side), ``in [...]``,
``not in [...]``, ``like "pattern"``, ``and/or/not`` (``&& || !``), parentheses, bare bool
fields, ``true``/``false``; int64, double, varchar and bool fields. A comparison with a null
value is unknown (three-valued logic, as in Milvus), except that Milvus Lite's ``in`` answers
false for a null, so ``not in`` matches it.

Two exceptions leave the module. :class:`FilterError` means the expression is wrong
(unknown field, unbalanced parentheses, a literal of the wrong type, an integer outside
int64); its message names the problem and the column. :class:`Unsupported` means the
expression may be valid Milvus but is not compiled here (functions, arithmetic,
``is null``, JSON paths, field-to-field comparisons, and the few spellings on which Milvus
Lite and a Milvus server disagree, such as ``010``): the caller asks Milvus instead.

Strings never reach the kernel: each varchar value is a code into a per-field dictionary,
and a string predicate becomes a table of its answer for every code, computed here.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rayprism.numba_kernels import Cmp, ColumnArrays, FilterProgram, Op, mask_from_columns
from rayprism.platform.errors import InvalidInputError
from rayprism.platform.store.filters import (
    BOOLEANS,
    INT64,
    MAX_NESTING,
    MILVUS_ONLY,
    OPERATORS,
    Token,
    tokenize,
)

_INT_COLUMNS = ("int64", "bool", "varchar")  # bools as 0/1, strings as dictionary codes


class FilterError(InvalidInputError):
    """The filter expression is malformed or does not fit the collection's fields."""

    def __init__(self, message: str, expression: str, position: int):
        super().__init__(f"filter: {message} (at column {position + 1} of {expression!r})", param="filter")


class Unsupported(Exception):
    """Not compiled here (it may be valid Milvus): evaluate the filter in Milvus instead."""


class Columns:
    """Filterable field values, row-aligned with the vectors of an in-memory mirror.

    Row ``i`` is the mirror's row slot ``i``. :meth:`write` sets rows in place (an upsert
    reuses its slot, a new id takes the next one; arrays double when full, so appends are
    amortised O(1)), and a missing key or None is null. Deleting needs nothing here: the
    mirror's alive mask goes to the search kernel as ``allowed`` beside the filter mask.
    :meth:`take` compacts (keep the live slots, in the mirror's new order). Strings are coded
    per field in a dictionary that only grows, so codes stay valid across writes and
    compaction; a program compiled before new strings arrived is refused by the kernel,
    and compiling again is cheap (compile per query). Not thread-safe: callers hold the
    mirror's lock.
    """

    def __init__(self, field_types: Mapping[str, str], capacity: int = 1024):
        bad = {name: kind for name, kind in field_types.items() if kind not in (*_INT_COLUMNS, "double", "json")}
        if bad:
            raise ValueError(f"field types must be varchar, int64, double, bool or json, got {bad}")
        self.field_types = dict(field_types)
        int_fields = [name for name, kind in field_types.items() if kind in _INT_COLUMNS]
        float_fields = [name for name, kind in field_types.items() if kind == "double"]
        self._slot = {name: slot for fields in (int_fields, float_fields) for slot, name in enumerate(fields)}
        self._ints = np.zeros((len(int_fields), capacity), dtype=np.int64)
        self._int_valid = np.zeros((len(int_fields), capacity), dtype=bool)
        self._floats = np.zeros((len(float_fields), capacity), dtype=np.float64)
        self._float_valid = np.zeros((len(float_fields), capacity), dtype=bool)
        self._strings: dict[str, list[str]] = {name: [] for name, kind in field_types.items() if kind == "varchar"}
        self._codes: dict[str, dict[str, int]] = {name: {} for name in self._strings}
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def write(self, rows: Sequence[int], records: Sequence[Mapping[str, Any]]) -> None:
        """Set row ``rows[i]`` to ``records[i]``'s field values (rows past the end grow the columns;
        rows skipped over are null)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.shape != (len(records),):
            raise ValueError(f"rows ({rows.shape}) and records ({len(records)}) must pair up")
        if len(rows) == 0:
            return
        if rows.min() < 0:
            raise ValueError(f"rows must be non-negative, got {rows.min()}")
        converted = {  # every value checked before any row changes
            name: ([self._convert(name, kind, record.get(name)) for record in records],
                   np.array([record.get(name) is not None for record in records], dtype=bool))
            for name, kind in self.field_types.items() if kind != "json"
        }
        self._reserve(int(rows.max()) + 1)
        for name, (values, valid) in converted.items():
            if self.field_types[name] == "double":
                self._floats[self._slot[name], rows] = values
                self._float_valid[self._slot[name], rows] = valid
            else:
                self._ints[self._slot[name], rows] = values
                self._int_valid[self._slot[name], rows] = valid
        self._rows = max(self._rows, int(rows.max()) + 1)

    def take(self, rows: Sequence[int]) -> Columns:
        """A compacted copy holding ``rows`` in that order (string dictionaries kept)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self._rows):
            raise ValueError(f"rows must lie in [0, {self._rows})")
        copy = Columns(self.field_types, capacity=max(len(rows), 1))
        copy._ints[:, : len(rows)] = self._ints[:, rows]
        copy._int_valid[:, : len(rows)] = self._int_valid[:, rows]
        copy._floats[:, : len(rows)] = self._floats[:, rows]
        copy._float_valid[:, : len(rows)] = self._float_valid[:, rows]
        copy._strings = {name: list(strings) for name, strings in self._strings.items()}
        copy._codes = {name: dict(codes) for name, codes in self._codes.items()}
        copy._rows = len(rows)
        return copy

    def arrays(self) -> ColumnArrays:
        """The columns as the kernel reads them (views of the rows in use)."""
        codes = np.zeros(len(self._ints), dtype=np.int64)
        for name, strings in self._strings.items():
            codes[self._slot[name]] = len(strings)
        rows = slice(0, self._rows)
        return ColumnArrays(self._ints[:, rows], self._int_valid[:, rows], self._floats[:, rows],
                            self._float_valid[:, rows], codes)

    def slot(self, name: str) -> int:
        return self._slot[name]

    def strings(self, name: str) -> list[str]:
        """A varchar field's dictionary: code i stands for ``strings(name)[i]``."""
        return self._strings[name]

    def _reserve(self, rows: int) -> None:
        capacity = self._ints.shape[1]  # (0, capacity) without int fields
        if rows <= capacity:
            return
        while capacity < rows:
            capacity = max(2 * capacity, 1)
        for attribute in ("_ints", "_int_valid", "_floats", "_float_valid"):
            old = getattr(self, attribute)
            grown = np.zeros((len(old), capacity), dtype=old.dtype)
            grown[:, : old.shape[1]] = old
            setattr(self, attribute, grown)

    def _convert(self, name: str, kind: str, value: Any):
        if value is None:
            return 0
        if kind == "varchar" and isinstance(value, str):
            codes = self._codes[name]
            if value not in codes:
                codes[value] = len(codes)
                self._strings[name].append(value)
            return codes[value]
        if kind == "bool" and isinstance(value, (bool, np.bool_)):
            return int(value)
        if kind == "int64" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if INT64[0] <= value <= INT64[1]:
                return value
        if kind == "double" and isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"field {name!r} is {kind}, got {value!r}")


def compile_filter(expression: str, columns: Columns) -> FilterProgram:
    """The program for ``expression`` over ``columns`` as they are now (string tables included)."""
    tokens = _tokenize(expression)
    return _Parser(tokens, expression, columns).parse()


def filter_mask(expression: str, columns: Columns) -> np.ndarray:
    """bool[len(columns)]: the rows ``expression`` matches."""
    return mask_from_columns(compile_filter(expression, columns), columns.arrays())


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # int, float, string, bool, name, keyword (and/or/not/in/like), or the symbol itself
    text: str
    position: int
    value: Any = None


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}  # Milvus Lite's; others it refuses


def _tokenize(expression: str) -> list[_Token]:
    """The grammar's tokens with their meaning here: literals decoded, operators by name; the first
    token outside the compiled subset raises."""
    return [_meaning(token, expression) for token in tokenize(expression)]


def _meaning(token: Token, expression: str) -> _Token:
    text, at = token.text, token.position
    if token.kind == "string":
        return _string(token, expression)
    if token.kind == "number":
        return _number(expression, at, text)
    if token.kind == "name":
        lower = text.lower()
        if lower in MILVUS_ONLY:
            raise Unsupported(f"{text!r} expressions are evaluated by Milvus")
        if text in BOOLEANS:
            return _Token("bool", text, at, BOOLEANS[text])
        return _Token(lower if lower in OPERATORS else "name", text, at)
    if token.kind == "end":
        return _Token("end", "", at)
    if expression.startswith(("<<", ">>", "!~", "=~"), at) or token.kind == "other" and text != "=":
        raise Unsupported(f"{text!r} at column {at + 1} (arithmetic, bit operators, regular expressions, "
                          "$meta and non-ASCII names are evaluated by Milvus)")
    if token.kind == "other" or expression.startswith("<>", at):
        wrong, right = ("=", "==") if token.kind == "other" else ("<>", "!=")
        raise FilterError(f"'{wrong}' is not an operator; use '{right}'", expression, at)
    return _Token({"&&": "and", "||": "or", "!": "not"}.get(text, text), text, at)


def _string(token: Token, expression: str) -> _Token:
    body = token.text[1:-1] if token.closed else token.text[1:]
    chars, at = [], 0
    while at < len(body):
        if body[at] == "\\":
            escaped = body[at + 1: at + 2]
            if escaped not in _ESCAPES:
                raise Unsupported(f"the escape sequence \\{escaped} (Milvus Lite refuses it, a Milvus server reads it)")
            chars.append(_ESCAPES[escaped])
            at += 2
            continue
        chars.append(body[at])
        at += 1
    if not token.closed:
        raise FilterError("unterminated string literal", expression, token.position)
    return _Token("string", token.text, token.position, "".join(chars))


def _number(expression: str, start: int, text: str) -> _Token:
    following = expression[start + len(text) : start + len(text) + 1]
    if following and (following.isalnum() or following in "._"):
        raise Unsupported(f"the number at column {start + 1} (hexadecimal, '1.' and the like are read differently by "
                          "Milvus Lite and Milvus)")
    if text.isdigit():
        if len(text) > 1 and text[0] == "0":
            raise Unsupported(f"{text}: Milvus reads a leading 0 as octal, Milvus Lite as decimal")
        return _Token("int", text, start, int(text))
    return _Token("float", text, start, float(text))


# ---------------------------------------------------------------- parser


@dataclass(frozen=True)
class _Field:
    name: str
    kind: str
    position: int


@dataclass(frozen=True)
class _Literal:
    value: Any
    kind: str  # int, float, string, bool
    position: int


_PRECEDENCE = {"or": 1, "and": 2, "not": 3}
_COMPARISONS = {"==": Cmp.EQ, "!=": Cmp.NE, "<": Cmp.LT, "<=": Cmp.LE, ">": Cmp.GT, ">=": Cmp.GE}
_MIRRORED = {Cmp.EQ: Cmp.EQ, Cmp.NE: Cmp.NE, Cmp.LT: Cmp.GT, Cmp.LE: Cmp.GE, Cmp.GT: Cmp.LT, Cmp.GE: Cmp.LE}
_STRING_TESTS = {Cmp.EQ: operator.eq, Cmp.NE: operator.ne, Cmp.LT: operator.lt, Cmp.LE: operator.le,
                 Cmp.GT: operator.gt, Cmp.GE: operator.ge}


class _Parser:
    """Operator precedence without recursion (shunting-yard), Milvus Lite's precedence:
    or < and < not < a comparison, ``in`` or ``like``; emits the postfix program as it goes."""

    def __init__(self, tokens: list[_Token], expression: str, columns: Columns):
        self.tokens, self.expression, self.columns = tokens, expression, columns
        self.at = 0
        self.ops: list[tuple[int, int, int, int, int]] = []
        self.ints: list[int] = []
        self.floats: list[float] = []
        self.tables: list[np.ndarray] = []
        self.table_size = 0
        self.height = self.depth = 0

    def parse(self) -> FilterProgram:
        pending: list[_Token] = []  # operators and '(' not yet emitted
        open_parens = 0
        expect_condition = True
        while True:
            if expect_condition:
                token = self._peek()
                if token.kind in ("not", "("):
                    self.at += 1
                    pending.append(token)
                    open_parens += token.kind == "("
                    if open_parens > MAX_NESTING:
                        self._fail(f"parentheses nested deeper than {MAX_NESTING}", token.position)
                else:
                    self._condition()
                    expect_condition = False
                continue
            token = self._next()
            if token.kind in ("and", "or"):
                while pending and pending[-1].kind != "(" and _PRECEDENCE[pending[-1].kind] >= _PRECEDENCE[token.kind]:
                    self._combine(pending.pop())
                pending.append(token)
                expect_condition = True
            elif token.kind == ")":
                while pending and pending[-1].kind != "(":
                    self._combine(pending.pop())
                if not pending:
                    self._fail("')' without a matching '('", token.position)
                pending.pop()
                open_parens -= 1
                if self._operator_follows():
                    raise Unsupported("comparing a parenthesised expression")
            elif token.kind == "end":
                while pending:
                    entry = pending.pop()
                    if entry.kind == "(":
                        self._fail("'(' is never closed", entry.position)
                    self._combine(entry)
                break
            else:
                self._fail(f"expected 'and', 'or', ')' or the end, got {token.text!r}", token.position)
        ops = np.array(self.ops, dtype=np.int64).reshape(-1, 5)
        tables = np.concatenate(self.tables) if self.tables else np.zeros(0, dtype=bool)
        return FilterProgram(ops, np.array(self.ints, dtype=np.int64), np.array(self.floats, dtype=np.float64),
                             tables, self.depth)

    # -- conditions

    def _condition(self) -> None:
        """One comparison, membership, like, bare bool field or bool literal."""
        left = self._operand()
        token = self._peek()
        if token.kind in _COMPARISONS:
            self.at += 1
            right = self._operand()
            if self._peek().kind in _COMPARISONS:
                raise Unsupported("chained comparisons (Milvus reads 1 < x < 5 as a range, Milvus Lite refuses it)")
            self._comparison(left, _COMPARISONS[token.kind], right, token)
        elif token.kind == "in" or (token.kind == "not" and self.tokens[self.at + 1].kind == "in"):
            self.at += 1 if token.kind == "in" else 2
            self._membership(self._field_of(left, token, "in"), self._list(), negate=token.kind == "not")
        elif token.kind == "like":
            self.at += 1
            pattern = self._next()
            if pattern.kind != "string":
                self._fail("like needs a string pattern", pattern.position)
            field = self._field_of(left, token, "like")
            if field.kind != "varchar":
                self._fail(f"like needs a varchar field; {field.name!r} is {field.kind}", token.position)
            matches = _like(pattern.value)
            self._lookup(field, [matches(string) is not None for string in self.columns.strings(field.name)])
        elif isinstance(left, _Literal) and left.kind == "bool":
            self._push(Op.CONST, 0, int(left.value))
        elif isinstance(left, _Field) and left.kind == "bool":
            self.ints.append(1)
            self._push(Op.INT_CMP, self.columns.slot(left.name), Cmp.EQ, len(self.ints) - 1)
        elif token.kind == ")":
            raise Unsupported("a parenthesised value, as in (x) > 1")
        else:
            what = f"field {left.name!r} ({left.kind})" if isinstance(left, _Field) else f"the {left.kind} literal"
            self._fail(f"{what} is not a condition; compare it with a value", left.position)

    def _operand(self) -> _Field | _Literal:
        token = self._next()
        sign = 1
        while token.kind == "-":
            sign, token = -sign, self._next()
        if sign == -1 and token.kind not in ("int", "float"):
            raise Unsupported("arithmetic negation")
        if token.kind == "int":
            value = sign * token.value
            if not INT64[0] <= value <= INT64[1]:
                self._fail(f"integer literal {value} is outside int64", token.position)
            return _Literal(value, "int", token.position)
        if token.kind in ("float", "string", "bool"):
            return _Literal(sign * token.value if token.kind == "float" else token.value, token.kind, token.position)
        if token.kind == "name":
            if self._peek().kind in ("(", "["):
                raise Unsupported(f"{token.text}{self._peek().text}...: functions and JSON or array access")
            kind = self.columns.field_types.get(token.text)
            if kind is None:
                self._fail(f"unknown field {token.text!r}; fields are {sorted(self.columns.field_types)}", token.position)
            if kind == "json":
                raise Unsupported(f"the json field {token.text!r}")
            return _Field(token.text, kind, token.position)
        if token.kind == "(":
            raise Unsupported("a parenthesised value")
        self._fail(f"expected a field or a value, got {token.text or 'the end'!r}", token.position)

    def _list(self) -> list[_Literal]:
        opening = self._next()
        if opening.kind != "[":
            self._fail(f"expected '[' after 'in', got {opening.text or 'the end'!r}", opening.position)
        values: list[_Literal] = []
        while self._peek().kind != "]":
            value = self._operand()
            if not isinstance(value, _Literal):
                self._fail("list elements must be literals", value.position)
            values.append(value)
            separator = self._peek()
            if separator.kind == ",":
                self.at += 1
            elif separator.kind != "]":
                self._fail(f"expected ',' or ']' in the list, got {separator.text or 'the end'!r}", separator.position)
        self.at += 1
        return values

    def _comparison(self, left, cmp: Cmp, right, token: _Token) -> None:
        if isinstance(left, _Literal) and isinstance(right, _Field):
            left, right, cmp = right, left, _MIRRORED[cmp]
        if not (isinstance(left, _Field) and isinstance(right, _Literal)):
            raise Unsupported("comparisons between two fields or two literals")
        field, value, slot = left, right, self.columns.slot(left.name)
        if field.kind == "varchar" and value.kind == "string":
            test = _STRING_TESTS[cmp]
            self._lookup(field, [test(string, value.value) for string in self.columns.strings(field.name)])
        elif (field.kind, value.kind) in (("bool", "bool"), ("int64", "int")):
            self.ints.append(int(value.value))
            self._push(Op.INT_CMP, slot, cmp, len(self.ints) - 1)
        elif field.kind in ("int64", "double") and value.kind in ("int", "float"):
            self.floats.append(float(value.value))
            self._push(Op.INT_CMP_FLOAT if field.kind == "int64" else Op.FLOAT_CMP, slot, cmp, len(self.floats) - 1)
        else:
            self._fail(f"cannot compare {field.kind} field {field.name!r} with a {value.kind}", token.position)

    def _membership(self, field: _Field, values: list[_Literal], negate: bool) -> None:
        kinds = {value.kind for value in values}
        if len(kinds) > 1 and not kinds <= {"int", "float"}:
            self._fail(f"list elements must be of one type, got {sorted(kinds)}", values[0].position)
        if not kinds <= _LITERALS_FOR[field.kind]:
            self._fail(f"a list of {kinds.pop()} values cannot match {field.kind} field {field.name!r}",
                       values[0].position)
        slot = self.columns.slot(field.name)
        if not values:
            self._push(Op.CONST, 0, int(negate))  # Milvus Lite: nothing is in [], nulls included
            return
        if field.kind == "varchar":
            wanted = {value.value for value in values}
            self._lookup(field, [string in wanted for string in self.columns.strings(field.name)])
        elif field.kind == "double" or "float" in kinds:
            members = sorted({float(value.value) for value in values})
            self._push(Op.FLOAT_IN if field.kind == "double" else Op.INT_IN_FLOAT, slot, 0, len(self.floats), len(members))
            self.floats.extend(members)
        else:
            members = sorted({int(value.value) for value in values})
            self._push(Op.INT_IN, slot, 0, len(self.ints), len(members))
            self.ints.extend(members)
        self._emit(Op.DEFINITE)
        if negate:
            self._emit(Op.NOT)

    # -- emitting

    def _lookup(self, field: _Field, answers: list[bool]) -> None:
        self._push(Op.LOOKUP, self.columns.slot(field.name), 0, self.table_size, len(answers))
        self.tables.append(np.array(answers, dtype=bool))
        self.table_size += len(answers)

    def _push(self, code: Op, column: int, cmp: int, start: int = 0, count: int = 1) -> None:
        self.ops.append((code, column, cmp, start, count))
        self.height += 1
        self.depth = max(self.depth, self.height)

    def _emit(self, code: Op) -> None:
        self.ops.append((code, 0, 0, 0, 0))

    def _combine(self, operator: _Token) -> None:
        if operator.kind == "not":
            self._emit(Op.NOT)
        else:
            self._emit(Op.AND if operator.kind == "and" else Op.OR)
            self.height -= 1

    # -- tokens

    def _next(self) -> _Token:
        token = self.tokens[self.at]
        self.at += token.kind != "end"
        return token

    def _peek(self) -> _Token:
        return self.tokens[self.at]

    def _operator_follows(self) -> bool:
        """Whether the next tokens continue a condition: a comparison, like, in or not in."""
        token = self._peek()
        return token.kind in (*_COMPARISONS, "in", "like") or (
            token.kind == "not" and self.tokens[self.at + 1].kind == "in"
        )

    def _field_of(self, operand, token: _Token, operator: str) -> _Field:
        if not isinstance(operand, _Field):
            self._fail(f"the left side of {operator!r} must be a field", token.position)
        return operand

    def _fail(self, message: str, position: int):
        raise FilterError(message, self.expression, position)


_LITERALS_FOR = {"int64": {"int", "float"}, "double": {"int", "float"}, "varchar": {"string"}, "bool": {"bool"}}


def _like(pattern: str) -> Callable[[str], re.Match | None]:
    """SQL LIKE as Milvus Lite (Arrow) reads it: % any run, _ any one character (newlines
    included), backslash escapes the next character, and a trailing backslash is dropped."""
    parts, at = [], 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            parts.append(re.escape(pattern[at + 1 : at + 2]))
            at += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        at += 1
    return re.compile("".join(parts), re.DOTALL).fullmatch
