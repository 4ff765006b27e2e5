"""``rayprism convert wechsel``: a model moved to a new tokenizer (WECHSEL, Minixhofer et al., 2022).

Given word vectors of the source and the target language aligned into one space (fastText's
aligned ``.vec`` text files), every token of each tokenizer gets a vector in that space: the mean
of the vectors of the words it appears in when the word list is tokenised (WECHSEL's variant for
plain word-vector files, which carry no subword model). Each target token's input embedding is
then the softmax(similarity / temperature)-weighted mean of the model's embeddings of its
``neighbours`` most similar source tokens. Target tokens no word contains keep the source
embedding of the same token string if there is one, else a random vector with the source
embeddings' mean and spread; special tokens take their source counterparts (CLS to CLS, ...).

The result is the same model with the new tokenizer and embedding matrix, saved as a
sentence-transformers directory; fine-tune it on target-language pairs with ``rayprism train``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rayprism.platform.errors import ConfigError

SPECIAL_ROLES = ("cls_token", "sep_token", "pad_token", "unk_token", "mask_token", "bos_token", "eos_token")


@dataclass(frozen=True)
class TransferReport:
    vocabulary: int
    mapped: int
    """Target tokens embedded from their nearest source tokens."""
    copied: int
    """Target tokens that took the embedding of the same source token (special tokens included)."""
    random: int


def read_word_vectors(path: str | Path, *, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """A fastText ``.vec`` text file: an optional ``count dimensions`` header, then ``word v1 … vd`` lines."""
    words: list[str] = []
    rows: list[np.ndarray] = []
    dimensions = None
    with open(path, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines):
            parts = line.rstrip("\n").rstrip().split(" ")
            if number == 0 and len(parts) == 2 and all(part.isdigit() for part in parts):
                dimensions = int(parts[1])
                continue
            if len(parts) < 2:
                continue
            if dimensions is None:
                dimensions = len(parts) - 1
            if len(parts) - 1 != dimensions:
                raise ConfigError(f"{path}, line {number + 1}: {len(parts) - 1} values, expected {dimensions}")
            try:
                rows.append(np.asarray(parts[1:], dtype=np.float32))
            except ValueError:
                raise ConfigError(f"{path}, line {number + 1}: not a word followed by numbers") from None
            words.append(parts[0])
            if limit is not None and len(words) == limit:
                break
    if not words:
        raise ConfigError(f"{path}: no word vectors")
    return words, np.stack(rows)


def token_vectors(tokenizer, words: list[str], vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary × dimensions) mean word vector of the words each token appears in, and which
    tokens appear in any word."""
    size = len(tokenizer)
    sums = np.zeros((size, vectors.shape[1]), dtype=np.float64)
    counts = np.zeros(size, dtype=np.int64)
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    for ids, vector in zip(encoded, vectors):
        for token in set(ids):
            if 0 <= token < size:
                sums[token] += vector
                counts[token] += 1
    seen = counts > 0
    sums[seen] /= counts[seen, None]
    return sums.astype(np.float32), seen


