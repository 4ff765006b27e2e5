"""Evaluate a compiled boolean filter over in-memory columns, in three-valued logic.

A program is postfix: leaves compare one column with constants and push a truth value;
NOT, AND and OR combine the top of the stack. Like SQL and Milvus, a comparison with a
null value is *unknown*, and unknown is carried as two bits per row (definitely true,
definitely false) so that ``not``, ``and`` and ``or`` follow Kleene logic; a row matches
when it ends definitely true. The compiler (``rayprism.platform.store.filter_compiler``)
turns strings into codes and string predicates into lookup tables, so this kernel only
compares integers and floats.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np
from numba import njit, prange


class Op(IntEnum):
    """Opcodes: column 0 of a program's ``ops`` rows (column, cmp, start, count follow)."""

    CONST = 0  # push cmp (1 true, 0 false) for every row, null or not
    INT_CMP = 1  # ints[column] <cmp> int_constants[start]
    INT_CMP_FLOAT = 2  # float(ints[column]) <cmp> float_constants[start]
    FLOAT_CMP = 3  # floats[column] <cmp> float_constants[start]
    INT_IN = 4  # ints[column] in sorted int_constants[start:start + count]
    INT_IN_FLOAT = 5  # float(ints[column]) in sorted float_constants[start:start + count]
    FLOAT_IN = 6  # floats[column] in sorted float_constants[start:start + count]
    LOOKUP = 7  # tables[start + ints[column]] (a string code's precomputed answer; count codes)
    NOT = 8
    AND = 9
    OR = 10
    DEFINITE = 11  # unknown becomes false (Milvus Lite's ``in``: a null is simply not in the list)


class Cmp(IntEnum):
    EQ = 0
    NE = 1
    LT = 2
    LE = 3
    GT = 4
    GE = 5


class FilterProgram(NamedTuple):
    ops: np.ndarray  # int64[n_ops, 5]: opcode, column, cmp, start, count
    int_constants: np.ndarray  # int64
    float_constants: np.ndarray  # float64
    tables: np.ndarray  # bool: the LOOKUP tables back to back
    depth: int  # the stack depth the program reaches


class ColumnArrays(NamedTuple):
    """Row-aligned columns: int64, bool (0/1) and string-code fields in ``ints``, double fields
    in ``floats``, each with a validity row (False where the value is null). ``codes`` is, per
    ``ints`` row, how many string codes exist (0 for other fields): a LOOKUP compiled against
    fewer would read past its table."""

    ints: np.ndarray  # int64[n_int_fields, n] (shape (0, n) without such fields: n is read here)
    int_valid: np.ndarray  # bool[n_int_fields, n]
    floats: np.ndarray  # float64[n_float_fields, n]
    float_valid: np.ndarray  # bool[n_float_fields, n]
    codes: np.ndarray  # int64[n_int_fields]


_CHUNK_ROWS = 4096  # rows evaluated together: each op runs over a chunk that stays in L1/L2


def mask_from_columns(program: FilterProgram, columns: ColumnArrays) -> np.ndarray:
    """bool[n]: the rows for which ``program`` is definitely true."""
    ops = np.asarray(program.ops, dtype=np.int64).reshape(-1, 5)
    for code, column, _, _, count in ops:
        if code == Op.LOOKUP and count != columns.codes[column]:
            raise ValueError(
                f"the program was compiled against {count} strings of column {column}, which now has "
                f"{columns.codes[column]}: compile it again"
            )
    return _evaluate(
        ops, program.int_constants, program.float_constants, program.tables, max(program.depth, 1),
        columns.ints, columns.int_valid, columns.floats, columns.float_valid, columns.ints.shape[1],
    )


@njit(inline="always", cache=True)
def _compare(value, cmp, constant):
    if cmp == Cmp.EQ:
        return value == constant
    if cmp == Cmp.NE:
        return value != constant
    if cmp == Cmp.LT:
        return value < constant
    if cmp == Cmp.LE:
        return value <= constant
    if cmp == Cmp.GT:
        return value > constant
    return value >= constant


@njit(inline="always", cache=True)
def _member(value, sorted_values):
    at = np.searchsorted(sorted_values, value)
    return at < len(sorted_values) and sorted_values[at] == value


@njit(parallel=True, cache=True)
def _evaluate(ops, int_constants, float_constants, tables, depth, ints, int_valid, floats, float_valid, rows):
    out = np.empty(rows, dtype=np.bool_)
    for chunk in prange((rows + _CHUNK_ROWS - 1) // _CHUNK_ROWS):
        first = chunk * _CHUNK_ROWS
        size = min(_CHUNK_ROWS, rows - first)
        true = np.empty((depth, size), dtype=np.bool_)
        false = np.empty((depth, size), dtype=np.bool_)
        top = -1
        for code, column, cmp, start, count in ops:
            if code == Op.NOT:
                for i in range(size):
                    true[top, i], false[top, i] = false[top, i], true[top, i]
            elif code == Op.AND:
                top -= 1
                for i in range(size):
                    true[top, i] &= true[top + 1, i]
                    false[top, i] |= false[top + 1, i]
            elif code == Op.OR:
                top -= 1
                for i in range(size):
                    true[top, i] |= true[top + 1, i]
                    false[top, i] &= false[top + 1, i]
            elif code == Op.DEFINITE:
                for i in range(size):
                    false[top, i] = not true[top, i]
            else:
                top += 1
                _leaf(code, column, cmp, start, count, int_constants, float_constants, tables,
                      ints, int_valid, floats, float_valid, first, true[top], false[top])
        out[first : first + size] = true[0]
    return out


@njit(inline="always", cache=True)
def _leaf(code, column, cmp, start, count, int_constants, float_constants, tables,
          ints, int_valid, floats, float_valid, first, true, false):
    """One leaf over a chunk: true/false where the value is known, both False where it is null."""
    if code == Op.CONST:
        true[:] = cmp == 1
        false[:] = cmp != 1
        return
    floating = code == Op.FLOAT_CMP or code == Op.FLOAT_IN
    for i in range(len(true)):
        row = first + i
        known = float_valid[column, row] if floating else int_valid[column, row]
        if not known:  # a null row's value is never read (its string code may be past every table)
            true[i] = False
            false[i] = False
            continue
        if code == Op.INT_CMP:
            hit = _compare(ints[column, row], cmp, int_constants[start])
        elif code == Op.INT_CMP_FLOAT:
            hit = _compare(np.float64(ints[column, row]), cmp, float_constants[start])
        elif code == Op.FLOAT_CMP:
            hit = _compare(floats[column, row], cmp, float_constants[start])
        elif code == Op.INT_IN:
            hit = _member(ints[column, row], int_constants[start : start + count])
        elif code == Op.INT_IN_FLOAT:
            hit = _member(np.float64(ints[column, row]), float_constants[start : start + count])
        elif code == Op.FLOAT_IN:
            hit = _member(floats[column, row], float_constants[start : start + count])
        else:
            hit = tables[start + ints[column, row]]
        true[i] = hit
        false[i] = not hit
