"""Chunking speed on the manual pages, against the work it feeds, in one run.

    python bench/chunking.py [--docs N] [--embed-sample 256]

1. tokenize: every page tokenized once by MiniLM's tokenizer (the least any token-aware chunker does);
2. chunk: every page split by ``rayprism.platform.text.chunking.Chunker`` (max_tokens 256, overlap 32,
   MiniLM's limit of 256 with the page's name and section as context), one thread, as an ingest runs it;
3. embed: a sample of the pieces encoded by sentence-transformers (batch 32), to show what share of
   ingest time chunking is. Needs ../shared/data/manpages/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rayprism.platform.threads import quiet_tokenizers

quiet_tokenizers()  # as every rayprism process runs its tokenizers

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "manpages" / "corpus.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="first N pages only (default: all)")
    parser.add_argument("--embed-sample", type=int, default=256, help="pieces to embed for the comparison")
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from rayprism.platform.config import DEFAULT_MODEL_SOURCE
    from rayprism.platform.models.source import resolve_source
    from rayprism.platform.text.chunking import Chunker, ChunkingConfig

    pages = [json.loads(line) for line in CORPUS.open(encoding="utf-8")][: args.docs]
    megabytes = sum(len(page["text"].encode("utf-8")) for page in pages) / 1e6
    model = SentenceTransformer(resolve_source(DEFAULT_MODEL_SOURCE), device="cpu")
    chunker = Chunker(model.tokenizer, ChunkingConfig(max_tokens=256, overlap_tokens=32),
                      model_max_tokens=model.max_seq_length)

    started = time.perf_counter()
    tokens = sum(chunker.count_tokens(page["text"]) for page in pages)
    tokenize_s = time.perf_counter() - started

    started = time.perf_counter()
    pieces, slowest = [], (0.0, "")
    for page in pages:
        page_started = time.perf_counter()
        pieces.extend(chunker.split(page["text"], title=f"{page['name']}({page['section']})"))
        slowest = max(slowest, (time.perf_counter() - page_started, page["id"]))
    chunk_s = time.perf_counter() - started

    sample = [piece.embed_text for piece in pieces[:: max(1, len(pieces) // args.embed_sample)]][: args.embed_sample]
    started = time.perf_counter()
    model.encode(sample, batch_size=32)
    embed_s_per_piece = (time.perf_counter() - started) / len(sample)

    sizes = [chunker.count_tokens(piece.text) for piece in pieces[:: max(1, len(pieces) // 2000)]]
    print(f"pages {len(pages)}, {megabytes:.1f} MB, {tokens:,} tokens; pieces {len(pieces):,} "
          f"(median {statistics.median(sizes):.0f} tokens, max {max(sizes)} in a sample of {len(sizes)})")
    print(f"tokenize once : {tokenize_s:7.1f} s  {megabytes / tokenize_s:6.2f} MB/s")
    print(f"chunk         : {chunk_s:7.1f} s  {megabytes / chunk_s:6.2f} MB/s  {len(pieces) / chunk_s:7.0f} pieces/s  "
          f"({chunk_s / tokenize_s:.1f}x tokenizing once; slowest page {slowest[1]} {slowest[0]:.1f} s)")
    print(f"embed (sample): {embed_s_per_piece * 1e3:7.1f} ms/piece {1 / embed_s_per_piece:7.1f} pieces/s "
          f"({len(sample)} pieces, batch 32, {model.device})")
    print(f"chunking is {chunk_s / (chunk_s + embed_s_per_piece * len(pieces)):.1%} of chunk + embed time "
          f"(embedding all {len(pieces):,} pieces here: {embed_s_per_piece * len(pieces) / 60:.0f} min)")


if __name__ == "__main__":
    main()
