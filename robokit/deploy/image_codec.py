"""Compressed camera images on the wire: the codec a client asks for in ``hello`` and the
per-array encoding of an ``infer`` request.

A client that asks for ``jpeg`` in its hello (``image_codec: "jpeg"``) and hears the server accept it
sends each camera image as the bytes of a standard baseline JPEG file of the RGB image: an array of
dtype uint8 and shape ``(n,)``, listed in the request header's ``image_encoding`` map
(``{"images/top": "jpeg", ...}``). The server turns those arrays back into ``(H, W, 3)`` uint8 RGB
images (:func:`decode_request_images`) before it checks the request, so a compressed request is
checked exactly as a raw one. Arrays that the map does not name are raw, so a peer that knows
nothing of this (an older client or server) keeps exchanging raw frames.

A JPEG's header states the image size before any pixel is decoded, and it is checked first: a small
file cannot make the server allocate more than a raw request could carry. Imports no torch and
no zmq; OpenCV (libjpeg-turbo) is imported on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from robokit.deploy import protocol as P
from robokit.errors import ConfigError, ProtocolError

RAW = "raw"
JPEG = "jpeg"
#: Codecs this build decodes, in the order the server announces them.
CODECS = (RAW, JPEG)
#: JPEG quality when a spec gives none. At 90 a 480x640 sim frame decodes with a PSNR of 39-42 dB and
#: is 30-55x smaller than raw: small enough for 1 GbE, close enough for a policy trained on raw.
DEFAULT_JPEG_QUALITY = 90
#: Header key of an ``infer`` request that maps array names to the codec of their bytes.
ENCODING_FIELD = "image_encoding"
#: Arrays that may be sent compressed: camera images and the goal image.
IMAGE_PREFIX = "images/"
GOAL_IMAGE = "goal_image"

# JPEG markers (ITU T.81 table B.1): start of image, end of image, start of scan, and the
# start-of-frame markers, whose segment holds the image size. C4 (DHT), C8 (JPG) and CC (DAC)
# share the range without being frames.
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, _SOI}

_T = TypeVar("_T")
_R = TypeVar("_R")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _map(fn: Callable[[_T], _R], items: Sequence[_T]) -> list[_R]:
    """``fn`` over ``items``, on threads when there are several: OpenCV releases the GIL while
    libjpeg works, so two cameras take the time of one on two cores. The first item runs on the
    calling thread, which would otherwise only wait: one hand-over to a worker fewer per request."""
    global _pool
    if len(items) < 2 or PARALLEL_WORKERS < 2:
        return [fn(item) for item in items]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=PARALLEL_WORKERS - 1, thread_name_prefix="image-codec")
    rest = [_pool.submit(fn, item) for item in items[1:]]
    try:
        first = fn(items[0])
    except BaseException:
        for future in rest:
            future.cancel()
        raise
    return [first, *(future.result() for future in rest)]


#: Threads that encode or decode the images of one request (1: one after the other).
PARALLEL_WORKERS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageCodec:
    """How a client sends its camera images: ``raw`` or ``jpeg`` at a quality of 1..100."""

    name: str = RAW
    quality: int = DEFAULT_JPEG_QUALITY

    @classmethod
    def parse(cls, spec: str | ImageCodec | None) -> ImageCodec:
        """``None``/``"raw"``, ``"jpeg"`` or ``"jpeg:Q"`` (Q from 1 to 100) as a codec;
        :class:`ConfigError` naming the accepted forms otherwise."""
        if isinstance(spec, ImageCodec):
            return spec
        if spec is None:
            return cls()
        name, _, quality = str(spec).strip().lower().partition(":")
        if name == RAW and not quality:
            return cls()
        if name == JPEG:
            if not quality:
                return cls(JPEG)
            try:
                q = int(quality)
            except ValueError:
                q = 0
            if 1 <= q <= 100:
                return cls(JPEG, q)
            raise ConfigError(f"JPEG quality must be an integer from 1 to 100, got {quality!r} in {spec!r}")
        raise ConfigError(f"unknown image codec {str(spec)[:64]!r}; use raw, jpeg or jpeg:Q (Q = 1..100)")

    def __str__(self) -> str:
        return RAW if self.name == RAW else f"{self.name}:{self.quality}"

    def encode(self, image: np.ndarray) -> np.ndarray:
        """The wire form of one uint8 (H, W, 3) RGB image under this codec."""
        return image if self.name == RAW else encode_jpeg(image, self.quality)


#: Whether the first use of the codec keeps freed image buffers in the process (glibc only).
KEEP_FREED_BUFFERS = True
_malloc_tuned = False

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_buffers() -> None:
    """Keep the memory of freed image buffers in the process instead of handing it back to the OS.

    Every request allocates and frees about a megabyte per camera (the swapped-channel copy in the
    client, the decoded image in the server). glibc returns such memory to the kernel as soon as
    it is freed (the heap is trimmed, or the block was its own mmap), so the next request touches
    fresh pages and pays a page fault for every 4 KiB of them, which costs more than the decoding
    itself on a virtual machine. These limits are glibc's own upper bounds for its adaptive ones:
    blocks up to 32 MiB come from the heap, and up to 64 MiB of free heap is kept.
    """
    global _malloc_tuned
    if _malloc_tuned or not KEEP_FREED_BUFFERS:
        return
    _malloc_tuned = True
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded, glibc's among them
        libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
    except (OSError, AttributeError):
        pass  # not glibc after all: its defaults stay


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> np.ndarray:
    """A baseline JPEG file (4:2:0) of a uint8 (H, W, 3) RGB image, as a uint8 array of its bytes."""
    import cv2

    _keep_freed_buffers()

    # libjpeg takes BGR from OpenCV; the file holds standard YCbCr, so any decoder reads RGB back.
    # The channels are swapped with mixChannels, which runs on the calling thread: cvtColor would
    # wake OpenCV's worker pool, whose threads keep spinning after the call and take the cores that
    # the other camera's encoder and the server's decoder need.
    bgr = np.empty(image.shape, np.uint8)
    cv2.mixChannels([np.ascontiguousarray(image)], [bgr], [0, 2, 1, 1, 2, 0])
    ok, buf = cv2.imencode(".jpg", bgr, (cv2.IMWRITE_JPEG_QUALITY, int(quality)))
    if not ok:
        raise ConfigError(f"OpenCV could not encode a {image.shape} {image.dtype} image as JPEG")
    return buf.reshape(-1)


def jpeg_size(data: np.ndarray | bytes, name: str = "image") -> tuple[int, int, int]:
    """(height, width, components) from a JPEG file's frame header, without decoding it.

    :class:`ProtocolError` (``bad_image``) if ``data`` is not a complete JPEG file: no start or end
    marker (a truncated file), a segment running past the end, no frame header before the scan.
    """
    buf = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1).data
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != _SOI:
        raise ProtocolError(f"array '{name}' is not a JPEG file (it does not start with FF D8)", P.BAD_IMAGE)
    if buf[n - 2] != 0xFF or buf[n - 1] != _EOI:
        raise ProtocolError(f"array '{name}' is a truncated JPEG file (it does not end with FF D9)", P.BAD_IMAGE)
    i = 2
    while i + 1 < n:
        if buf[i] != 0xFF:
            raise ProtocolError(f"array '{name}': corrupt JPEG header (no marker at byte {i})", P.BAD_IMAGE)
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (_EOI, _SOS) or i + 4 > n:
            break
        length = (buf[i + 2] << 8) | buf[i + 3]
        if length < 2 or i + 2 + length > n:
            raise ProtocolError(f"array '{name}': corrupt JPEG header (segment at byte {i} runs past the end)",
                                P.BAD_IMAGE)
        if marker in _SOF:
            if length < 8:
                break
            height, width = (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8]
            return height, width, buf[i + 9]
        i += 2 + length
    raise ProtocolError(f"array '{name}': JPEG file without a frame header (SOF) before its image data",
                        P.BAD_IMAGE)


def decode_jpeg(data: np.ndarray, name: str = "image", max_side: int = 8192) -> np.ndarray:
    """The uint8 (H, W, 3) RGB image of a JPEG file's bytes.

    Checks the size the header states before decoding (``too_large`` over ``max_side``); anything
    that does not decode is :class:`ProtocolError` ``bad_image``. JPEG has no checksum: bit errors
    inside the compressed data decode to a damaged picture, not to an error.
    """
    import cv2

    _keep_freed_buffers()
    height, width, components = jpeg_size(data, name)
    if height == 0 or width == 0:
        raise ProtocolError(f"array '{name}': JPEG of size {height}x{width} (a zero side, or a height "
                            "given after the scan, which is not supported)", P.BAD_IMAGE)
    if max(height, width) > max_side:
        raise ProtocolError(f"array '{name}' is a {height}x{width} JPEG; images may be at most {max_side} "
                            "pixels a side", P.TOO_LARGE)
    if components not in (1, 3):
        raise ProtocolError(f"array '{name}': JPEG with {components} colour components; send RGB (3) or "
                            "grey (1)", P.BAD_IMAGE)
    buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    # OpenCV 4.10+ has libjpeg write RGB itself, which saves a pass over the decoded image.
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR if rgb_flag is None else rgb_flag)
    if image is None or image.shape[:2] != (height, width):
        raise ProtocolError(f"array '{name}': the JPEG data could not be decoded", P.BAD_IMAGE)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if rgb_flag is None else image


def decode_request_images(msg: P.Message, max_side: int, max_bytes: int) -> int:
    """Replace the arrays the request's ``image_encoding`` map names by their decoded images.

    Returns how many were decoded. The decoded images together may hold at most ``max_bytes``
    (the raw request limit), checked from the JPEG headers before any is decoded.
    :class:`ProtocolError` with a code naming the problem: ``bad_request`` (the map itself, or a
    name that is not an image), ``unsupported_codec``, ``missing_array``, ``wrong_dtype``,
    ``wrong_shape`` (not a 1-D byte array), ``bad_image``, ``too_large``.
    """
    encoding = msg.header.get(ENCODING_FIELD)
    if encoding is None:
        return 0
    if not isinstance(encoding, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in encoding.items()):
        raise ProtocolError(f"'{ENCODING_FIELD}' must be a map from array name to codec name", P.BAD_REQUEST)
    todo: list[tuple[str, np.ndarray]] = []
    total = 0
    for name, codec in encoding.items():
        if not (name.startswith(IMAGE_PREFIX) or name == GOAL_IMAGE):
            raise ProtocolError(f"'{ENCODING_FIELD}' names array '{name[:64]}'; only images/<camera> and "
                                f"{GOAL_IMAGE} may be encoded", P.BAD_REQUEST)
        if codec == RAW:
            continue
        if codec not in CODECS:
            raise ProtocolError(f"array '{name[:64]}' is encoded as {codec[:32]!r}; this server decodes "
                                f"{', '.join(CODECS)}", P.UNSUPPORTED_CODEC)
        data = P.require_array(msg.arrays, name, "uint8", (None,))
        height, width, _ = jpeg_size(data, name)
        if max(height, width) > max_side:
            raise ProtocolError(f"array '{name}' is a {height}x{width} JPEG; images may be at most {max_side} "
                                "pixels a side", P.TOO_LARGE)
        total += height * width * 3
        todo.append((name, data))
    if total > max_bytes:
        raise ProtocolError(f"the JPEG images of this request decode to {total} bytes, more than the limit "
                            f"of {max_bytes} bytes a request may carry", P.TOO_LARGE)
    images = _map(lambda item: decode_jpeg(item[1], item[0], max_side), todo)
    msg.arrays.update((name, image) for (name, _), image in zip(todo, images))
    return len(todo)


def encode_images(arrays: dict[str, np.ndarray], codec: ImageCodec) -> dict[str, Any]:
    """Encode, in place, the image arrays of an ``infer`` request (``images/*`` and ``goal_image``);
    returns the header fields that say so (empty for raw)."""
    if codec.name == RAW:
        return {}
    names = [name for name in arrays if name.startswith(IMAGE_PREFIX) or name == GOAL_IMAGE]
    arrays.update(zip(names, _map(lambda name: codec.encode(arrays[name]), names)))
    return {ENCODING_FIELD: dict.fromkeys(names, codec.name)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images of one shape (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def hello_reply_fields(hello: Mapping[str, Any]) -> dict[str, Any]:
    """The codec fields of the server's reply to a ``hello`` request header.

    ``image_codecs`` lists what the server decodes; ``image_codec`` is the one the client asked for
    (``raw`` when it asked for none, as an older client does). A codec the server does not decode
    is refused with ``unsupported_codec``, so the client learns it before its first ``infer``.
    """
    asked = hello.get("image_codec", RAW)
    if not isinstance(asked, str):
        raise ProtocolError(f"hello field 'image_codec' must be a string, got {type(asked).__name__}",
                            P.BAD_REQUEST)
    if asked not in CODECS:
        raise ProtocolError(f"this server decodes images as {', '.join(CODECS)}, not {asked[:32]!r}; "
                            "choose one of those", P.UNSUPPORTED_CODEC)
    return {"image_codecs": list(CODECS), "image_codec": asked}
