"""Hot loops compiled with numba: bit packing, Hamming, float32 and int8 top-k, MaxSim, MUVERA partition
means, filter masks.

Milvus Lite has no binary or int8 vector fields, so rayprism's compressed search tiers
run here, over codes kept beside a collection. Every function takes and returns numpy
arrays, checks its arguments in Python (a ValueError that names the argument) and
compiles once per machine (``cache=True``). This package imports nothing from rayprism.
"""

from rayprism.numba_kernels._bits import pack_bits
from rayprism.numba_kernels._filter import Cmp, ColumnArrays, FilterProgram, Op, mask_from_columns
from rayprism.numba_kernels._hamming import MISSING_DISTANCE, hamming_topk
from rayprism.numba_kernels._inner import dot_topk
from rayprism.numba_kernels._int8 import int8_dot_topk
from rayprism.numba_kernels._maxsim import maxsim
from rayprism.numba_kernels._partitions import partition_means

__all__ = [
    "MISSING_DISTANCE",
    "Cmp",
    "ColumnArrays",
    "FilterProgram",
    "Op",
    "dot_topk",
    "hamming_topk",
    "int8_dot_topk",
    "mask_from_columns",
    "maxsim",
    "pack_bits",
    "partition_means",
]
