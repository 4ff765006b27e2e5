import numpy as np
import pytest

from rayprism.platform.codecs import build_codecs
from rayprism.platform.codecs.matryoshka import truncate
from rayprism.platform.codecs.quantize import (
    calibrate_int8,
    from_int8,
    ranges_from_json,
    ranges_to_json,
    to_binary,
    to_int8,
)
from rayprism.platform.config import MatryoshkaCodec


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((300, 48)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_binary_is_packbits_of_the_signs(vectors):
    codes = to_binary(vectors)
    assert codes.dtype == np.uint8 and codes.shape == (300, 6)
    np.testing.assert_array_equal(codes, np.packbits(vectors > 0, axis=1))


def test_int8_round_trip_error_is_at_most_half_a_bucket(vectors):
    ranges = calibrate_int8(vectors[:200])
    np.testing.assert_array_equal(ranges_from_json(ranges_to_json(ranges)), ranges)
    inside = np.clip(vectors[200:], ranges[0], ranges[1])  # values the calibration sample covered
    codes = to_int8(inside, ranges)
    assert codes.dtype == np.int8
    bucket = (ranges[1] - ranges[0]) / 255
    assert np.all(np.abs(from_int8(codes, ranges) - inside) <= bucket / 2 + 1e-6)
    outside = to_int8(np.full((1, 48), 10.0, dtype=np.float32), ranges)  # beyond the range: clipped, not wrapped
    assert np.all(outside == 127)


def test_matryoshka_truncates_and_renormalises(vectors):
    short = truncate(vectors, 16)
    assert short.shape == (300, 16)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(short[0], vectors[0, :16] / np.linalg.norm(vectors[0, :16]), rtol=1e-6)
    assert not np.isnan(truncate(np.zeros((1, 4), np.float32), 2)).any()
    with pytest.raises(ValueError, match="dimensions must be in"):
        truncate(vectors, 49)


def test_codec_columns_by_name(vectors):
    ranges = calibrate_int8(vectors)
    codecs = build_codecs(["float32", "float16", "int8", "binary", MatryoshkaCodec(matryoshka=[32, 8])],
                          dimensions=48, int8_ranges=ranges)
    columns = {codec.column: codec.encode(vectors) for codec in codecs}
    assert list(columns) == ["float32", "float16", "int8", "binary", "matryoshka_32", "matryoshka_8"]
    assert columns["float16"].dtype == np.float16 and columns["matryoshka_8"].shape == (300, 8)
    with pytest.raises(ValueError, match="exceeds the model's 48"):
        build_codecs([MatryoshkaCodec(matryoshka=[64])], dimensions=48)
    with pytest.raises(ValueError, match="needs calibrated ranges"):
        build_codecs(["int8"], dimensions=48)
