"""Decode untrusted image and audio inputs, with limits checked before the expensive part.

Inputs arrive as ``data:`` URIs (the HTTP API) or raw bytes (batch jobs read files). Remote
URLs are refused here: whether to fetch them is the API layer's decision, not an encoder's.
Every failure is an :class:`~rayprism.platform.errors.InvalidInputError` naming the input
(``param="input[i]"``) and what is wrong with it; decoders' own exceptions never escape, since
any error while decoding untrusted bytes is the input's fault.

PIL, soundfile and soxr are imported where used: ``import rayprism`` stays light.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rayprism.platform.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL.Image import Image

MediaKind = Literal["image", "audio"]

_EXAMPLE_URI = {"image": "data:image/png;base64,...", "audio": "data:audio/wav;base64,..."}
_MAX_REASON_CHARS = 200


def decode_image(item: Any, index: int, *, max_pixels: int) -> Image:
    """An RGB image; refused from its header alone when it declares more than ``max_pixels`` pixels.

    Transparent pixels are composited onto white (as transformers' ``convert_rgb`` does) and EXIF
    orientation is applied, so a phone photo is embedded the way it is shown.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = media_bytes(item, index, "image")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise _invalid(index, f"is {width}×{height} = {width * height:,} pixels; "
                                      f"this model accepts at most {max_pixels:,}")
            return _to_rgb(ImageOps.exif_transpose(image))
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as error:
        # PIL's own bound, checked in Image.open before the size reaches us.
        raise _invalid(index, f"is too large to decode ({error}); this model accepts at most {max_pixels:,} pixels"
                       ) from None
    except UnidentifiedImageError:
        raise _invalid(index, "is not an image in a format this server reads (PNG, JPEG, WebP, GIF, ...)") from None
    except Exception as error:  # PIL raises many types on malformed bytes
        raise _invalid(index, f"could not be decoded as an image: {_reason(error)}") from None


def _to_rgb(image: Image) -> Image:
    from PIL import Image as PILImage

    if image.mode == "RGB":
        return image
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = PILImage.alpha_composite(PILImage.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def decode_audio(item: Any, index: int, *, sample_rate: int, max_seconds: float) -> np.ndarray:
    """Mono float32 samples at ``sample_rate``; refused when longer than ``max_seconds``.

    The length is checked from the header before any sample is decoded, and reading stops one
    frame past the limit, so a header that understates its length costs no more than an honest one.
    Channels are averaged; resampling is soxr's high quality.
    """
    import soundfile
    import soxr

    data = media_bytes(item, index, "audio")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            rate = sound.samplerate
            limit = math.floor(max_seconds * rate)
            if sound.frames > limit:
                raise _too_long(index, sound.frames / rate, max_seconds)
            samples = sound.read(frames=limit + 1, dtype="float32", always_2d=True)
    except InvalidInputError:
        raise
    except Exception as error:  # libsndfile reports malformed files as several types
        raise _invalid(index, f"could not be decoded as audio (WAV, FLAC, OGG, MP3, ...): {_reason(error)}") from None
    if len(samples) > limit:
        raise _too_long(index, len(samples) / rate, max_seconds)
    if len(samples) == 0:
        raise _invalid(index, "holds no audio samples")
    if not np.isfinite(samples).all():
        raise _invalid(index, "holds NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float32)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate)
    return mono.astype(np.float32, copy=False)


def media_bytes(item: Any, index: int, kind: MediaKind) -> bytes:
    """The bytes of a ``data:`` URI whose media type matches ``kind``, or of raw bytes."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    elif isinstance(item, str) and item[:5].lower() == "data:":
        data = _data_uri_bytes(item, index, kind)
    elif isinstance(item, str) and item[:8].lower().startswith(("http://", "https://")):
        raise _invalid(index, f"is a URL; this model does not fetch URLs: send the {kind} itself as a data: URI "
                              f"({_EXAMPLE_URI[kind]})")
    else:
        what = "a string" if isinstance(item, str) else f"of type {type(item).__name__}"
        raise _invalid(index, f"is {what}; {kind} inputs are data: URIs ({_EXAMPLE_URI[kind]}) or raw bytes")
    if not data:
        raise _invalid(index, f"is empty: no {kind} data")
    return data


def _data_uri_bytes(uri: str, index: int, kind: MediaKind) -> bytes:
    """RFC 2397: ``data:[<media type>][;<parameter>]*;base64,<data>``; only base64 payloads are taken."""
    header, comma, payload = uri[5:].partition(",")
    if not comma:
        raise _invalid(index, f"is a data: URI without a ',' before its data ({_EXAMPLE_URI[kind]})")
    media_type, *parameters = [part.strip().lower() for part in header.split(";")]
    media_type = media_type or "text/plain"  # RFC 2397's default
    if not media_type.startswith(f"{kind}/"):
        raise _invalid(index, f"is a data: URI of type {media_type!r}; {kind} inputs need an {kind}/* type "
                              f"({_EXAMPLE_URI[kind]})")
    if parameters[-1:] != ["base64"]:
        raise _invalid(index, f"is a data: URI that is not base64-encoded ({_EXAMPLE_URI[kind]})")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(index, "is a data: URI whose data is not valid base64") from None


def _too_long(index: int, seconds: float, max_seconds: float) -> InvalidInputError:
    return _invalid(index, f"is {seconds:.1f} s of audio; this model accepts at most {max_seconds:g} s")


def _reason(error: Exception) -> str:
    return (str(error) or type(error).__name__)[:_MAX_REASON_CHARS]


def _invalid(index: int, problem: str) -> InvalidInputError:
    return InvalidInputError(f"input[{index}] {problem}", param=f"input[{index}]")
