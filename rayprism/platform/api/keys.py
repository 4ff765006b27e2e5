"""API keys and their scopes: which key a request presented, and what that key may do.

A key is held as the SHA-256 digest of its text, so a ``sha256`` entry in the config and a plain key are
the same thing here, and a lookup compares every digest in constant time (timing tells nothing about
which key, or how much of one, matched). Scopes (docs/api.md, "API keys and scopes"):

- ``embed``: ``/v1/embeddings`` and ``/v1/rerank``;
- ``read:GLOB``: list, describe, get documents of and search collections or aliases whose name matches
  GLOB (:func:`fnmatch.fnmatchcase`);
- ``write:GLOB``: upsert and delete documents there;
- ``admin``: everything, including creating and dropping collections, aliases, re-embedding, rollback.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Literal

Action = Literal["key", "embed", "read", "write", "admin"]
"""What a request needs: ``key`` is any valid key (``/v1/models``, unknown paths); ``read`` and ``write``
of a name, or ``read`` of no name (a list, answered with what the key may read)."""

ADMIN = "admin"
SCOPE = re.compile(r"embed|admin|(?:read|write):\S+")
SCOPE_RULE = "is not a scope: embed, admin, read:GLOB or write:GLOB (e.g. read:team_a_*)"


def valid_scope(scope: str) -> str:
    if SCOPE.fullmatch(scope) is None:
        raise ValueError(f"{scope!r} {SCOPE_RULE}")
    return scope


def digest_of(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


@dataclass(frozen=True)
class Need:
    """The scope one request needs; ``str()`` is the scope named to a key that lacks it."""

    action: Action
    target: str | None = None
    """The collection or alias name from the path, as the caller wrote it."""

    def __str__(self) -> str:
        if self.action in ("read", "write"):
            return f"{self.action}:{self.target if self.target is not None else 'GLOB'}"
        return self.action


@dataclass(frozen=True)
class ApiKey:
    name: str
    """What logs and error messages show: never the key itself."""
    digest: bytes = field(repr=False)
    scopes: tuple[str, ...]
    secret: str | None = field(default=None, repr=False)
    """The key's text where the service knows it (not for a ``sha256`` entry): what its own calls send."""

    def allows(self, need: Need) -> bool:
        if ADMIN in self.scopes or need.action == "key":
            return True
        if need.action in ("embed", "admin"):
            return need.action in self.scopes
        globs = [scope.split(":", 1)[1] for scope in self.scopes if scope.startswith(need.action + ":")]
        return bool(globs) if need.target is None else any(fnmatchcase(need.target, glob) for glob in globs)

    def may_read(self, name: str) -> bool:
        return self.allows(Need("read", name))


def plain_key(name: str, key: str) -> ApiKey:
    """A key given as a bare string: every scope, as before scopes existed."""
    return ApiKey(name, digest_of(key), (ADMIN,), key)


def find_key(keys: list[ApiKey], presented: bytes) -> ApiKey | None:
    """The key whose digest ``presented`` has, every digest compared (no early exit)."""
    digest = digest_of(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(digest, key.digest) and found is None:
            found = key
    return found
