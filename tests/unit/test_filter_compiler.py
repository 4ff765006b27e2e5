"""The filter compiler on a small table, against predicates written out by hand in Python
(three-valued where a value is null); Milvus Lite itself is the reference in
test_filter_differential.py."""

from __future__ import annotations

import numpy as np
import pytest

from rayprism.numba_kernels import mask_from_columns
from rayprism.platform.store.filter_compiler import Columns, FilterError, Unsupported, compile_filter, filter_mask
from rayprism.platform.store.filters import MAX_NESTING

FIELDS = {"name": "varchar", "size": "int64", "ratio": "double", "flag": "bool", "meta": "json"}
ROWS = [
    {"name": "libfoo", "size": 10, "ratio": 0.5, "flag": True},
    {"name": "libbar-dev", "size": 250, "ratio": 2.0, "flag": False},
    {"name": None, "size": None, "ratio": None, "flag": None},
    {"name": "python3-foo", "size": -3, "ratio": -1.25, "flag": True},
    {"name": "50%_off", "size": 0, "ratio": 0.0, "flag": False},
    {"name": 'say "hi"', "size": 9_007_199_254_740_993, "ratio": 1e300, "flag": None},
    {"name": "Libfoo", "size": 11, "ratio": float("nan"), "flag": True},
    {"name": "", "size": 10, "ratio": 3.5, "flag": False},
]


@pytest.fixture
def columns() -> Columns:
    table = Columns(FIELDS, capacity=2)  # grows while writing
    table.write(range(len(ROWS)), ROWS)
    return table


def matching(predicate) -> list[int]:
    return [i for i, row in enumerate(ROWS) if predicate(row)]


def rows_of(expression: str, columns: Columns) -> list[int]:
    return np.flatnonzero(filter_mask(expression, columns)).tolist()


def known(row, *fields) -> bool:
    return all(row[field] is not None for field in fields)


CASES = [
    ("size > 10", lambda r: known(r, "size") and r["size"] > 10),
    ("10 < size", lambda r: known(r, "size") and r["size"] > 10),
    ("size == 9007199254740993", lambda r: r["size"] == 9_007_199_254_740_993),  # exact beyond 2**53
    ("size != 10", lambda r: known(r, "size") and r["size"] != 10),
    ("size >= 10.5", lambda r: known(r, "size") and r["size"] >= 10.5),
    ("size <= -3", lambda r: known(r, "size") and r["size"] <= -3),
    ("ratio < 1", lambda r: known(r, "ratio") and r["ratio"] < 1),
    ("ratio != 0.5", lambda r: known(r, "ratio") and r["ratio"] != 0.5),  # NaN != 0.5
    ("ratio in [2, 3.5]", lambda r: r["ratio"] in (2.0, 3.5)),
    ("size in [10, 0, 11.0]", lambda r: r["size"] in (10, 0, 11)),
    ("size in [10.5]", lambda r: False),
    ("size not in [10, 250]", lambda r: r["size"] not in (10, 250)),  # Milvus Lite: nulls are not in the list
    ("not (size in [10, 250])", lambda r: r["size"] not in (10, 250)),
    ("not (size == 10)", lambda r: known(r, "size") and r["size"] != 10),
    ("not size == 10", lambda r: known(r, "size") and r["size"] != 10),  # Milvus Lite: not binds looser
    ("size in []", lambda r: False),
    ("size not in []", lambda r: True),
    ("flag", lambda r: r["flag"] is True),
    ("not flag", lambda r: r["flag"] is False),
    ("!flag", lambda r: r["flag"] is False),
    ("flag == false", lambda r: r["flag"] is False),
    ("true == flag", lambda r: r["flag"] is True),
    ("flag > false", lambda r: r["flag"] is True),
    ("flag in [false]", lambda r: r["flag"] is False),
    ("flag not in [false]", lambda r: r["flag"] is not False),
    ("name == 'libfoo'", lambda r: r["name"] == "libfoo"),
    ('name == "say \\"hi\\""', lambda r: r["name"] == 'say "hi"'),
    ('name > "libfoo"', lambda r: known(r, "name") and r["name"] > "libfoo"),
    ('"libfoo" >= name', lambda r: known(r, "name") and r["name"] <= "libfoo"),
    ('name != ""', lambda r: known(r, "name") and r["name"] != ""),
    ('name in ["libfoo", "Libfoo", "nope"]', lambda r: r["name"] in ("libfoo", "Libfoo")),
    ('name not in ["libfoo"]', lambda r: r["name"] != "libfoo"),
    ('name like "lib%"', lambda r: known(r, "name") and r["name"].startswith("lib")),
    ('name like "%foo"', lambda r: known(r, "name") and r["name"].endswith("foo")),
    ('name like "%o-d%"', lambda r: known(r, "name") and "o-d" in r["name"]),
    ('name like "libfoo"', lambda r: r["name"] == "libfoo"),
    ('name like "_ibfoo"', lambda r: r["name"] in ("libfoo", "Libfoo")),
    ('name like "50\\\\%\\\\_off"', lambda r: r["name"] == "50%_off"),  # escaped % and _ are literal
    ('name like "%"', lambda r: known(r, "name")),
    ('not (name like "lib%")', lambda r: known(r, "name") and not r["name"].startswith("lib")),
    ("true", lambda r: True),
    ("false", lambda r: False),
    # three-valued logic: unknown or true is true, unknown and false is false
    ("size > 100 or flag", lambda r: (known(r, "size") and r["size"] > 100) or r["flag"] is True),
    ("not (size > 100 and false)", lambda r: True),
    ("not (size > 100 or false)", lambda r: known(r, "size") and r["size"] <= 100),
    ("size > 0 && flag || name == ''", lambda r: (known(r, "size") and r["size"] > 0 and r["flag"] is True)
     or r["name"] == ""),
    ("size > 0 AND (flag OR name == '')", lambda r: known(r, "size") and r["size"] > 0
     and (r["flag"] is True or r["name"] == "")),
    ("((size > 0)) and not not flag", lambda r: known(r, "size") and r["size"] > 0 and r["flag"] is True),
]


