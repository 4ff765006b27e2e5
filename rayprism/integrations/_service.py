"""Every HTTP call the integrations make, in one place, over :meth:`rayprism.client.Client.request`.

The framework classes never build a request themselves, so moving them onto the typed SDK's
methods is an edit of this module alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from rayprism.client import DEFAULT_URL, Client, ServiceError
from rayprism.platform.models.base import PromptRole, prompt_for_role

SEARCH_PAGE = 1000
"""The most hits one search answers (``k``'s upper bound in the search route)."""


class Service:
    """One service's embeddings, collections and reranker, as the integrations use them."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, client: Client | None = None):
        """``client``: an existing :class:`Client` (its URL and key win); otherwise one for ``url``."""
        self.client = client or Client(url, api_key=api_key)
        self._prompts: dict[str | None, list[str]] = {}

    def prompt_name(self, model: str | None, role: PromptRole) -> str | None:
        """The prompt the service's collections give a ``role`` text with this model (None: the model's
        default prompt, if any), so that vectors made here match those a collection stores and searches with."""
        if model not in self._prompts:
            models = [entry for entry in self.client.request("GET", "/v1/models")["data"]
                      if entry.get("kind", "embedder") == "embedder" and model in (None, entry["id"])]
            if len(models) != 1:
                raise ValueError(f"model {model!r}: the service serves {len(models)} such embedding models; "
                                 "name one of GET /v1/models")
            self._prompts[model] = models[0].get("prompts", [])
        return prompt_for_role(dict.fromkeys(self._prompts[model], ""), role)

    def embed(self, texts: Sequence[str], *, model: str | None, role: PromptRole,
              dimensions: int | None = None) -> list[list[float]]:
        """``POST /v1/embeddings``: one vector per text, in order, with the prompt for ``role``."""
        if not texts:
            return []
        body: dict[str, Any] = {"input": list(texts), "model": model, "dimensions": dimensions,
                                "prompt_name": self.prompt_name(model, role)}
        answer = self.client.request("POST", "/v1/embeddings", _without_none(body))
        return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]

    def collection(self, name: str) -> dict | None:
        """The collection's description, or None when there is none of that name."""
        return self._found(f"/v1/collections/{name}")

    def create_collection(self, config: dict) -> dict:
        """``POST /v1/collections``: created, or the same config found (a different one is a 409)."""
        return self.client.request("POST", "/v1/collections", config)

    def upsert(self, collection: str, documents: list[dict]) -> None:
        if documents:
            self.client.request("POST", f"/v1/collections/{collection}/documents", {"documents": documents})

    def delete(self, collection: str, ids: Sequence[str | int]) -> int:
        """How many of ``ids`` existed (and are gone now)."""
        if not ids:
            return 0
        return self.client.request("DELETE", f"/v1/collections/{collection}/documents", {"ids": list(ids)})["deleted"]

    def document(self, collection: str, document_id: str | int) -> dict | None:
        """The stored document (``id``, the text field, the metadata fields), or None."""
        return self._found(f"/v1/collections/{collection}/documents/{document_id}")

    def search(self, collection: str, query: str | dict, *, k: int, mode: str | None = None,
               filter: str | None = None, **options: Any) -> list[dict]:
        """``POST /v1/collections/{name}/search`` of a text (or ``{"vector": [...]}``): the hits (``id``,
        ``score``, ``fields``), best first."""
        body = _without_none({"query": query, "k": k, "mode": mode, "filter": filter, **options})
        return self.client.request("POST", f"/v1/collections/{collection}/search", body)["results"]

    def _found(self, path: str) -> dict | None:
        """``GET path``'s answer, or None for a 404."""
        try:
            return self.client.request("GET", path)
        except ServiceError as error:
            if error.http_status == 404:
                return None
            raise

    def rerank(self, query: str, documents: Sequence[str], *, model: str | None, top_n: int | None) -> list[dict]:
        """``POST /v1/rerank``: ``index`` and ``relevance_score`` per document kept, best first."""
        if not documents:
            return []
        body = _without_none({"query": query, "documents": list(documents), "model": model, "top_n": top_n})
        return self.client.request("POST", "/v1/rerank", body)["results"]


class Connected(BaseModel):
    """The service a pydantic framework class (an embedding model, a reranker) talks to."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    url: str = DEFAULT_URL
    api_key: str | None = Field(default=None, repr=False)
    """Default: ``$RAYPRISM_API_KEY``."""
    client: Client | None = Field(default=None, exclude=True)
    """An existing client (its URL and key win over ``url`` and ``api_key``)."""
    _service: Service = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._service = Service(self.url, api_key=self.api_key, client=self.client)


def _without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if value is not None}
