"""The audit trail: one JSON line per change (collections, documents, aliases, re-embedding) and per key refused.

The record is formatted here and only here (:func:`audit_record`), so every kind of event reads the same way.
Each record goes to Serve's logger (the replica's log file, with the request's id), flushed at once (Serve
buffers a replica's records until an ERROR arrives, and a record must not wait on one), and to the audit file
(``server.audit_log``) through :class:`AuditFile`.

Several replica processes append to the one file. Each line is one ``write()`` on an ``O_APPEND`` descriptor,
made while holding an exclusive ``fcntl`` lock on ``<file>.lock``; the same lock covers rotation (the size check,
the renames ``audit.jsonl`` → ``.1`` → ``.2`` …, and every process reopening the new file when it finds its
descriptor no longer names the path), so lines never interleave and none lands in a file being renamed.
"""

from __future__ import annotations

import fcntl
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import orjson

from rayprism.platform.errors import ConfigError

service_log = logging.getLogger("ray.serve")

UNKNOWN_KEY = "unknown"
"""The key name recorded when the request's key is none of the service's."""
NO_KEY = "-"
"""The key name recorded when the service takes no keys."""


def audit_record(*, key: str, method: str, route: str, path: str, target: str | None, outcome: str,
                 request_id: str, **details: object) -> str:
    """One event as a JSON line: when, which key (its name, never the key), the request, what it was about,
    what came of it, and the request's id (also in the response's ``X-Request-Id``)."""
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "key": key,
              "method": method, "route": route, "path": path, "target": target, **details, "outcome": outcome,
              "request_id": request_id}
    return orjson.dumps(record).decode()


class AuditFile:
    """Appends lines to one file shared by processes, rotated at ``max_bytes`` keeping ``backups`` old files."""

    def __init__(self, path: str | Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_bytes = max_bytes
        self._backups = backups
        self._lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, line: str) -> None:
        data = (line + "\n").encode()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            try:
                current = os.stat(self.path)
            except FileNotFoundError:  # rotated with no backups kept, or removed by hand
                current = None
            mine = os.fstat(self._fd)
            if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                os.close(self._fd)  # another process rotated it: append to the new file
                self._fd = self._open()
                current = os.fstat(self._fd)
            if current.st_size and current.st_size + len(data) > self._max_bytes:
                self._rotate()
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _rotate(self) -> None:
        """Shift ``.1``… up by one (the oldest falls off), the current file to ``.1``, and start a new one."""
        for number in range(self._backups - 1, 0, -1):
            older = Path(f"{self.path}.{number}")
            if older.exists():
                older.replace(f"{self.path}.{number + 1}")
        if self._backups:
            self.path.replace(f"{self.path}.1")
        else:
            self.path.unlink()
        os.close(self._fd)
        self._fd = self._open()

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock)


class AuditTrail:
    """Where records go: the log always, the audit file when one is configured."""

    def __init__(self, file: AuditFile | None = None):
        self._file = file

    @classmethod
    def of(cls, path: str | None, max_bytes: int, backups: int) -> AuditTrail:
        """``server.audit_log`` and its rotation settings (a path that cannot be opened is a config error)."""
        if path is None:
            return cls()
        try:
            return cls(AuditFile(path, max_bytes, backups))
        except OSError as error:
            raise ConfigError(f"server.audit_log {path!r} cannot be opened for appending: {error.strerror}") from error

    def write(self, record: str, level: int = logging.WARNING) -> None:
        service_log.log(level, record)
        for handler in service_log.handlers:
            handler.flush()
        if self._file is not None:
            self._file.write(record)
