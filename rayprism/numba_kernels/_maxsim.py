"""Late-interaction (ColBERT / Chamfer) scores: for each document, the sum over query tokens
of the best dot product with any of the document's tokens."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from rayprism.numba_kernels._checks import as_matrix, as_offsets, as_vector, same_width
from rayprism.numba_kernels._dot import dots


def maxsim(
    query_tokens: np.ndarray, doc_tokens: np.ndarray, doc_offsets: np.ndarray, docs: np.ndarray | None = None
) -> np.ndarray:
    """float32 scores of documents against one query.

    ``doc_tokens`` (float32[T, d]) holds every document's tokens back to back; document i owns
    rows ``doc_offsets[i]:doc_offsets[i + 1]`` (int64[n_docs + 1], non-decreasing, from 0 to T).
    ``docs`` (int64 indices) scores only those documents, in that order (a rerank of
    candidates without copying their tokens); by default all n_docs. A document without
    tokens scores -inf (it matches no query token); a query without tokens scores 0.
    """
    query_tokens = as_matrix("query_tokens", query_tokens, np.float32)
    doc_tokens = as_matrix("doc_tokens", doc_tokens, np.float32)
    same_width("query_tokens", query_tokens, "doc_tokens", doc_tokens)
    doc_offsets = as_offsets("doc_offsets", doc_offsets, len(doc_tokens))
    n_docs = len(doc_offsets) - 1
    if docs is None:
        docs = np.arange(n_docs, dtype=np.int64)
    docs = as_vector("docs", docs, np.int64)
    if len(docs) and (docs.min() < 0 or docs.max() >= n_docs):
        raise ValueError(f"docs must be document indices in [0, {n_docs})")
    return _maxsim(query_tokens, doc_tokens, doc_offsets, docs)


@njit(parallel=True, fastmath={"reassoc", "contract", "nsz"}, cache=True)
def _maxsim(query_tokens, doc_tokens, doc_offsets, docs):
    scores = np.empty(len(docs), dtype=np.float32)
    for position in prange(len(docs)):
        doc = docs[position]
        best = np.full(len(query_tokens), -np.inf, dtype=np.float32)
        similarities = np.empty(len(query_tokens), dtype=np.float32)
        for token in range(doc_offsets[doc], doc_offsets[doc + 1]):
            dots(query_tokens, doc_tokens[token], similarities)
            for query in range(len(best)):
                best[query] = max(best[query], similarities[query])
        scores[position] = best.sum()
    return scores
