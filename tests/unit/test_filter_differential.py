"""Differential test: a few hundred generated filters over the Debian sample, each evaluated
by the filter compiler and by Milvus Lite itself on a collection with the same rows; the
matching ids must be identical, and an expression the compiler calls malformed must be one
Milvus Lite refuses too."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rayprism.platform.store.filter_compiler import Columns, FilterError, Unsupported, filter_mask

pytestmark = pytest.mark.slow  # starts Milvus Lite

SAMPLE = Path(__file__).parents[1] / "data" / "debian-sample.jsonl"
FIELDS = {
    "package": "varchar", "section": "varchar", "priority": "varchar", "installed_size": "int64",
    "size_mb": "double", "is_library": "bool",
}
# Strings that exercise escapes and like wildcards as data.
ODD_PACKAGES = ['say "hi"', "50%_off", "it's", "back\\slash", "café", "tab\tbed"]


def sample_rows() -> list[dict]:
    rows = []
    for i, line in enumerate(SAMPLE.read_text().splitlines()):
        record = json.loads(line)
        row = {"id": i, **{field: record[field] for field in ("package", "section", "priority", "installed_size")}}
        row["size_mb"] = record["installed_size"] / 1024
        row["is_library"] = record["section"] in ("libs", "libdevel")
        for field, every in (("section", 11), ("installed_size", 13), ("size_mb", 7), ("is_library", 5), ("package", 17)):
            if i % every == 3:
                row[field] = None
        rows.append(row)
    for package in ODD_PACKAGES:
        rows.append({"id": len(rows), "package": package, "section": "misc", "priority": "optional",
                     "installed_size": len(package), "size_mb": 0.5, "is_library": False})
    return rows


class Generator:
    """Random filters built from the sample's own values, in the spellings users write."""

    def __init__(self, rows: list[dict], seed: int):
        self.random = random.Random(seed)
        self.values = {field: sorted({row[field] for row in rows if row[field] is not None}) for field in FIELDS}

    def expression(self, depth: int = 0) -> str:
        draw = self.random.random()
        if depth < 3 and draw < 0.35:
            joiner = self.random.choice([" and ", " or ", " && ", " || ", " AND ", " OR "])
            return joiner.join(self.expression(depth + 1) for _ in range(self.random.randint(2, 3)))
        if depth < 3 and draw < 0.45:
            return f"{self.random.choice(['not ', '!', 'NOT '])}({self.expression(depth + 1)})"
        if depth < 3 and draw < 0.55:
            return f"({self.expression(depth + 1)})"
        if draw < 0.6:
            return f"not {self.condition()}"  # Milvus Lite: not (condition)
        return self.condition()

    def condition(self) -> str:
        field = self.random.choice(list(FIELDS))
        kind = FIELDS[field]
        if kind == "varchar":
            return self.random.choice([self.string_comparison, self.like, self.membership])(field)
        if kind == "bool":
            if self.random.random() < 0.05:
                return self.random.choice(["true", "false"])
            return self.random.choice([field, f"{field} == true", f"{field} != false", f"false == {field}",
                                       f"{field} in [true]", f"{field} not in [false]"])
        if self.random.random() < 0.2:
            return self.membership(field)
        operator = self.random.choice(["==", "!=", "<", "<=", ">", ">="])
        value = self.number(field)
        return f"{value} {operator} {field}" if self.random.random() < 0.2 else f"{field} {operator} {value}"

    def number(self, field: str) -> str:
        value = self.random.choice(self.values[field])
        form = self.random.random()
        if FIELDS[field] == "int64":
            return str(value + 0.5) if form < 0.2 else str(-value) if form < 0.25 else str(value)
        return repr(round(value, 2)) if form < 0.5 else str(int(value))

    def string_comparison(self, field: str) -> str:
        value = self.random.choice(self.values[field])
        if self.random.random() < 0.3:
            value = value[: self.random.randint(0, len(value))]
        operator = self.random.choice(["==", "!=", "<", "<=", ">", ">="])
        return f"{quote(value)} {operator} {field}" if self.random.random() < 0.2 else f"{field} {operator} {quote(value)}"

    def like(self, field: str) -> str:
        value = self.random.choice(self.values[field])
        cut = self.random.randint(0, len(value))
        shape = self.random.choice(["prefix", "suffix", "infix", "exact", "underscore"])
        pattern = {
            "prefix": escape_like(value[:cut]) + "%",
            "suffix": "%" + escape_like(value[cut:]),
            "infix": "%" + escape_like(value[cut // 2 : cut]) + "%",
            "exact": escape_like(value),
            "underscore": escape_like(value[:cut]) + "_" + escape_like(value[cut + 1 :]),
        }[shape]
        return f"{field} like {quote(pattern)}"

    def membership(self, field: str) -> str:
        count = self.random.randint(0, 4)
        if FIELDS[field] == "varchar":
            items = [quote(self.random.choice(self.values[field])) for _ in range(count)]
        else:
            items = [self.number(field) for _ in range(count)]
        return f"{field} {self.random.choice(['in', 'not in', 'IN', 'NOT IN'])} [{', '.join(items)}]"


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("\t", "\\t")
    if "'" in value and '"' not in value:
        return '"' + escaped + '"'
    return "'" + escaped.replace("'", "\\'") + "'"


def escape_like(value: str) -> str:
    return "".join("\\" + char if char in "%_\\" else char for char in value)


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(tmp_path_factory.mktemp("filters") / "x.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    milvus_types = {"varchar": DataType.VARCHAR, "int64": DataType.INT64, "double": DataType.DOUBLE, "bool": DataType.BOOL}
    for field, kind in FIELDS.items():
        extra = {"max_length": 512} if kind == "varchar" else {}
        schema.add_field(field, milvus_types[kind], nullable=True, **extra)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection("debian", schema=schema, index_params=index)
    rows = sample_rows()
    client.insert("debian", [{**row, "vector": [0.0, 0.0]} for row in rows])
    yield client, rows
    client.close()


def lite_ids(client, expression: str) -> list[int] | None:
    """The matching ids, or None where Milvus Lite refuses the expression."""
    from pymilvus.exceptions import MilvusException

    try:
        return sorted(hit["id"] for hit in client.query("debian", filter=expression, output_fields=["id"], limit=1000))
    except MilvusException:
        return None


def test_compiled_filters_match_milvus_lite(lite):
    client, rows = lite
    columns = Columns(FIELDS)
    columns.write([row["id"] for row in rows], rows)
    generator = Generator(rows, seed=20240611)
    expressions = [generator.expression() for _ in range(400)]
    compiled = unsupported = informative = 0
    mismatches = []
    for expression in expressions:
        expected = lite_ids(client, expression)
        try:
            ours = np.flatnonzero(filter_mask(expression, columns)).tolist()
        except Unsupported:
            unsupported += 1
            continue
        except FilterError:
            ours = None
        compiled += ours is not None
        informative += ours is not None and 0 < len(ours) < len(rows)
        if ours != expected:
            mismatches.append((expression, ours, expected))
    assert not mismatches, f"{len(mismatches)} of {len(expressions)} differ, first: {mismatches[:3]}"
    assert compiled >= 380 and unsupported == 0
    assert informative >= 200  # neither no row nor every row: the comparison has something to find
