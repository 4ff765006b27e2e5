"""Audit records: one JSON line per event worth answering for later (today: every key denied a request).

The record is formatted here and only here, so every kind of event reads the same way in the log.
Records go to Serve's logger (the replica's log file, with the request's id) and are flushed at once:
Serve buffers a replica's records until an ERROR arrives, and a denial must not wait on one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson

service_log = logging.getLogger("ray.serve")

UNKNOWN_KEY = "unknown"
"""The key name recorded when the request's key is none of the service's."""


def audit_record(*, key: str, method: str, route: str, path: str, outcome: str, **details: object) -> str:
    """One event as a JSON line: when, which key (its name, never the key), the request, what came of it."""
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "key": key,
              "method": method, "route": route, "path": path, **details, "outcome": outcome}
    return orjson.dumps(record).decode()


def log_audit(record: str, level: int = logging.WARNING) -> None:
    service_log.log(level, record)
    for handler in service_log.handlers:
        handler.flush()