@pytest.mark.parametrize(("expression", "predicate"), CASES, ids=[case[0] for case in CASES])
def test_matches_hand_written_predicates(columns, expression, predicate):
    assert rows_of(expression, columns) == matching(predicate)


def test_long_chains_need_no_recursion(columns):
    chain = " or ".join(f"size == {value}" for value in range(3000))
    assert rows_of(chain, columns) == matching(lambda r: known(r, "size") and 0 <= r["size"] < 3000)
    assert rows_of("not " * 5001 + "flag", columns) == matching(lambda r: r["flag"] is False)
    nested = "(" * MAX_NESTING + "flag" + ")" * MAX_NESTING
    assert rows_of(nested, columns) == matching(lambda r: r["flag"] is True)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("(size > 1", "'(' is never closed (at column 1"),
        ("size > 1)", "')' without a matching '(' (at column 9"),
        ("(" * 2000 + "flag" + ")" * 2000, f"parentheses nested deeper than {MAX_NESTING}"),
        ("size > 9223372036854775808", "integer literal 9223372036854775808 is outside int64"),
        ("size > -9223372036854775809", "integer literal -9223372036854775809 is outside int64"),
        ("sise > 1", "unknown field 'sise'; fields are ['flag', 'meta', 'name', 'ratio', 'size']"),
        ("name == 1", "cannot compare varchar field 'name' with a int"),
        ("flag == 1", "cannot compare bool field 'flag' with a int"),
        ("size in [1, 'a']", "list elements must be of one type"),
        ("name in [1]", "a list of int values cannot match varchar field 'name'"),
        ("size like 'a%'", "like needs a varchar field"),
        ("size", "field 'size' (int64) is not a condition"),
        ("size > 1 and", "expected a field or a value, got 'the end'"),
        ("size = 1", "'=' is not an operator; use '=='"),
        ("name == 'open", "unterminated string literal"),
        ("name == 'open\\", "unterminated string literal"),
        ("size > 1 size < 2", "expected 'and', 'or', ')' or the end, got 'size'"),
    ],
)
def test_malformed_expressions_name_the_problem(columns, expression, message):
    with pytest.raises(FilterError) as error:
        compile_filter(expression, columns)
    assert message in error.value.message
    assert error.value.http_status == 400 and error.value.param == "filter"


@pytest.mark.parametrize(
    "expression",
    [
        "json_contains(meta, 1)", "text_match(name, 'foo')", "size + 1 > 2", "-size > 2", "size is null",
        "name is not null", 'meta["k"] == 1', "meta == 1", "size > ratio", "1 == 1", "$meta['k'] == 1",
        "size == 010", "size == 0x10", "name == 'a\\x41'", "1 < size < 5", "(size) > 1", "size & 1 == 0",
        "name =~ 'a.*'", "exists meta['k']", "café == 1",
    ],
)
def test_outside_the_subset_is_unsupported(columns, expression):
    with pytest.raises(Unsupported):
        compile_filter(expression, columns)


def test_columns_grow_overwrite_and_leave_gaps_null():
    table = Columns({"name": "varchar", "size": "int64"}, capacity=1)
    table.write([0, 3], [{"name": "a", "size": 1}, {"name": "b", "size": 2}])  # rows 1 and 2 stay null
    assert len(table) == 4
    assert rows_of("size > 0", table) == [0, 3]
    assert rows_of("not (size > 0)", table) == []
    table.write([0], [{"name": "c"}])  # an upsert: size becomes null
    assert rows_of("size > 0", table) == [3]
    assert rows_of("name in ['a', 'c']", table) == [0]


def test_take_compacts_rows(columns):
    kept = columns.take([7, 0, 3])
    assert len(kept) == 3
    assert rows_of("size == 10", kept) == [0, 1]
    assert rows_of("name like 'lib%'", kept) == [1]


def test_a_program_is_refused_once_new_strings_arrive(columns):
    program = compile_filter("name == 'newcomer'", columns)
    columns.write([len(ROWS)], [{"name": "newcomer"}])
    with pytest.raises(ValueError, match="compile it again"):
        mask_from_columns(program, columns.arrays())
    assert rows_of("name == 'newcomer'", columns) == [len(ROWS)]


def test_deleted_rows_are_masked_by_the_caller(columns):
    alive = np.ones(len(ROWS), dtype=bool)
    alive[0] = False  # the mirror's alive mask, combined with the filter's
    assert np.flatnonzero(filter_mask("size == 10", columns) & alive).tolist() == [7]


@pytest.mark.parametrize(
    ("record", "message"),
    [({"size": "10"}, "field 'size' is int64, got '10'"), ({"flag": 1}, "field 'flag' is bool, got 1"),
     ({"ratio": True}, "field 'ratio' is double, got True"), ({"size": 2**63}, "field 'size' is int64")],
)
def test_columns_check_value_types(record, message):
    table = Columns(FIELDS)
    with pytest.raises(ValueError, match=message):
        table.write([0], [record])
    assert len(table) == 0


def test_columns_reject_unknown_field_types():
    with pytest.raises(ValueError, match="field types must be"):
        Columns({"vector": "float_vector"})
