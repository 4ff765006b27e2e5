"""A job's progress on disk, so an interrupted job resumes and a finished one does no work.

Layout of the state directory (the parquet directory when there is one)::

    _job.json              what this directory holds results of (refused if the job changed)
    _done/<unit>.json      one per finished unit: rows written, rows rejected, the Ray node that did it,
                           and, when the worker wrote into a Milvus server itself, its pid and write timestamp
    _errors/<unit>.jsonl   rejected rows of that unit, if it had any: file, row, id, reason
    _int8_ranges.json      per-dimension ranges of the int8 codec
    _errors.jsonl          all rejected rows, merged at the end of a run (only if there are any)

Every name starts with ``_``, which dataset readers skip (``pyarrow.parquet.read_table(dir)``,
Spark, DuckDB): the parquet directory stays a dataset.

Every file is written to a temporary name and renamed into place, so a crash
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from rayprism.jobs.records import ServerWrite
from rayprism.platform.errors import ConfigError
from rayprism.platform.files import write_atomically


class JobState:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.int8_ranges_path = self.directory / "_int8_ranges.json"
        self.errors_path = self.directory / "_errors.jsonl"

    def claim(self, fingerprint: dict) -> None:
        """Record which job this directory belongs to; a different job's progress is an error."""
        path = self.directory / "_job.json"
        if path.exists():
            recorded = json.loads(path.read_text())
            if recorded != fingerprint:
                changed = sorted(key for key in fingerprint.keys() | recorded.keys()
                                 if fingerprint.get(key) != recorded.get(key))
                raise ConfigError(
                    f"{self.directory} holds progress of a different job (changed: {', '.join(changed)}); "
                    "remove it or write to another output"
                )
            return
        write_atomically(path, json.dumps(fingerprint, indent=2, sort_keys=True).encode())

    def _marker(self, unit_id: str) -> Path:
        return self.directory / "_done" / f"{unit_id}.json"

    def is_done(self, unit_id: str) -> bool:
        return self._marker(unit_id).exists()

    def mark_done(self, unit_id: str, rows: int, errors: list[dict], node: str = "",
                  writer: ServerWrite | None = None) -> None:
        """Errors first, then the marker: a unit counts as done only with its errors recorded. ``node``
        (the Ray node id) tells, on a cluster, which machine wrote the unit; ``writer``, which process wrote
        its rows into a Milvus server, and when."""
        if errors:
            lines = "".join(json.dumps(error, ensure_ascii=False) + "\n" for error in errors)
            write_atomically(self.directory / "_errors" / f"{unit_id}.jsonl", lines.encode())
        record = {"rows": rows, "errors": len(errors), "node": node}
        if writer is not None:
            record["writer"] = asdict(writer)
        write_atomically(self._marker(unit_id), json.dumps(record).encode())

    def last_server_write(self) -> int:
        """The newest server timestamp among the finished units' writes (0: none was written by a worker)."""
        records = (json.loads(marker.read_text()) for marker in (self.directory / "_done").glob("*.json"))
        return max((record["writer"]["timestamp"] for record in records if "writer" in record), default=0)

    def totals(self, unit_ids: Iterable[str] | None = None) -> tuple[int, int]:
        """(rows written, rows rejected) over the finished units among ``unit_ids``; by default over
        every finished unit, this run's and earlier ones."""
        markers = (self.directory / "_done").glob("*.json") if unit_ids is None else map(self._marker, unit_ids)
        rows = errors = 0
        for marker in markers:
            if marker.exists():
                record = json.loads(marker.read_text())
                rows += record["rows"]
                errors += record["errors"]
        return rows, errors

    def merge_errors(self) -> Path | None:
        parts = sorted((self.directory / "_errors").glob("*.jsonl"))
        merged = b"".join(part.read_bytes() for part in parts)
        if not merged:
            self.errors_path.unlink(missing_ok=True)
            return None
        write_atomically(self.errors_path, merged)
        return self.errors_path
