"""The chunker against independent references: the tokenizer's own counts, slices of the original
text, heading positions found by plain string search."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from rayprism.platform.text.chunking import CONTEXT_SEPARATOR, Chunker, ChunkingConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(minilm_path) / "tokenizer.json"))
    tokenizer.no_truncation()  # MiniLM's file truncates at 128 and pads: the reference counts everything
    tokenizer.no_padding()
    return tokenizer


_WORDS = ("ray serve milvus chunk café naïve Zürich tokenizer offsets paragraph embedding déjà-vu "
          "überprüfen 東京 ﬁle sentence boundary overlap index vector --option=value /usr/bin/ls").split()
_PLAIN_WORDS = "the page lists files in the folder and sorts them by name or by time of change".split()


def _corpus_sentences(n: int, seed: int = 0, *, plain: bool = False) -> list[str]:
    """Sentences of 4 to 14 words; ``plain`` ones are one token a word (never more than 15 tokens)."""
    rng = random.Random(seed)
    words = _PLAIN_WORDS if plain else _WORDS
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))).capitalize() + rng.choice(".!?")
            for _ in range(n)]


@pytest.fixture(scope="session")
def trained_tokenizers():
    """A byte-level BPE (GPT-2/RoBERTa's family) and a Metaspace unigram (SentencePiece's), trained here
    with their own special tokens: the chunker must fit pieces for tokenizers other than WordPiece."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = _corpus_sentences(400, seed=1) + [ROOT.joinpath("README.md").read_text(encoding="utf-8")]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    unigram = Tokenizer(models.Unigram())
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"],
                                                                unk_token="<unk>"))
    unigram.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return {"bpe": bpe, "unigram": unigram}


def _tokens(tokenizer, text: str, *, special: bool = False) -> int:
    return len(tokenizer.encode(text, add_special_tokens=special).ids)


def _check_cover(text: str, pieces) -> None:
    """Each piece is its slice of the text, pieces advance in order, and every non-space character of
    the text lies in some piece."""
    assert [piece.index for piece in pieces] == list(range(len(pieces)))
    covered = bytearray(len(text))
    for piece in pieces:
        assert piece.text == text[piece.start:piece.end]
        covered[piece.start:piece.end] = b"\x01" * (piece.end - piece.start)
    for before, after in zip(pieces, pieces[1:]):
        assert before.start < after.start and before.end < after.end
    missed = [i for i, char in enumerate(text) if not covered[i] and not char.isspace()]
    assert not missed, f"characters outside every piece at {missed[:5]}: {text[missed[0]:missed[0] + 40]!r}"


def _long_plain_text() -> str:
    sentences = _corpus_sentences(900)
    paragraphs, i = [], 0
    rng = random.Random(3)
    while i < len(sentences):
        n = rng.choice([1, 2, 5, 30])  # short paragraphs and ones far over a piece
        lines = sentences[i:i + n]
        paragraphs.append("\n".join(" ".join(lines[j:j + 3]) for j in range(0, len(lines), 3)))
        i += n
    return "\n\n".join(paragraphs)


@pytest.mark.parametrize("max_tokens,overlap", [(256, 32), (64, 8), (40, 0)])
def test_pieces_fit_and_cover_the_text(minilm_tokenizer, max_tokens, overlap):
    text = _long_plain_text()
    chunker = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=max_tokens, overlap_tokens=overlap))
    pieces = chunker.split(text, title="A plain document")
    assert len(pieces) >= _tokens(minilm_tokenizer, text) // max_tokens
    assert max(_tokens(minilm_tokenizer, piece.text) for piece in pieces) <= max_tokens
    _check_cover(text, pieces)
    assert {piece.context for piece in pieces} == {"A plain document"}


@pytest.mark.parametrize("name", ["minilm", "bpe", "unigram"])
def test_the_embedded_text_fits_the_models_limit_with_context_and_special_tokens(
        name, minilm_tokenizer, trained_tokenizers):
    tokenizer = minilm_tokenizer if name == "minilm" else trained_tokenizers[name]
    markdown = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    chunker = Chunker(tokenizer, ChunkingConfig(max_tokens=256, overlap_tokens=32), model_max_tokens=128)
    for text, is_markdown in ((markdown, True), (_long_plain_text(), False)):
        pieces = chunker.split(text, title="rayprism: an embedding platform on Ray Serve", markdown=is_markdown)
        _check_cover(text, pieces)
        totals = [_tokens(tokenizer, piece.embed_text, special=True) for piece in pieces]
        assert max(totals) <= 128
        assert sum(totals) / len(totals) > 64  # the budget is used, not thrown away
    untitled = chunker.split(_long_plain_text())  # no context: the piece alone must fit
    assert max(_tokens(tokenizer, piece.embed_text, special=True) for piece in untitled) <= 128


