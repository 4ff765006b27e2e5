"""Vector codecs: what a batch job writes beside (or instead of) float32 vectors.

Each codec turns a float32 matrix into one output column, named as users see it
in parquet: ``float32``, ``float16``, ``int8``, ``binary``, ``matryoshka_<dim>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from rayprism.platform.codecs.matryoshka import truncate
from rayprism.platform.codecs.quantize import to_binary, to_int8
from rayprism.platform.config import CodecSpec


@dataclass(frozen=True)
class Codec:
    column: str
    encode: Callable[[np.ndarray], np.ndarray]


def build_codecs(specs: list[CodecSpec], *, dimensions: int, int8_ranges: np.ndarray | None = None) -> list[Codec]:
    codecs = []
    for spec in specs:
        if spec == "float32":
            codecs.append(Codec("float32", lambda v: v.astype(np.float32, copy=False)))
        elif spec == "float16":
            codecs.append(Codec("float16", lambda v: v.astype(np.float16)))
        elif spec == "int8":
            if int8_ranges is None:
                raise ValueError("the int8 codec needs calibrated ranges")
            codecs.append(Codec("int8", lambda v, ranges=int8_ranges: to_int8(v, ranges)))
        elif spec == "binary":
            codecs.append(Codec("binary", to_binary))
        else:
            for dim in spec.matryoshka:
                if dim > dimensions:
                    raise ValueError(f"matryoshka dimension {dim} exceeds the model's {dimensions}")
                codecs.append(Codec(f"matryoshka_{dim}", lambda v, dim=dim: truncate(v, dim)))
    return codecs
