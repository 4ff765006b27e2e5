"""How a framework's (text, metadata) becomes a collection's document and back: one rule for both
frameworks.

Metadata keys that are fields of the collection are stored as those fields (typed, filterable as
``section == "net"``); the other keys go, as one JSON object, into the collection's ``json`` field
named by ``metadata_field`` (filterable as ``metadata["key"] == 1``). Without such a field an unknown
key is an error that names it: a key is never dropped in silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayprism.integrations._service import Service


@dataclass(frozen=True)
class Layout:
    """A collection's text field, metadata fields and the JSON field that keeps the other metadata."""

    collection: str
    model: str
    text_field: str
    fields: dict[str, str]
    """Field name → type, as ``GET /v1/collections/{name}`` lists them."""
    metadata_field: str | None

    @classmethod
    def open(cls, service: Service, collection: str, metadata_field: str | None, *,
             create: dict[str, Any] | None = None) -> Layout:
        """The layout of ``collection``, which is created when missing if ``create`` is given (the body of
        ``POST /v1/collections`` without ``name``; ``metadata_field`` is added to its fields as json).
        ``metadata_field`` must be one of the collection's json fields."""
        description = service.collection(collection)
        if description is None and create is None:
            raise ValueError(f"collection {collection!r} does not exist; create it (POST /v1/collections), or let "
                             "this class create it")
        if description is None:
            fields = {**create.get("fields", {}), **({metadata_field: "json"} if metadata_field else {})}
            description = service.create_collection({**create, "name": collection, "fields": fields})
        fields = dict(description["fields"])
        if metadata_field is not None and fields.get(metadata_field) != "json":
            raise ValueError(f"metadata_field {metadata_field!r} must be a json field of collection "
                             f"{collection!r}; its fields are {fields}")
        return cls(description["name"], description["model"], description["text_field"], fields, metadata_field)

    def document(self, document_id: str | int, text: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        """The body ``POST .../documents`` takes for one text and its metadata."""
        document: dict[str, Any] = {"id": document_id, self.text_field: text}
        rest: dict[str, Any] = {}
        for key, value in (metadata or {}).items():
            if key in self.fields and key != self.metadata_field:
                document[key] = value
            else:
                rest[key] = value
        if rest and self.metadata_field is None:
            raise ValueError(f"metadata keys {sorted(rest)} are not fields of collection {self.collection!r} "
                             f"(fields: {sorted(self.fields)}); add them as fields, or give metadata_field, a "
                             "json field that keeps the other keys")
        if self.metadata_field is not None:
            document[self.metadata_field] = rest
        return document

    def text_and_metadata(self, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """A stored document's (or a search hit's) text and metadata; fields stored as null are left out."""
        metadata = {key: value for key, value in fields.items()
                    if key in self.fields and key != self.metadata_field and value is not None}
        if self.metadata_field is not None:
            metadata.update(fields.get(self.metadata_field) or {})
        return fields.get(self.text_field, ""), metadata

    def field_expression(self, key: str) -> str:
        """How a filter names metadata ``key``: the field itself, or its path in the JSON field."""
        if key in self.fields or self.metadata_field is None:
            return key
        return f"{self.metadata_field}[{literal(key)}]"


def literal(value: Any) -> str:
    """A filter literal: strings double-quoted with escapes, lists bracketed, numbers and booleans as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    return repr(value)

