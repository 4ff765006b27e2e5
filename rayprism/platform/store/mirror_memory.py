"""What an in-memory mirror holds and costs, as its collection's description (``GET /v1/collections/{name}``)
reports it: the body's one definition, apart from the mirror so the HTTP schema need not import its routes."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, with_config
from typing_extensions import NotRequired, TypedDict


@with_config(ConfigDict(use_attribute_docstrings=True))
class DenseTierMemory(TypedDict):
    kind: Literal["float32", "binary", "int8"]
    bytes_per_document: int
    """What each document's dense vector costs in memory (float vectors of a compressed tier stay in Milvus)."""


@with_config(ConfigDict(use_attribute_docstrings=True))
class TokenMemory(TypedDict):
    kind: Literal["float32"]
    bytes_per_document: int
    """What a multi-vector document's token vectors cost in memory, on average."""


@with_config(ConfigDict(use_attribute_docstrings=True))
class MirrorMemory(TypedDict):
    """A mirror's rows and what its routes cost in memory."""

    rows: int
    dense: DenseTierMemory | None
    tokens: NotRequired[TokenMemory]
    """A multi-vector collection's token vectors, kept for the MaxSim rerank."""
