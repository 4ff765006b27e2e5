"""How a chunked collection should score a document from its pieces: rules compared offline on the manual pages.

    python bench/document_scoring.py [--docs 1000] [--offset 0] [--queries queries-dev.jsonl] [--cache DIR]

The pages are cut by the service's own chunker (``document_pieces``: MiniLM's tokenizer, 256 tokens, 32 overlap,
each page's ``name(section)`` as the title context) and embedded by sentence-transformers' MiniLM (cached in
``--cache``: embedding ~10k pieces takes tens of minutes on 2 busy cores). Pieces and pages get the plain script's
BM25 (bench/documents.py) and the store's own fusion. Scored on the dev description queries of those pages:

- ``unchunked``: one embedding of each page's first 256 tokens, fused with BM25 over the whole page;
- ``best piece``: dense and BM25 fused per piece, a page scored by its best piece;
- ``best piece + openings w``: that, fused with the pages' first pieces by meaning at weight ``w``;
- ``best piece + hybrid openings w``: the first pieces by meaning fused with the first pieces among the BM25 piece
  hits, as the pieces are, at weight ``w`` (the service's hybrid rule, ``OPENING_WEIGHT``).

Offline and in one process: what it measures is ranking quality, not the service (bench/documents.py runs the
service end to end). Needs ../shared/data/manpages/.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from documents import CHUNKING, DATA, FIELDS, PageBm25, ranking_scores, read_jsonl  # noqa: E402

CANDIDATES = 100
OPENING_WEIGHTS = (0.15, 0.25, 0.35)


def pieces_of(pages: list[dict]) -> tuple[list[tuple[int, int, str]], list[str]]:
    """Each page's pieces as the service cuts them: (page index, piece index, slice text), and what is embedded."""
    from rayprism.platform.config import DEFAULT_MODEL_SOURCE, CollectionConfig
    from rayprism.platform.models.source import resolve_source
    from rayprism.platform.store.pieces import document_pieces
    from rayprism.platform.text.chunking import load_chunker

    config = CollectionConfig(name="pages", fields=FIELDS, chunking=CHUNKING)
    chunker = load_chunker(resolve_source(DEFAULT_MODEL_SOURCE), config.chunking, model_max_tokens=256)
    pieces, embedded = [], []
    for page_index, page in enumerate(pages):
        row = {"id": page["id"], "text": page["text"], "title": f"{page['name']}({page['section']})",
               "section": page["section"]}
        for piece_row, embed_text in document_pieces(config, chunker, row, digest=""):
            pieces.append((page_index, piece_row["piece_index"], piece_row["text"]))
            embedded.append(embed_text)
    return pieces, embedded


def embeddings(model, pages: list[dict], embedded: list[str], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The pieces' and the pages' (first 256 tokens) normalised vectors, from the cache when it has them."""
    cache.mkdir(parents=True, exist_ok=True)
    which = hashlib.sha256("\n".join(page["id"] for page in pages).encode()).hexdigest()[:12]
    key = cache / f"{len(pages)}-pages-{which}"
    if (key.with_suffix(".pieces.npy")).exists():
        return np.load(key.with_suffix(".pieces.npy")), np.load(key.with_suffix(".pages.npy"))
    pieces = model.encode(embedded, batch_size=32, normalize_embeddings=True, show_progress_bar=True)
    whole = model.encode([page["text"] for page in pages], batch_size=32, normalize_embeddings=True,
                         show_progress_bar=True)
    np.save(key.with_suffix(".pieces.npy"), pieces)
    np.save(key.with_suffix(".pages.npy"), whole)
    return pieces, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000, help="N pages, with their queries")
    parser.add_argument("--offset", type=int, default=0, help="the pages from this one on (0: the corpus's first)")
    parser.add_argument("--queries", default="queries-dev.jsonl",
                        help="the queries file: queries-dev.jsonl (descriptions) or queries-deep-dev.jsonl")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rayprism-bench" / "document-scoring")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source
    from rayprism.platform.store.fusion import weighted

    pages = read_jsonl(DATA / "corpus.jsonl")[args.offset: args.offset + args.docs]
    index = {page["id"]: i for i, page in enumerate(pages)}
    queries = [q for q in read_jsonl(DATA / args.queries) if q["id"] in index]
    pieces, embedded = pieces_of(pages)
    print(f"{len(pages)} pages, {len(pieces)} pieces, {len(queries)} queries", flush=True)
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    piece_vectors, page_vectors = embeddings(model, pages, embedded, args.cache)
    owner = np.array([page for page, _, _ in pieces])
    openings = np.array([i for i, (_, piece, _) in enumerate(pieces) if piece == 0])
    first = set(openings.tolist())
    piece_bm25, page_bm25 = PageBm25([text for _, _, text in pieces]), PageBm25([page["text"] for page in pages])

    def best_per_page(hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
        best: dict[int, float] = {}
        for piece, score in hits:
            best.setdefault(int(owner[piece]), score)
        return list(best.items())

    def top(scores: np.ndarray, k: int, among: np.ndarray | None = None) -> list[tuple[int, float]]:
        rows = np.arange(len(scores)) if among is None else among
        best = rows[np.argsort(-scores[rows])[:k]]
        return [(int(row), float(scores[row])) for row in best]

    ranked: dict[str, list[list[str]]] = {}
    vectors = model.encode([q["query"] for q in queries], normalize_embeddings=True)
    for query, vector in zip(queries, vectors):
        dense_pieces = top(piece_vectors @ vector, CANDIDATES * 4)
        sparse_pieces = piece_bm25.top(query["query"], CANDIDATES * 4)
        best_piece = best_per_page(weighted([dense_pieces, sparse_pieces], [0.5, 0.5]))
        opening_vectors = top(piece_vectors @ vector, CANDIDATES, openings)
        first_pieces = best_per_page(opening_vectors)
        hybrid_openings = best_per_page(weighted([opening_vectors, [hit for hit in sparse_pieces if hit[0] in first]],
                                                 [0.5, 0.5]))
        rules = {"unchunked": weighted([top(page_vectors @ vector, CANDIDATES), page_bm25.top(query["query"], CANDIDATES)],
                                       [0.5, 0.5]),
                 "best piece": best_piece}
        for w in OPENING_WEIGHTS:
            rules[f"best piece + openings {w}"] = weighted([best_piece, first_pieces], [1 - w, w])
            rules[f"best piece + hybrid openings {w}"] = weighted([best_piece, hybrid_openings], [1 - w, w])
        for rule, hits in rules.items():
            ranked.setdefault(rule, []).append([pages[page]["id"] for page, _ in hits[:10]])
    targets = [q["id"] for q in queries]
    for rule, lists in ranked.items():
        mrr, r10 = ranking_scores(lists, targets)
        print(f"{rule:34s} MRR@10 {mrr:.3f}  R@10 {r10:.3f}")


if __name__ == "__main__":
    main()
