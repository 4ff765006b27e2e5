"""One document's text cut into pieces that the collection model embeds whole.

A model sees at most its ``max_seq_length`` tokens; anything longer is cut silently, so the rest of
a long page is unreachable by dense search. A chunked collection splits each document into pieces
of at most ``max_tokens`` tokens *as the model's own tokenizer counts them* (without special
tokens), on paragraph, line, sentence or word boundaries where possible, with about
``overlap_tokens`` tokens repeated between neighbours so a sentence cut at a boundary is whole in
one of them.

The splitting is `semantic-text-splitter`'s (the Rust ``text-splitter`` crate): it packs the largest
semantic units that fit (``MarkdownSplitter`` also knows headings, lists and code blocks) and
measures candidates with the Hugging Face tokenizer itself, so a piece never exceeds its budget.

Each piece also carries a *context*: the document's title and, for Markdown, the headings of the
sections it sits in ("Guide > Install > Linux"). The context is prepended when embedding
(:attr:`Piece.embed_text`), as Voyage and Jina embed chunks in their document's context: a piece
that says "run make" alone matches nothing, under "Install" it does. The piece's own text and its
character offsets are what a store keeps and a search shows. When the model's limit is known
(``model_max_tokens``), the piece budget shrinks so that context + piece + special tokens fit it.

Empty or whitespace-only text gives one empty piece (offsets 0..0) rather than none, so every
document exists in a chunked collection and its title is still embedded.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any

from rayprism.platform.config.collections import ChunkingConfig

__all__ = ["Chunker", "ChunkingConfig", "Piece"]

CONTEXT_SEPARATOR = " > "
"""Between the title and the section headings of a piece's context."""
EMBED_SEPARATOR = "\n\n"
"""Between a piece's context and its text in what is embedded."""
_PROBE = "word"
"""A word after the separator when measuring a context, as a piece's first word follows it when embedded."""
DEFAULT_MAX_CONTEXT_TOKENS = 64
"""A context is cut to this many tokens (a quarter of a smaller model's limit): a long title must not eat a
piece's budget."""
DEFAULT_MAX_PIECE_CHARS = 16_000
"""A piece is cut further past this many characters whatever its token count: WordPiece makes one
``[UNK]`` token of any word over 100 characters, so a hex dump could make a one-token piece larger than
Milvus's 64 KB VARCHAR (16,000 characters stay under it even at 4 UTF-8 bytes each)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """One piece of a document: ``text`` is ``document[start:end]`` (character offsets, end exclusive)."""

    index: int
    text: str
    start: int
    end: int
    context: str
    """The title and enclosing section headings, prepended when embedding; "" when there are none."""

    @property
    def embed_text(self) -> str:
        """What the model embeds: the context, a blank line, the piece."""
        if not self.context:
            return self.text
        return f"{self.context}{EMBED_SEPARATOR}{self.text}" if self.text else self.context


TITLE_FIELD = "title"
"""A collection's varchar field of this name heads its pieces' contexts (``rayprism ingest`` of files fills it)."""


def load_chunker(source: str, config: ChunkingConfig, *, model_max_tokens: int, prompt: str | None = None) -> Chunker:
    """The chunker of the model at ``source`` (its own tokenizer, read from its files: nothing downloads).
    ``prompt``: what the model prepends to a document when embedding it, whose tokens a piece leaves room for."""
    from transformers import AutoTokenizer

    from rayprism.platform.models.source import resolve_source
    from rayprism.platform.threads import quiet_tokenizers

    quiet_tokenizers()
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(source), use_fast=True)
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    return Chunker(tokenizer, config, model_max_tokens=model_max_tokens - prompt_tokens)


class Chunker:
    """Splits documents for one model: build it once per collection (it holds the splitters, whose
    construction parses the tokenizer) and share it between threads.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` or a ``transformers`` fast tokenizer; a private copy
    is made with truncation and padding off (MiniLM's own truncates at 128 and pads). ``model_max_tokens``
    is the model's input limit (``max_seq_length``) with special tokens; None when only ``max_tokens``
    bounds a piece.
    """

    def __init__(self, tokenizer: Any, config: ChunkingConfig | None = None, *, model_max_tokens: int | None = None,
                 max_context_tokens: int | None = None, max_piece_chars: int = DEFAULT_MAX_PIECE_CHARS) -> None:
        self.config = config or ChunkingConfig()
        self._tokenizer = _private_copy(tokenizer)
        self.n_special_tokens = (len(self._tokenizer.encode("", add_special_tokens=True).ids)
                                 - len(self._tokenizer.encode("", add_special_tokens=False).ids))
        self.model_max_tokens = model_max_tokens
        if max_context_tokens is None:  # a small model's context takes at most a quarter of its input
            max_context_tokens = min(DEFAULT_MAX_CONTEXT_TOKENS, (model_max_tokens or 4 * DEFAULT_MAX_CONTEXT_TOKENS) // 4)
        self.max_context_tokens = max_context_tokens
        self.max_piece_chars = max_piece_chars
        if model_max_tokens is not None and model_max_tokens - self.n_special_tokens - max_context_tokens < 16:
            raise ValueError(f"model_max_tokens ({model_max_tokens}) leaves fewer than 16 tokens for a piece after "
                             f"{self.n_special_tokens} special tokens and max_context_tokens ({max_context_tokens})")
        self._splitters: dict[tuple[bool, int], Any] = {}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without special tokens: how a piece is measured."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def split(self, text: str, *, title: str = "", markdown: bool = False) -> list[Piece]:
        """``text`` cut into pieces in document order. ``title`` heads every piece's context; with
        ``markdown`` the text is split on Markdown structure and the context adds the headings of the
        sections each piece starts in."""
        title = self._fit_context(" ".join(title.split()))
        sections = _markdown_sections(text, title) if markdown else _Sections([], [])
        contexts = {path: self._fit_context(CONTEXT_SEPARATOR.join((title, *path) if title else path))
                    for path in {(), *sections.paths}}
        if not text.strip():
            return [Piece(0, "", 0, 0, contexts[()])]
        capacity = self.config.max_tokens
        if self.model_max_tokens is not None:
            context_tokens = max(self._context_tokens(context) for context in contexts.values())
            capacity = min(capacity, self.model_max_tokens - self.n_special_tokens - context_tokens)
        if self.model_max_tokens is None or not any(contexts.values()):  # a piece alone fits by construction
            spans = self._spans(text, markdown, capacity)
        else:
            while True:  # once for tokenizers whose counts add up (WordPiece, byte-level BPE)
                spans = self._spans(text, markdown, capacity)
                excess = self._excess_tokens(spans, sections, contexts)
                if excess <= 0:
                    break
                capacity -= excess
                if capacity < 1:
                    raise ValueError(f"no piece fits model_max_tokens ({self.model_max_tokens}) beside its context")
        return [Piece(i, chunk, start, start + len(chunk), contexts[sections.path_at(start)])
                for i, (start, chunk) in enumerate(spans)]

    def _spans(self, text: str, markdown: bool, capacity: int) -> list[tuple[int, str]]:
        """(start, piece text) in document order."""
        return [(start + sub_start, sub_chunk)
                for start, chunk in self._splitter(markdown, capacity).chunk_indices(text)
                for sub_start, sub_chunk in self._by_chars(chunk)]

    def _excess_tokens(self, spans: list[tuple[int, str]], sections: _Sections, contexts: dict) -> int:
        """How far the longest embedded text (context, piece and special tokens) runs over the model's
        limit, measured for real: a SentencePiece (Metaspace) tokenizer reads the context's last word and
        the piece's first as one, so the sum of their counts can fall short."""
        texts = [Piece(0, chunk, start, 0, contexts[sections.path_at(start)]).embed_text for start, chunk in spans]
        longest = max(len(encoding.ids) for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=True))
        return longest - self.model_max_tokens

    def _splitter(self, markdown: bool, capacity: int) -> Any:
        """One splitter per (kind, capacity), built on first use: building one parses the tokenizer."""
        key = (markdown, capacity)
        if key not in self._splitters:
            from semantic_text_splitter import MarkdownSplitter, TextSplitter

            kind = MarkdownSplitter if markdown else TextSplitter
            overlap = min(self.config.overlap_tokens, capacity // 2)
            self._splitters[key] = kind.from_huggingface_tokenizer(self._tokenizer, capacity, overlap)
        return self._splitters[key]

    def _by_chars(self, chunk: str) -> list[tuple[int, str]]:
        if len(chunk) <= self.max_piece_chars:
            return [(0, chunk)]
        from semantic_text_splitter import TextSplitter

        return TextSplitter(self.max_piece_chars).chunk_indices(chunk)

    def _fit_context(self, context: str) -> str:
        """``context`` cut to ``max_context_tokens`` tokens, on a token boundary."""
        encoding = self._tokenizer.encode(context, add_special_tokens=False)
        if len(encoding.ids) <= self.max_context_tokens:
            return context
        return context[:encoding.offsets[self.max_context_tokens - 1][1]].rstrip()

    def _context_tokens(self, context: str) -> int:
        """What a context adds to a piece's embedding: its tokens and the separator's, measured before a
        word as in the embedded text (byte-level BPE makes one token of a trailing blank line but two of
        one followed by a word)."""
        if not context:
            return 0
        return self.count_tokens(f"{context}{EMBED_SEPARATOR}{_PROBE}") - self.count_tokens(_PROBE)


def _private_copy(tokenizer: Any) -> Any:
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"chunking needs a fast (Rust) tokenizer, got {type(tokenizer).__name__}: "
                        f"load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


@dataclass(frozen=True, slots=True)
class _Sections:
    """Heading paths by position: ``paths[i]`` holds from ``starts[i]`` until the next start."""

    starts: list[int]
    paths: list[tuple[str, ...]]

    def path_at(self, offset: int) -> tuple[str, ...]:
        """The headings enclosing ``offset``: those of headings that begin before it (a piece that starts
        with a heading has that heading in its own text already)."""
        i = bisect.bisect_left(self.starts, offset) - 1
        return self.paths[i] if i >= 0 else ()


_NEWLINE = re.compile(r"\r\n?|\n")
"""Line ends as markdown-it counts lines (it normalises all three to ``\\n`` before parsing)."""


def _markdown_sections(text: str, title: str) -> _Sections:
    """Every heading of ``text`` (ATX and setext, not ``#`` lines in code blocks: markdown-it parses them)
    with the path of headings it opens. A top heading equal to the title is left out of paths: the
    title already heads every context."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(text)
    line_starts = [0, *(match.end() for match in _NEWLINE.finditer(text))]
    starts: list[int] = []
    paths: list[tuple[str, ...]] = []
    stack: list[tuple[int, str]] = []
    for i, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None:
            continue
        level = int(token.tag[1:])
        heading = " ".join(_inline_text(tokens[i + 1]).split())
        while stack and stack[-1][0] >= level:
            stack.pop()
        if not (not stack and heading.casefold() == title.casefold()) and heading:
            stack.append((level, heading))
        starts.append(line_starts[token.map[0]])
        paths.append(tuple(name for _, name in stack))
    return _Sections(starts, paths)


def _inline_text(inline: Any) -> str:
    """A heading's words without its Markdown (``**Install** `make` `` → ``Install make``)."""
    return "".join(child.content for child in inline.children or () if child.type in ("text", "code_inline"))
