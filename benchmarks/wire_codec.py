"""The JPEG codec side of ``wire_link.py``: bytes, PSNR and times per quality on sim frames, and the
encode + decode time of a 2-camera request one camera after the other against on threads."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def codec_table(frames: list[dict[str, np.ndarray]], qualities: tuple[int, ...]) -> list[dict[str, Any]]:
    """Bytes, PSNR and times per frame for each quality, with OpenCV and (if installed) simplejpeg."""
    from robokit.deploy.image_codec import decode_jpeg, encode_jpeg, psnr

    coders: dict[str, tuple[Callable, Callable]] = {"opencv": (encode_jpeg, decode_jpeg)}
    with contextlib.suppress(ImportError):
        import simplejpeg

        def sj_encode(image: np.ndarray, quality: int) -> bytes:
            return simplejpeg.encode_jpeg(image, quality, colorspace="RGB", colorsubsampling="420")

        def sj_decode(data: bytes) -> np.ndarray:
            return simplejpeg.decode_jpeg(data, colorspace="RGB")

        coders["simplejpeg"] = (sj_encode, sj_decode)
    images = [img for f in frames for img in f.values()]
    rows = []
    for lib, (enc, dec) in coders.items():
        for q in qualities:
            encoded = [enc(img, q) for img in images]
            decoded = [dec(e) for e in encoded]
            scores = [psnr(a, b) for a, b in zip(images, decoded)]
            rows.append({"library": lib, "quality": q,
                         "bytes_mean": float(np.mean([len(e) for e in encoded])),
                         "ratio": float(images[0].nbytes / np.mean([len(e) for e in encoded])),
                         "psnr_mean": float(np.mean(scores)), "psnr_min": float(np.min(scores)),
                         "encode_ms": median_ms(functools.partial(enc, quality=q), images),
                         "decode_ms": median_ms(dec, encoded)})
    return rows


def median_ms(fn: Callable[[Any], Any], items: list[Any]) -> float:
    """Median time of ``fn(item)`` over ``items``, each timed once after one untimed call."""
    fn(items[0])
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def pair_ms(frames: list[dict[str, np.ndarray]], quality: int) -> dict[str, float]:
    """Encode + decode of a 2-camera request's images, one after the other and on threads."""
    from robokit.deploy import image_codec as C
    from robokit.deploy.protocol import Message

    def both(frame: dict[str, np.ndarray]) -> None:
        arrays = {f"images/{c}": img for c, img in frame.items()}
        fields = C.encode_images(arrays, C.ImageCodec(C.JPEG, quality))
        C.decode_request_images(Message("infer", fields, arrays), 8192, 1 << 30)

    out = {}
    workers = C.PARALLEL_WORKERS
    for name, n in (("serial", 1), ("threads", max(2, workers))):
        C.PARALLEL_WORKERS = n
        out[f"{name}_ms"] = median_ms(both, frames)
    C.PARALLEL_WORKERS = workers
    return out