def test_overlap_is_about_overlap_tokens(minilm_tokenizer):
    text = " ".join(_corpus_sentences(600, seed=5, plain=True))  # one paragraph: sentences are the units
    chunker = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=128, overlap_tokens=32))
    pieces = chunker.split(text)
    _check_cover(text, pieces)
    shared = [_tokens(minilm_tokenizer, text[after.start:before.end])
              for before, after in zip(pieces, pieces[1:]) if after.start < before.end]
    assert len(shared) == len(pieces) - 1  # neighbours share text...
    assert max(shared) <= 32  # ...never more than overlap_tokens...
    assert sum(shared) / len(shared) >= 16  # ...and about that much: whole sentences of up to 15 tokens
    unshared = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=128, overlap_tokens=0)).split(text)
    assert all(before.end <= after.start for before, after in zip(unshared, unshared[1:]))


def test_short_paragraphs_are_never_split(minilm_tokenizer):
    paragraphs = [" ".join(_corpus_sentences(3, seed=seed, plain=True)) for seed in range(60)]
    text = "\n\n".join(paragraphs)
    assert max(_tokens(minilm_tokenizer, paragraph) for paragraph in paragraphs) < 60
    pieces = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=128, overlap_tokens=0)).split(text)
    _check_cover(text, pieces)
    spans, offset = [], 0
    for paragraph in paragraphs:
        offset = text.index(paragraph, offset)
        spans.append((offset, offset + len(paragraph)))
    starts, ends = {start for start, _ in spans}, {end for _, end in spans}
    for piece in pieces:
        assert piece.start in starts and piece.end in ends, piece.text
    assert len(pieces) < len(paragraphs) / 2  # and they are packed, several to a piece


def test_lines_then_words_when_a_paragraph_is_too_long(minilm_tokenizer):
    lines = [" ".join(_corpus_sentences(2, seed=seed)) for seed in range(40)]
    text = "\n".join(lines)  # one paragraph of lines
    pieces = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=100, overlap_tokens=0)).split(text)
    _check_cover(text, pieces)
    assert all(text[piece.end:piece.end + 1] in ("\n", "") for piece in pieces)


@pytest.mark.parametrize("giant", ["x.y." * 600, "/usr/lib/" + "-".join(["abc"] * 1200)])
def test_a_giant_word_with_no_boundary_is_still_split(minilm_tokenizer, giant):
    text = f"Before it.\n\n{giant}\n\nAfter it."
    assert _tokens(minilm_tokenizer, giant) > 2000  # one Unicode "word" (UAX 29), thousands of tokens
    pieces = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=64, overlap_tokens=8)).split(text)
    _check_cover(text, pieces)
    assert max(_tokens(minilm_tokenizer, piece.text) for piece in pieces) <= 64


def test_a_piece_is_cut_by_characters_when_one_token_spans_thousands(minilm_tokenizer):
    blob = "a" * 50_000  # WordPiece: one [UNK] for any word over 100 characters
    assert _tokens(minilm_tokenizer, blob) == 1
    text = f"Intro.\n\n{blob}\n\nOutro."
    pieces = Chunker(minilm_tokenizer, max_piece_chars=8_000).split(text)
    _check_cover(text, pieces)
    assert max(len(piece.text) for piece in pieces) <= 8_000


@pytest.mark.parametrize("text", ["", "   \n\t  \n"])
def test_empty_text_gives_one_empty_piece_with_the_title(minilm_tokenizer, text):
    pieces = Chunker(minilm_tokenizer).split(text, title="Empty page")
    assert [(p.index, p.text, p.start, p.end, p.context, p.embed_text) for p in pieces] == [
        (0, "", 0, 0, "Empty page", "Empty page")]
    assert Chunker(minilm_tokenizer).split(text)[0].embed_text == ""


