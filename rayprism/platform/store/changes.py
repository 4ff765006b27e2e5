"""What a re-embedding needs the store to remember: each job's record, and the ids written meanwhile.

While a collection is re-embedded into a new physical collection, every upsert and delete that
reaches the old one appends the ids it touched to that collection's change log; the job replays
the log (reading each document's current state) until it has caught up, and the alias moves only
when nothing is left unreplayed. The store deployment is the only writer of its collections, so
it is the one place that can keep such a log honestly.

Both live on disk beside a Milvus Lite file (``<store.uri>.reembed/``), so an interrupted job
resumes where it was: records are replaced whole (written to a temporary name, then renamed),
logs are appended to, one JSON list of ids a line. A job's bridge (the linear map from the new
model's space to the old one's that answers searches by the new model until the swap) is kept
beside its record, with the ids of the documents it was fitted on.
"""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

import numpy as np

from rayprism.platform.files import write_atomically
from rayprism.platform.reembed_record import ReembedRecord


class ChangeLogs:
    """One append-only log of written ids per collection that has one open. A position is the number
    of writes recorded: ``since(collection, p)`` gives the ids of the writes after the first ``p``."""

    def __init__(self, directory: Path):
        self._directory = directory / "changes"
        self._lock = threading.Lock()
        self._logs: dict[str, list[list]] = {}
        if self._directory.is_dir():
            for path in self._directory.glob("*.jsonl"):
                lines = path.read_text(encoding="utf-8").splitlines()
                writes = []
                for line in lines:
                    try:
                        writes.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a crash: its write was never answered
                        break
                self._logs[path.stem] = writes

    def _path(self, collection: str) -> Path:
        return self._directory / f"{collection}.jsonl"

    def open(self, collection: str) -> None:
        """Start an empty log for ``collection`` (replacing an earlier one)."""
        with self._lock:
            self._directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(collection), b"")
            self._logs[collection] = []

    def close(self, collection: str) -> None:
        with self._lock:
            self._logs.pop(collection, None)
            self._path(collection).unlink(missing_ok=True)

    def is_open(self, collection: str) -> bool:
        return collection in self._logs

    def record(self, collection: str, ids: list) -> None:
        """Append one write's ids, if ``collection`` has a log."""
        if collection not in self._logs or not ids:
            return
        with self._lock:
            writes = self._logs.get(collection)
            if writes is None:
                return
            with self._path(collection).open("a", encoding="utf-8") as out:
                out.write(json.dumps(list(ids), ensure_ascii=False) + "\n")
            writes.append(list(ids))

    def position(self, collection: str) -> int:
        with self._lock:
            return len(self._logs.get(collection, ()))

    def since(self, collection: str, position: int, limit: int) -> tuple[int, list]:
        """(the position after the writes returned, their ids, each once): at most ``limit`` ids."""
        with self._lock:
            writes = self._logs.get(collection, [])
            ids: dict = {}
            end = position
            while end < len(writes) and (not ids or len(ids) + len(writes[end]) <= limit):
                ids.update(dict.fromkeys(writes[end]))
                end += 1
            return end, list(ids)


JOB_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*-[0-9]+")
"""``<alias>-<n>``: what a job id looks like (and all a path made from one may contain)."""


class JobRecords:
    """Each re-embedding job's record, by job id: a JSON object on disk (its fields by name), typed
    everywhere else."""

    def __init__(self, directory: Path):
        self._directory = directory / "jobs"
        self._lock = threading.Lock()

    def put(self, record: ReembedRecord) -> ReembedRecord:
        text = json.dumps(record.model_dump(mode="json"), indent=1, sort_keys=True)
        with self._lock:
            write_atomically(self._directory / f"{record.id}.json", text.encode())
        return record

    def put_bridge(self, job_id: str, matrix: np.ndarray, fit_ids: list) -> None:
        """The job's bridge matrix (new dimensions × old) and the ids of the documents it was fitted on."""
        out = io.BytesIO()
        np.savez(out, matrix=np.asarray(matrix, dtype=np.float32), fit_ids=np.array(json.dumps(fit_ids)))
        with self._lock:
            write_atomically(self._directory / f"{job_id}.bridge.npz", out.getvalue())

    def bridge(self, job_id: str) -> tuple[np.ndarray, list] | None:
        """(matrix, fit ids) of the job's bridge, or None when it has none (yet)."""
        path = self._directory / f"{job_id}.bridge.npz"
        if not JOB_ID.fullmatch(job_id) or not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            return saved["matrix"], json.loads(str(saved["fit_ids"]))

    @staticmethod
    def _read(path: Path) -> ReembedRecord:
        return ReembedRecord.model_validate_json(path.read_bytes())

    def get(self, job_id: str) -> ReembedRecord | None:
        if not JOB_ID.fullmatch(job_id):
            return None
        path = self._directory / f"{job_id}.json"
        return self._read(path) if path.is_file() else None

    def all(self) -> list[ReembedRecord]:
        """Every job, oldest first."""
        if not self._directory.is_dir():
            return []
        return sorted(map(self._read, self._directory.glob("*.json")), key=lambda record: record.created)
