"""What ``/v1/embeddings`` answers for ``output_dtype`` (Voyage's names): floats, or the batch codecs'
codes: int8/uint8 over the model's calibrated ranges, binary/ubinary packed eight dimensions a value.

Codes travel as JSON integers only. ``encoding_format: base64`` is for floats: the official ``openai``
client asks for base64 whenever its caller names no format, and reads whatever comes back as float32,
so base64 of int8 bytes would reach such a caller as a quarter as many wrong floats, with no error.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from rayprism.platform.codecs.quantize import quantize, ranges_from_json
from rayprism.platform.codecs.wire import to_base64
from rayprism.platform.errors import InvalidInputError

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]


@lru_cache(maxsize=16)
def int8_ranges(path: Path) -> np.ndarray:
    """A model's ``int8_ranges`` file, read once per process."""
    return ranges_from_json(path.read_bytes())


def row_encoder(output_dtype: OutputDtype, encoding_format: str, *, model: str, dimensions: int,
                ranges_path: Path | None) -> Callable[[np.ndarray], list]:
    """What turns a request's vectors (``dimensions`` wide, truncated already) into its ``embedding`` values;
    a request that cannot be answered is refused here, before anything is embedded."""
    if output_dtype == "float":
        if encoding_format == "base64":
            return lambda vectors: [to_base64(row) for row in vectors]
        return list
    if encoding_format == "base64":
        raise InvalidInputError(
            f"output_dtype {output_dtype!r} answers integers, which come as JSON numbers only: send "
            '"encoding_format": "float" (the openai client asks for base64 unless told, and reads it as float32)',
            param="encoding_format")
    ranges = None
    if output_dtype in ("int8", "uint8"):
        if ranges_path is None:
            raise InvalidInputError(
                f"model {model!r} has no int8 ranges, so it answers no {output_dtype} (binary and ubinary need "
                "none): its config's int8_ranges names them (a batch job with the int8 codec writes them)",
                param="output_dtype")
        ranges = int8_ranges(ranges_path)
        if ranges.shape[1] != dimensions:
            raise InvalidInputError(
                f"model {model!r}'s int8 ranges are calibrated for {ranges.shape[1]} dimensions, not {dimensions}: "
                f"{output_dtype} takes no other dimensions (binary and ubinary do)", param="dimensions")
    return lambda vectors: list(quantize(vectors, output_dtype, ranges))
