"""scikit-learn's handwritten digits as image–caption pairs: the image–text trainer's demonstration.

    python -m rayprism.trainers.digits data/digits
    rayprism train configs/train-digits.yaml --output models/digits-clip

writes, from the 1,797 8×8 digits (upscaled to 32×32 greyscale PNGs), a seeded 80/20 split:

* ``train.parquet``: ``{image, caption, label}``, captions such as "a handwritten seven" (a few
  phrasings, so the text tower learns the digit, not one sentence);
* ``test.parquet``: the held-out images as evaluation queries ``{image, label}``;
* ``classes.jsonl``: one prompt per digit, ``{id, text: "a handwritten seven"}``: the evaluation
  corpus, so Recall@1 of the evaluation is zero-shot classification accuracy.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = ("a handwritten {word}", "the digit {word}", "a picture of the number {word}",
             "{digit} written by hand", "a {word}, handwritten")
PROMPT = "a handwritten {word}"
"""The zero-shot prompt of each class."""


def digit_png(image: np.ndarray, size: int = 32) -> bytes:
    from PIL import Image

    picture = Image.fromarray((image * 255 / 16).astype(np.uint8), "L").resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits(directory: str | Path, *, test_share: float = 0.2, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    test_count = int(len(order) * test_share)
    test, train = order[:test_count], order[test_count:]
    images = [digit_png(image) for image in digits.images]
    labels = [int(label) for label in digits.target]
    captions = [TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(word=WORDS[labels[i]], digit=labels[i])
                for i in train]
    pq.write_table(pa.table({"image": [images[i] for i in train], "caption": captions,
                             "label": [labels[i] for i in train]}), directory / "train.parquet")
    pq.write_table(pa.table({"image": [images[i] for i in test], "label": [labels[i] for i in test]}),
                   directory / "test.parquet")
    with open(directory / "classes.jsonl", "w") as classes:
        for label, word in enumerate(WORDS):
            classes.write(json.dumps({"id": label, "text": PROMPT.format(word=word)}) + "\n")
    return directory


if __name__ == "__main__":
    target = write_digits(sys.argv[1] if len(sys.argv) > 1 else "data/digits")
    print(f"wrote {target}/train.parquet, test.parquet, classes.jsonl")
