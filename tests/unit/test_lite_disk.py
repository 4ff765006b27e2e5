"""Bad days for a Milvus Lite store: a path holding something else, a damaged store, a disk that fills up."""

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rayprism.platform.config import CollectionConfig
from rayprism.platform.errors import StoreError, StoreFullError
from rayprism.platform.store.lite_disk import check_lite_store
from rayprism.platform.store.milvus import MilvusStore
from tests.small_disk import grow, small_disk

CONFIG = CollectionConfig(name="docs", bm25=False)
DIMENSIONS = 64


def batch(number: int, size: int = 100) -> list[dict]:
    rng = np.random.default_rng(number)
    return [{"id": f"{number}-{i}", "text": f"document {i} of batch {number} " + "padding " * 250,
             "dense": rng.standard_normal(DIMENSIONS).astype(np.float32)} for i in range(size)]


def fill(store: MilvusStore) -> tuple[int, StoreFullError]:
    """Upsert batches until the store refuses one; (documents acknowledged, the refusal)."""
    acknowledged = 0
    for number in range(10_000):
        try:
            acknowledged += store.upsert("docs", batch(number))
        except StoreFullError as refusal:
            return acknowledged, refusal
    pytest.fail("the disk never filled")


def test_a_file_or_a_folder_of_other_files_is_refused_in_a_sentence(tmp_path):
    foreign_file = tmp_path / "store.db"
    foreign_file.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="is a file, not a Milvus Lite store"):
        MilvusStore(str(foreign_file))
    foreign_folder = tmp_path / "home"
    foreign_folder.mkdir()
    (foreign_folder / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match=r"is a folder of other files \(notes.txt\)"):
        MilvusStore(str(foreign_folder))
    assert sorted(path.name for path in foreign_folder.iterdir()) == ["notes.txt"]  # nothing written into it
    check_lite_store(tmp_path / "missing")  # a new store, and an empty folder, are fine
    (tmp_path / "empty").mkdir()
    check_lite_store(tmp_path / "empty")


@pytest.mark.slow  # starts Milvus Lite
def test_a_damaged_store_is_refused_when_opened_not_at_its_first_request(tmp_path):
    path = tmp_path / "store.db"
    made_elsewhere = (  # by another process, as a service finds it: Lite keeps a store it opened in memory
        "import sys; from tests.unit.test_lite_disk import CONFIG, DIMENSIONS, batch;"
        "from rayprism.platform.store.milvus import MilvusStore;"
        "store = MilvusStore(sys.argv[1]); store.ensure(CONFIG, DIMENSIONS); store.upsert('docs', batch(0)); store.close()")
    subprocess.run([sys.executable, "-c", made_elsewhere, str(path)], check=True, cwd=Path(__file__).parents[2])
    check_lite_store(path)  # what Lite made is recognised as its own
    manifests = list(path.rglob("manifest.json*"))
    assert manifests
    for manifest in manifests:
        manifest.write_text('{"broken')
    with pytest.raises(StoreError, match="cannot open the store"):
        MilvusStore(str(path))


@pytest.mark.slow  # starts Milvus Lite
def test_writes_stop_before_the_disk_is_full_and_every_acknowledged_document_stays_readable():
    with small_disk(12) as disk:
        store = MilvusStore(str(disk / "store.db"), flush_after_s=0.05, min_free_mb=4)
        store.ensure(CONFIG, DIMENSIONS)
        acknowledged, refusal = fill(store)
        assert refusal.http_status == 507 and "below store.min_free_mb 4" in refusal.message
        assert acknowledged > 0
        store.flush("docs")
        assert store.count("docs") == acknowledged
        numbers = acknowledged // 100
        ids = [f"{number}-{i}" for number in range(numbers) for i in (0, 99)]
        assert len(store.get("docs", ids, ["id"])) == len(ids)
        store.close()


@pytest.mark.slow  # starts Milvus Lite
def test_a_disk_that_fills_without_the_margin_keeps_every_acknowledged_document_across_a_restart():
    """With the margin off, Milvus Lite runs into the full disk itself: the write is refused as a 507, and
    the documents acknowledged before are all there once the store reopens on a disk with room."""
    with small_disk(8) as disk:
        uri = str(disk / "store.db")
        store = MilvusStore(uri, flush_after_s=0.05, min_free_mb=0)
        store.ensure(CONFIG, DIMENSIONS)
        acknowledged, refusal = fill(store)
        assert refusal.http_status == 507 and "disk is full" in refusal.message
        grow(disk, 64)
        with contextlib.suppress(StoreError):
            store.close()
        reopened = MilvusStore(uri, flush_after_s=0.05, min_free_mb=0)
        assert reopened.count("docs") >= acknowledged
        numbers = acknowledged // 100
        found = reopened.get("docs", [f"{number}-{i}" for number in range(numbers) for i in range(100)], ["id"])
        assert len(found) == acknowledged
        reopened.close()
