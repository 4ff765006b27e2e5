"""The typed Python SDK of the service's HTTP API (``docs/client.md``).

:class:`Client` and :class:`AsyncClient` have a method for every route, answering the shapes the service builds
its bodies with (``rayprism.platform.api.responses``). An error answer is raised as the typed error its status
names (``NotFoundError``, ``OverloadedError``, ...), which is also a :class:`ServiceError`; 429, 502 and 503 are
retried after their ``Retry-After``. The rest is what ``rayprism ingest`` reads and reports.
"""

from rayprism.client._async import AsyncClient
from rayprism.client._calls import Retries
from rayprism.client._connection import DEFAULT_URL
from rayprism.client._errors import ServiceError
from rayprism.client._ingest import FieldMapping, IngestSummary, Rejected, SourceDocument, read_jsonl
from rayprism.client._sync import Client

__all__ = ["AsyncClient", "Client", "DEFAULT_URL", "FieldMapping", "IngestSummary", "Rejected", "Retries",
           "ServiceError", "SourceDocument", "read_jsonl"]
