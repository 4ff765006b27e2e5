"""Sign bits packed eight to a byte, and the popcount instruction numba does not expose."""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from rayprism.numba_kernels._checks import as_matrix


@intrinsic
def popcount(typingctx, value):
    """LLVM's ctpop: one POPCNT (or, in a vectorised loop, VPOPCNTQ) per word, where the
    shift-and-mask version costs a dozen instructions."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return value(value), codegen


def pack_bits(x: np.ndarray) -> np.ndarray:
    """uint8[n, d // 8]: bit ``x > 0`` of each value, in ``np.packbits`` order (the first
    dimension is the most significant bit of the first byte), as rayprism's binary codec writes."""
    x = as_matrix("x", x, np.float32)
    if x.shape[1] % 8:
        raise ValueError(f"x must have a multiple of 8 columns, got {x.shape[1]}")
    return _pack(x)


@njit(parallel=True, cache=True)
def _pack(x):
    n, d = x.shape
    out = np.empty((n, d // 8), dtype=np.uint8)
    for row in prange(n):
        for byte in range(d // 8):
            value = 0
            for bit in range(8):
                value = (value << 1) | (x[row, 8 * byte + bit] > 0)
            out[row, byte] = value
    return out
