"""What a collection looks like in Milvus, built from config and read back from the store.

A rayprism collection has a primary key ``id``, a text field, a ``dense`` float
vector from the collection's model, optionally a ``sparse`` vector filled by
Milvus's BM25 function from the text, and typed nullable metadata fields. The
config it was made from rides along as a collection property, so a collection
created at run time is fully known after a restart; search defaults applied to
it later ride in a property of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pymilvus import DataType, Function, FunctionType, MilvusClient

from rayprism.platform.config import (
    BITS_FIELD,
    DENSE_FIELD,
    DOCUMENT_HASH_FIELD,
    DOCUMENT_ID_FIELD,
    PIECE_COUNT_FIELD,
    PIECE_FIELDS,
    PIECE_INDEX_FIELD,
    PIECE_START_FIELD,
    SPARSE_FIELD,
    CollectionConfig,
    CompressionConfig,
    SearchDefaults,
)
from rayprism.platform.store.vocabulary import ID_MAX_BYTES

CONFIG_PROPERTY = "rayprism.config"
SEARCH_DEFAULTS_PROPERTY = "rayprism.search_defaults"
"""The search defaults applied to a live collection (JSON; empty or absent: none applied). Apart from the
config it was made from, which a declared collection takes from serve.yaml instead."""
VARCHAR_MAX_BYTES = 65535

FIELD_TYPES = {
    "varchar": DataType.VARCHAR,
    "int64": DataType.INT64,
    "double": DataType.DOUBLE,
    "bool": DataType.BOOL,
    "json": DataType.JSON,
}
_TYPE_NAMES = {int(data_type): name for name, data_type in FIELD_TYPES.items()}


@dataclass(frozen=True)
class Layout:
    """The parts of a collection's schema that decide whether it matches a config."""

    id_type: str
    text_field: str
    dimensions: int
    bm25: bool
    metric: str
    index_type: str
    fields: dict[str, str]
    model: str | None
    compression: dict | None = None
    """The collection's ``compression`` block (type, rescore_multiplier), None for float vectors."""
    int8_ranges: list | None = None
    """An int8 tier's buckets when its config gives them (a restored backup's); not part of the match with a
    declared config, which leaves them to calibration."""
    multivector: dict | None = None
    """A multi-vector collection's ``multivector.fde`` options (its dense field holds their encodings)."""
    chunking: dict | None = None
    """A chunked collection's ``chunking`` block: its rows are pieces (:mod:`~rayprism.platform.store.pieces`)."""

    @classmethod
    def from_config(cls, config: CollectionConfig, dimensions: int) -> Layout:
        return cls(
            id_type=config.id_type,
            text_field=config.text_field,
            dimensions=dimensions,
            bm25=config.bm25,
            metric=config.index.metric,
            index_type=config.index.type,
            fields=dict(config.fields),
            model=config.model,
            compression=_compared(config.compression),
            int8_ranges=config.compression.int8_ranges if config.compression else None,
            multivector=config.multivector.fde.model_dump() if config.multivector else None,
            chunking=config.chunking.model_dump() if config.chunking else None,
        )

    def differences(self, stored: Layout) -> list[str]:
        """Human-readable lines, one per disagreement: ``what: config <x>, store <y>``."""
        lines = []
        for name in ("model", "id_type", "text_field", "dimensions", "bm25", "metric", "index_type", "compression",
                     "multivector", "chunking"):
            wanted, found = getattr(self, name), getattr(stored, name)
            if name == "model" and found is None:
                continue  # made outside rayprism: any model with the right dimensions fits
            if wanted != found:
                lines.append(f"{name}: config {wanted!r}, store {found!r}")
        for field in sorted(self.fields.keys() | stored.fields.keys()):
            wanted, found = self.fields.get(field), stored.fields.get(field)
            if wanted != found:
                lines.append(f"field {field!r}: config {wanted or 'absent'}, store {found or 'absent'}")
        return lines