MARKDOWN = """# User guide

Welcome text.

## Install

Before the sub-sections.

### Linux

```bash
# not a heading: a shell comment
make install
```

{linux}

### macOS

Use brew.

Setext heading
--------------

{setext}

## Usage *in depth*

{usage}
"""


def test_markdown_pieces_carry_their_section_headings(minilm_tokenizer):
    def paragraphs(seed, n):
        return "\n\n".join(" ".join(_corpus_sentences(3, seed=seed * 100 + i)) for i in range(n))

    text = MARKDOWN.format(linux=paragraphs(1, 12), setext=paragraphs(2, 8), usage=paragraphs(3, 20))
    # the reference: each heading's position by plain search, with the path it opens
    headings = [("## Install", ("Install",)), ("### Linux", ("Install", "Linux")),
                ("### macOS", ("Install", "macOS")), ("Setext heading\n---", ("Setext heading",)),
                ("## Usage", ("Usage in depth",))]
    positions = [(text.index(marker), path) for marker, path in headings]
    assert text.count("# not a heading") == 1
    chunker = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=96, overlap_tokens=16), model_max_tokens=128)
    pieces = chunker.split(text, title="User guide", markdown=True)
    _check_cover(text, pieces)
    assert max(_tokens(minilm_tokenizer, piece.embed_text, special=True) for piece in pieces) <= 128
    seen = set()
    for piece in pieces:
        path = ([path for position, path in positions if position < piece.start] or [()])[-1]
        assert piece.context == CONTEXT_SEPARATOR.join(("User guide", *path)), piece.text[:80]
        assert piece.embed_text == f"{piece.context}\n\n{piece.text}"
        seen.add(path)
    assert {("Install", "Linux"), ("Setext heading",), ("Usage in depth",)} <= seen
    fence = next(piece for piece in pieces if "# not a heading" in piece.text)
    assert fence.context == "User guide > Install > Linux" or fence.text.startswith("### Linux")
    # the same text as plain text: the title only
    assert {piece.context for piece in chunker.split(text, title="User guide")} == {"User guide"}


def test_a_long_title_is_cut_to_max_context_tokens(minilm_tokenizer):
    title = " ".join(_corpus_sentences(40))
    chunker = Chunker(minilm_tokenizer, ChunkingConfig(max_tokens=64, overlap_tokens=0), model_max_tokens=96,
                      max_context_tokens=20)
    pieces = chunker.split(_long_plain_text()[:5000], title=title)
    context = pieces[0].context
    assert title.startswith(context) and _tokens(minilm_tokenizer, context) == 20
    assert max(_tokens(minilm_tokenizer, piece.embed_text, special=True) for piece in pieces) <= 96


def test_a_transformers_tokenizer_is_accepted_and_left_unchanged(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    before = tokenizer.backend_tokenizer.to_str()
    chunker = Chunker(tokenizer, ChunkingConfig(max_tokens=200, overlap_tokens=20))
    pieces = chunker.split(_long_plain_text()[:20_000])
    assert tokenizer.backend_tokenizer.to_str() == before  # (a call of the tokenizer itself resets it)
    # counted untruncated: MiniLM's tokenizer.json would cap every count at 128
    assert max(len(tokenizer(piece.text, add_special_tokens=False, truncation=False)["input_ids"])
               for piece in pieces) > 128
    assert chunker.n_special_tokens == 2


@pytest.mark.parametrize("values,message", [
    ({"max_tokens": 100, "overlap_tokens": 60}, "overlap_tokens (60) must be at most half of max_tokens (100)"),
    ({"max_tokens": 8}, "greater than or equal to 16"),
    ({"max_tokens": 256, "overlap_tokens": 32, "max_chars": 10}, "Extra inputs are not permitted"),
])
def test_config_errors_quote_the_values(values, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=re.escape(message)):
        ChunkingConfig(**values)


def test_a_model_limit_too_small_for_the_context_is_refused(minilm_tokenizer):
    with pytest.raises(ValueError, match=r"model_max_tokens \(70\) leaves fewer than 16 tokens"):
        Chunker(minilm_tokenizer, model_max_tokens=70, max_context_tokens=64)
    assert Chunker(minilm_tokenizer, model_max_tokens=70).max_context_tokens == 70 // 4  # by default it fits
