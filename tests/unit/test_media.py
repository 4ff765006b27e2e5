"""Media decoding: data: URIs and raw bytes in, RGB images and mono samples out, every bad input a 400."""

import base64
import io

import numpy as np
import pytest

from rayprism.platform.errors import InvalidInputError
from rayprism.platform.media import decode_audio, decode_image
from tests.media_models import SPEECH, bomb_png, digit_pngs, png_bytes, read_clip, wav_bytes

MAX_PIXELS = 40_000_000


def data_uri(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_of(item, max_pixels=MAX_PIXELS):
    return decode_image(item, 0, max_pixels=max_pixels)


def audio_of(item, sample_rate=16_000, max_seconds=30.0):
    return decode_audio(item, 0, sample_rate=sample_rate, max_seconds=max_seconds)


def test_a_png_data_uri_and_its_raw_bytes_decode_to_the_same_rgb_pixels():
    from PIL import Image

    png = digit_pngs(1)[0]
    expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    for item in (data_uri("image/png", png), png, bytearray(png), memoryview(png)):
        image = image_of(item)
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)


def test_transparent_pixels_become_white_and_other_modes_become_rgb():
    from PIL import Image

    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert np.asarray(image_of(png_bytes(clear))).tolist() == [[[255, 255, 255]] * 4] * 4
    palette = Image.new("P", (4, 4), 3)
    palette.putpalette([0, 0, 0] * 3 + [10, 20, 30])
    assert np.asarray(image_of(png_bytes(palette)))[0, 0].tolist() == [10, 20, 30]


def test_exif_orientation_is_applied():
    from PIL import Image

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (6, 2)).save(buffer, format="JPEG", exif=exif)
    assert image_of(buffer.getvalue()).size == (2, 6)


def test_pixel_count_is_checked_from_the_header_before_any_pixel_is_decoded():
    """The crafted PNGs hold no pixel data at all: only a header check can give this message."""
    with pytest.raises(InvalidInputError, match=r"input\[0\] is 5000×5000 = 25,000,000 pixels; "
                                                r"this model accepts at most 1,000,000"):
        image_of(bomb_png(5000, 5000), max_pixels=1_000_000)
    with pytest.raises(InvalidInputError, match=r"input\[0\] is too large to decode \(Image size \(10000000000 "
                                                r"pixels\).*; this model accepts at most 40,000,000 pixels"):
        image_of(data_uri("image/png", bomb_png(100_000, 100_000)))


def test_an_image_at_the_limit_is_accepted():
    assert image_of(digit_pngs(1, size=32)[0], max_pixels=32 * 32).size == (32, 32)


@pytest.mark.parametrize(
    "item, message",
    [
        ("data:image/png;base64,@@not base64@@", "data is not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "data is not valid base64"),  # bad padding
        ("data:image/png,rawtext", "not base64-encoded"),
        ("data:image/png;base64", "without a ','"),
        ("data:image/png;base64,", "is empty: no image data"),
        (b"", "is empty: no image data"),
        (data_uri("text/plain", b"hello"), "of type 'text/plain'; image inputs need an image/\\* type"),
        (data_uri("audio/wav", b"RIFF"), "of type 'audio/wav'"),
        ("data:;base64,aGVsbG8=", "of type 'text/plain'"),
        ("https://example.com/cat.png", "is a URL; this model does not fetch URLs"),
        ("HTTP://example.com/cat.png", "is a URL"),
        ("cat.png", "is a string; image inputs are data: URIs"),
        (42, "is of type int; image inputs are data: URIs"),
        (b"definitely not an image", "not an image in a format this server reads"),
        (digit_pngs(1)[0][:60], "could not be decoded as an image"),  # truncated PNG
    ],
)
def test_bad_images_are_input_errors_that_say_what_is_wrong(item, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        decode_image(item, 3, max_pixels=MAX_PIXELS)
    assert caught.value.param == "input[3]" and caught.value.http_status == 400
    assert caught.value.message.startswith("input[3] ")


@pytest.mark.parametrize("name", ["hello_world.wav", "good_morning.flac", "thank_you.ogg"])
def test_committed_clips_decode_as_soundfile_reads_them(name):
    expected, rate = read_clip(name)
    assert rate == 16_000
    samples = audio_of(data_uri("audio/" + name.rsplit(".")[-1], (SPEECH / name).read_bytes()))
    assert samples.dtype == np.float32 and np.array_equal(samples, expected)


def test_stereo_is_mixed_to_mono_and_resampled_to_the_models_rate():
    samples, rate = read_clip("hello_world.wav")
    stereo = np.stack([samples, 0.5 * samples], axis=1)
    mono = audio_of(wav_bytes(stereo, rate, subtype="FLOAT"))
    assert np.allclose(mono, 0.75 * samples, atol=1e-6)
    at_48k = audio_of(wav_bytes(samples, rate), sample_rate=48_000)
    assert len(at_48k) == 3 * len(samples)
    spectrum = np.abs(np.fft.rfft(audio_of(wav_bytes(at_48k, 48_000, subtype="FLOAT"))))
    assert np.corrcoef(spectrum, np.abs(np.fft.rfft(samples)))[0, 1] > 0.99  # and back again


def test_audio_length_is_checked_against_the_limit():
    samples, rate = read_clip("hello_world.wav")  # 1.15 s
    assert len(audio_of(wav_bytes(samples, rate), max_seconds=1.2)) == len(samples)
    with pytest.raises(InvalidInputError, match=r"input\[0\] is 1\.2 s of audio; this model accepts at most 1 s"):
        audio_of(wav_bytes(samples, rate), max_seconds=1)


@pytest.mark.parametrize(
    "item, message",
    [
        (wav_bytes(np.zeros(0), 16_000), "holds no audio samples"),
        (wav_bytes(np.array([0.1, np.nan, 0.2]), 16_000, subtype="FLOAT"), "NaN or infinite"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "could not be decoded as audio"),
        (b"not audio at all", "could not be decoded as audio"),
        (data_uri("image/png", b"x"), "of type 'image/png'; audio inputs need an audio/\\* type"),
        ("https://example.com/a.wav", "is a URL"),
        ([0.1, 0.2], "is of type list"),
    ],
)
def test_bad_audio_is_an_input_error_that_says_what_is_wrong(item, message):
    with pytest.raises(InvalidInputError, match=message) as caught:
        decode_audio(item, 1, sample_rate=16_000, max_seconds=30)
    assert caught.value.param == "input[1]" and caught.value.http_status == 400