def create_collection(client: MilvusClient, config: CollectionConfig, dimensions: int, *, bits_field: bool) -> None:
    """``bits_field``: keep binary codes in a BINARY_VECTOR field (a Milvus server; Lite has none)."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if config.id_type == "varchar" or config.chunking:  # a piece's key is text: "{document id}#{index}"
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_BYTES)
    else:
        schema.add_field("id", DataType.INT64, is_primary=True)
    if config.chunking:
        if config.id_type == "varchar":
            schema.add_field(DOCUMENT_ID_FIELD, DataType.VARCHAR, max_length=ID_MAX_BYTES)
        else:
            schema.add_field(DOCUMENT_ID_FIELD, DataType.INT64)
        for name in (PIECE_INDEX_FIELD, PIECE_COUNT_FIELD, PIECE_START_FIELD):
            schema.add_field(name, DataType.INT64)
        schema.add_field(DOCUMENT_HASH_FIELD, DataType.VARCHAR, max_length=64)
    schema.add_field(config.text_field, DataType.VARCHAR, max_length=VARCHAR_MAX_BYTES, enable_analyzer=config.bm25)
    schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=dimensions)
    for name, kind in config.fields.items():
        extra = {"max_length": VARCHAR_MAX_BYTES} if kind == "varchar" else {}
        schema.add_field(name, FIELD_TYPES[kind], nullable=True, **extra)
    index_params = client.prepare_index_params()
    index_params.add_index(
        DENSE_FIELD, index_type=config.index.type, metric_type=config.index.metric, params=dict(config.index.params)
    )
    if bits_field:
        schema.add_field(BITS_FIELD, DataType.BINARY_VECTOR, dim=dimensions)
        index_params.add_index(BITS_FIELD, index_type="BIN_FLAT", metric_type="HAMMING")
    if config.bm25:
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25", function_type=FunctionType.BM25,
                input_field_names=[config.text_field], output_field_names=[SPARSE_FIELD],
            )
        )
        index_params.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(
        config.name, schema=schema, index_params=index_params,
        properties={CONFIG_PROPERTY: config.model_dump_json(exclude={"uri"})},
    )


def stored_config(description: dict) -> CollectionConfig | None:
    """The config a collection was created from, if rayprism created it."""
    text = (description.get("properties") or {}).get(CONFIG_PROPERTY)
    return CollectionConfig.model_validate(json.loads(text)) if text else None


def applied_search_defaults(description: dict) -> SearchDefaults | None:
    """The search defaults applied to a collection since it was made, if any."""
    text = (description.get("properties") or {}).get(SEARCH_DEFAULTS_PROPERTY)
    return SearchDefaults.model_validate_json(text) if text else None


def read_layout(client: MilvusClient, name: str, description: dict) -> Layout:
    fields = {field["name"]: field for field in description["fields"]}
    primary = next(field for field in description["fields"] if field.get("is_primary"))
    created_from = stored_config(description)
    text_field = created_from.text_field if created_from else _guess_text_field(description)
    chunking = created_from.chunking.model_dump() if created_from and created_from.chunking else None
    hidden = ("id", text_field, DENSE_FIELD, SPARSE_FIELD, BITS_FIELD, *(PIECE_FIELDS if chunking else ()))
    metadata = {
        field_name: _TYPE_NAMES.get(int(field["type"]), f"type {int(field['type'])}")
        for field_name, field in fields.items()
        if field_name not in hidden and not field.get("is_primary")
    }
    if chunking:  # the documents' ids are the doc_id field's; the primary key is a piece's
        primary = fields[DOCUMENT_ID_FIELD]
    index = client.describe_index(name, index_name=DENSE_FIELD) or {}
    return Layout(
        id_type="varchar" if int(primary["type"]) == int(DataType.VARCHAR) else "int64",
        text_field=text_field,
        dimensions=int(fields[DENSE_FIELD]["params"]["dim"]) if DENSE_FIELD in fields else 0,
        bm25=SPARSE_FIELD in fields,
        metric=index.get("metric_type", "?"),
        index_type=index.get("index_type", "?"),
        fields=metadata,
        model=created_from.model if created_from else None,
        compression=_compared(created_from.compression) if created_from else None,
        int8_ranges=created_from.compression.int8_ranges if created_from and created_from.compression else None,
        multivector=created_from.multivector.fde.model_dump() if created_from and created_from.multivector else None,
        chunking=chunking,
    )


def _compared(compression: CompressionConfig | None) -> dict | None:
    """The compression block as a declared config must match it (calibrated ranges are the store's business)."""
    return compression.model_dump(exclude={"int8_ranges"}) if compression else None


def _guess_text_field(description: dict) -> str:
    for function in description.get("functions", []):
        names = function.get("input_field_names")
        if names:
            return (json.loads(names.replace("'", '"')) if isinstance(names, str) else names)[0]
    return "text"
