"""What a collection needs of a Milvus server's version, checked before the collection is made there.

A rayprism collection may use BM25 (a Milvus function filling a sparse vector field: Milvus 2.5)
and, for the binary tier, a second vector field beside ``dense`` (Milvus 2.4). An older server
refuses such a schema with an error about fields it does not know, or worse accepts parts of it;
rayprism refuses first, naming the server's version and what to change. Milvus Lite 3 has them all.
"""

from __future__ import annotations

import re

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import InvalidInputError

Version = tuple[int, int]

NEEDS: dict[str, tuple[Version, str]] = {
    "bm25": ((2, 5), "BM25 and sparse vectors need Milvus >= 2.5; set bm25: false for dense search only"),
    "compression": ((2, 4), "the binary tier keeps its codes in a second vector field, which needs Milvus >= 2.4;"
                            " leave compression out"),
}
"""Config key → (the first Milvus version that has what it needs, the message's advice)."""
NULLS_SINCE: Version = (2, 5)
"""Before it a server stores no nulls: a document must give every metadata field a value."""


def parse_version(text: str) -> Version | None:
    """``v2.3.5`` or ``2.5.0-rc1`` → (2, 3) or (2, 5); None for what is not a version (a build's own name)."""
    found = re.match(r"v?(\d+)\.(\d+)", text.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def check_server_supports(config: CollectionConfig, server_version: str) -> None:
    """Raise, naming the server's version, if the collection needs more than that server has.

    A version that cannot be read is let through: the server then answers for itself.
    """
    version = parse_version(server_version)
    if version is None:
        return
    used = {"bm25": config.bm25, "compression": config.compression is not None}
    for key, (since, advice) in NEEDS.items():
        if used[key] and version < since:
            raise InvalidInputError(
                f"collection {config.name!r}: the Milvus server is version {server_version}; {advice}", param=key)


def check_rows_fit(rows: list[dict], fields: list[str], server_version: str) -> None:
    """Raise, naming the first row and field, if a row leaves a metadata field empty on a server
    that stores no nulls (it would refuse the whole batch with a message about row counts)."""
    version = parse_version(server_version)
    if version is None or version >= NULLS_SINCE:
        return
    for index, row in enumerate(rows):
        for field in fields:
            if row.get(field) is None:
                raise InvalidInputError(
                    f"documents[{index}].{field}: the Milvus server is version {server_version}, which stores no"
                    f" nulls (Milvus >= 2.5 does); give every document a value for {field!r}",
                    param=f"documents[{index}].{field}")
