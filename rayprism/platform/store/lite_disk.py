"""A Milvus Lite store on this machine's disk: refusing a path that holds something else, and refusing
writes before the disk is full.

Milvus Lite 3 keeps a store in a folder (its ``collections``, ``databases`` and ``LOCK``). Pointed at a
file, it fails with a message about another process holding the store; pointed at a folder of other
files, it writes its own among them. Both are refused here, in a sentence.

When the disk fills, Lite's flush fails half-way: the rows it was sealing vanish from reads until the
store is reopened (its write-ahead log replays them), and the next writes fail. So writes are refused
while the free space is below a margin, as Elasticsearch's flood-stage watermark does: every write
acknowledged before stays readable, and the service keeps answering reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rayprism.platform.errors import StoreError, StoreFullError

LITE_ENTRIES = frozenset({"collections", "databases", "LOCK"})
"""What a folder Milvus Lite made holds (any one of them is enough to recognise it)."""

DISK_FULL_MESSAGES = ("No space left on device", "disk quota exceeded")
"""How Milvus Lite (an OSError's text) and a Milvus server (its disk quota) say the disk is full."""


def check_lite_store(path: Path) -> None:
    """Raises unless ``path`` is missing, an empty folder, or a folder Milvus Lite made."""
    if path.is_file():
        raise StoreError(
            f"store.uri {str(path)!r} is a file, not a Milvus Lite store: Milvus Lite 3 keeps a store in a folder "
            "(a file there is another program's, or a Milvus Lite 2 .db file, which this version cannot read). "
            "Point store.uri at a new path, or move the file away; `rayprism restore` loads a backup into a new store")
    if path.is_dir():
        entries = {entry.name for entry in path.iterdir()}
        if entries and not entries & LITE_ENTRIES:
            shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
            raise StoreError(
                f"store.uri {str(path)!r} is a folder of other files ({shown}), not a Milvus Lite store: "
                "point store.uri at a new path (Milvus Lite makes the folder) or at a store it made")


def is_disk_full(message: str) -> bool:
    return any(text.lower() in message.lower() for text in DISK_FULL_MESSAGES)


def disk_full_error(where: str) -> StoreFullError:
    return StoreFullError(
        f"the store's disk is full ({where}): this request was not written, and what was written before is kept; "
        "free space on that disk (or grow it), then write again")


class DiskGuard:
    """Refuses writes while the disk holding a Lite store has less than ``min_free_bytes`` free."""

    def __init__(self, path: Path, min_free_bytes: int):
        self._path = path
        self._min_free_bytes = min_free_bytes

    def check(self) -> None:
        if self._min_free_bytes <= 0:
            return
        free = shutil.disk_usage(self._path).free
        if free < self._min_free_bytes:
            raise disk_full_error(f"{free / 2**20:.0f} MB free, below store.min_free_mb "
                                  f"{self._min_free_bytes / 2**20:.0f}")