def target_embeddings(source_embeddings: np.ndarray, source_space: np.ndarray, source_seen: np.ndarray,
                      target_space: np.ndarray, target_seen: np.ndarray, *, neighbours: int,
                      temperature: float) -> np.ndarray:
    """Rows for the target tokens that words cover (others: NaN), from the source tokens' embeddings."""

    def unit(matrix: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

    candidates = np.flatnonzero(source_seen)
    if len(candidates) == 0:
        raise ConfigError("wechsel: no source token occurs in the source word vectors")
    source_unit = unit(source_space[candidates])
    result = np.full((len(target_space), source_embeddings.shape[1]), np.nan, dtype=np.float32)
    rows = np.flatnonzero(target_seen)
    k = min(neighbours, len(candidates))
    for start in range(0, len(rows), 1024):
        chunk = rows[start: start + 1024]
        similarity = unit(target_space[chunk]) @ source_unit.T
        best = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(similarity, best, axis=1) / temperature
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        result[chunk] = np.einsum("rk,rkd->rd", weights, source_embeddings[candidates[best]])
    return result


def load_tokenizer(path: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    location = Path(path)
    if location.is_file():
        return PreTrainedTokenizerFast(tokenizer_file=str(location))
    if location.is_dir():
        return AutoTokenizer.from_pretrained(str(location))
    raise ConfigError(f"wechsel: target tokenizer {path!r} is neither a tokenizer directory nor a tokenizer.json")


def transfer_vocabulary(model: str, tokenizer: str, source_vectors: str | Path, target_vectors: str | Path,
                        output: str | Path, *, neighbours: int = 10, temperature: float = 0.1,
                        seed: int = 0) -> TransferReport:
    import torch
    from sentence_transformers import SentenceTransformer

    from rayprism.platform.files import staged_directory
    from rayprism.platform.models.source import resolve_source

    if neighbours < 1 or temperature <= 0:
        raise ConfigError(f"wechsel: neighbours must be ≥ 1 and temperature > 0 (got {neighbours}, {temperature})")
    st = SentenceTransformer(resolve_source(model), device="cpu")
    transformer = st[0]
    source_tokenizer = transformer.tokenizer
    target_tokenizer = load_tokenizer(tokenizer)
    embeddings = transformer.auto_model.get_input_embeddings().weight.detach().cpu().numpy()

    source_words, source_word_vectors = read_word_vectors(source_vectors)
    target_words, target_word_vectors = read_word_vectors(target_vectors)
    if source_word_vectors.shape[1] != target_word_vectors.shape[1]:
        raise ConfigError(f"wechsel: the word vectors differ in size ({source_word_vectors.shape[1]} and "
                          f"{target_word_vectors.shape[1]}); they must be aligned into one space")
    source_space, source_seen = token_vectors(source_tokenizer, source_words, source_word_vectors)
    source_seen &= np.arange(len(source_seen)) < len(embeddings)
    target_space, target_seen = token_vectors(target_tokenizer, target_words, target_word_vectors)
    new = target_embeddings(embeddings, source_space, source_seen, target_space, target_seen,
                            neighbours=neighbours, temperature=temperature)

    specials = {}
    for role in SPECIAL_ROLES:
        target_token, source_token = getattr(target_tokenizer, role, None), getattr(source_tokenizer, role, None)
        if target_token is not None and source_token is not None:
            specials[target_tokenizer.convert_tokens_to_ids(target_token)] = \
                source_tokenizer.convert_tokens_to_ids(source_token)
    source_vocabulary = source_tokenizer.get_vocab()
    copied = 0
    for token, row in target_tokenizer.get_vocab().items():
        source_row = specials.get(row)
        if source_row is None and not target_seen[row]:
            source_row = source_vocabulary.get(token)
        if source_row is not None and source_row < len(embeddings):
            new[row] = embeddings[source_row]
            copied += 1
    missing = np.isnan(new).any(axis=1)
    rng = np.random.default_rng(seed)
    new[missing] = rng.normal(embeddings.mean(axis=0), embeddings.std(axis=0),
                              size=(int(missing.sum()), embeddings.shape[1])).astype(np.float32)

    auto_model = transformer.auto_model
    auto_model.resize_token_embeddings(len(target_tokenizer))
    with torch.no_grad():
        auto_model.get_input_embeddings().weight.copy_(torch.from_numpy(new))
    if target_tokenizer.pad_token_id is not None:
        auto_model.config.pad_token_id = target_tokenizer.pad_token_id
    if transformer.processor is not source_tokenizer:
        raise ConfigError(f"wechsel: {model} has a processor, not a tokenizer; wechsel moves text models")
    transformer.processor = target_tokenizer
    with staged_directory(output) as staging:
        st.save(str(staging))
    mapped = int(target_seen.sum()) - sum(1 for row in specials if target_seen[row])
    return TransferReport(len(target_tokenizer), mapped, copied, int(missing.sum()))
