"""Split Markdown into search-sized chunks that keep the heading they sit under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Chunk:
    heading: str
    text: str


def chunk_markdown(text: str, *, max_chars: int = 1200) -> list[Chunk]:
    """Paragraphs packed up to ``max_chars`` per chunk, never across a heading; code fences stay whole."""
    chunks: list[Chunk] = []
    heading = ""
    paragraphs: list[str] = []

    def close_section() -> None:
        packed = ""
        for paragraph in paragraphs:
            if packed and len(packed) + len(paragraph) + 2 > max_chars:
                chunks.append(Chunk(heading, packed))
                packed = ""
            packed = f"{packed}\n\n{paragraph}" if packed else paragraph
        if packed:
            chunks.append(Chunk(heading, packed))
        paragraphs.clear()

    current: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            if current:
                paragraphs.append("\n".join(current).strip())
                current = []
            close_section()
            heading = match.group(2)
        elif not line.strip() and not in_fence:
            if current:
                paragraphs.append("\n".join(current).strip())
                current = []
        else:
            current.append(line)
    if current:
        paragraphs.append("\n".join(current).strip())
    close_section()
    return [chunk for chunk in chunks if chunk.text]


def chunk_files(paths: list[Path], root: Path) -> list[dict]:
    """Documents for a collection with ``source`` and ``heading`` fields, ids stable across runs."""
    documents = []
    for path in paths:
        source = str(path.resolve().relative_to(root.resolve())) if path.resolve().is_relative_to(root.resolve()) else str(path)
        for index, chunk in enumerate(chunk_markdown(path.read_text(encoding="utf-8"))):
            text = f"{chunk.heading}\n\n{chunk.text}" if chunk.heading else chunk.text
            documents.append({"id": f"{source}#{index}", "text": text, "source": source, "heading": chunk.heading})
    return documents
