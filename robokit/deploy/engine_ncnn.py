"""The ``ncnn`` engine: ACT's convolutional backbone in ncnn, its transformer in ONNX Runtime.

On a CPU without wide vector units (AVX2, no AVX-512) ACT's inference is its ResNet's 3x3
convolutions plus its transformer's matrix products, and ONNX Runtime runs both near the CPU's
peak. ncnn computes 3x3 convolutions with Winograd's algorithm, which needs about a quarter of the
multiplications; ONNX Runtime has none, and OpenVINO none on such CPUs. So the backbone goes to ncnn
(its input normalised by ncnn's own per-channel routine), converted by pnnx (ncnn's own converter,
from a TorchScript trace, with fp32 weights: pnnx's default fp16 weights put the features of a
random ResNet-18 ~1e-2 off), and the rest -- input projection, transformer, heads -- is exported to
ONNX Runtime as the ``onnx`` engine does. ncnn has no batch dimension: the cameras go through the
backbone one after the other, each with all the threads.
"""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: The head in ONNX Runtime: named inputs (``features``, ``qpos``) -> outputs.
HeadRunner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
#: How long pnnx may take to convert a backbone (ResNet-18 at 480x640 takes ~10 s here).
CONVERT_TIMEOUT_S = 300


def convert_backbone(module: Any, image_hw: tuple[int, int], folder: Path) -> tuple[Path, Path]:
    """``module`` (normalised images (1, 3, H, W) -> features) as ncnn's ``.param``/``.bin`` files in
    ``folder``; RuntimeError with pnnx's last line when the conversion fails."""
    import pnnx
    import torch

    h, w = image_hw
    traced = folder / "backbone.pt"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic: not the user's concern
        torch.jit.trace(module, torch.randn(1, 3, h, w)).save(str(traced))
    param, weights = folder / "backbone.ncnn.param", folder / "backbone.ncnn.bin"
    # Every output pnnx writes is pointed into the folder (by default some land in the working
    # directory); fp16=0 keeps the weights in fp32.
    command = [pnnx.EXEC_PATH, str(traced), f"inputshape=[1,3,{h},{w}]", "fp16=0",
               f"pnnxparam={folder / 'backbone.pnnx.param'}", f"pnnxbin={folder / 'backbone.pnnx.bin'}",
               f"pnnxpy={folder / 'backbone_pnnx.py'}", f"pnnxonnx={folder / 'backbone.pnnx.onnx'}",
               f"ncnnparam={param}", f"ncnnbin={weights}", f"ncnnpy={folder / 'backbone_ncnn.py'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=CONVERT_TIMEOUT_S,
                          check=False)
    if done.returncode != 0 or not param.is_file() or not weights.is_file():
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"pnnx could not convert the backbone (exit code {done.returncode}): {last}")
    return param, weights


class NcnnBackbone:
    """The converted backbone loaded in ncnn: ``(K, 3, H, W)`` uint8 RGB images -> the ``(K, C, h, w)``
    features, one camera at a time with ``threads`` threads. The images are normalised as
    ``(pixels / 255 - mean) / std`` per channel on their way in."""

    def __init__(self, param: Path, weights: Path, threads: int, mean: np.ndarray, std: np.ndarray) -> None:
        import ncnn

        self._ncnn = ncnn
        # ncnn normalises as (pixels - a) * b.
        self._subtract = [float(m) * 255.0 for m in mean]
        self._scale = [1.0 / (255.0 * float(s)) for s in std]
        self.net = ncnn.Net()
        self.net.opt.num_threads = threads
        # fp32 throughout: on CPUs with F16C ncnn would otherwise store activations in fp16.
        for option in ("use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic", "use_bf16_storage"):
            setattr(self.net.opt, option, False)
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not load {param.name}")
        self.input_name = self.net.input_names()[0]
        self.output_name = self.net.output_names()[0]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        features = []
        for image in images:
            extractor = self.net.create_extractor()
            # A Mat over a numpy array borrows its memory without holding the array (so the array
            # is named here), and the network cannot run on borrowed memory (a crash): it gets a
            # copy in ncnn's own, normalised in place and held until the extraction is done.
            pixels = np.ascontiguousarray(image, np.float32)
            mat = self._ncnn.Mat(pixels).clone()
            mat.substract_mean_normalize(self._subtract, self._scale)
            extractor.input(self.input_name, mat)
            status, out = extractor.extract(self.output_name)
            if status != 0:
                raise RuntimeError(f"ncnn failed on the backbone (status {status})")
            features.append(np.array(out))
        return np.stack(features)


class NcnnActRunner:
    """The whole network: images uint8 (1, K, 3, H, W) and qpos (1, S) -> the head's outputs."""

    def __init__(self, backbone: NcnnBackbone, head: HeadRunner) -> None:
        self.backbone = backbone
        self.head = head

    def __call__(self, images: np.ndarray, qpos: np.ndarray) -> list[np.ndarray]:
        features = self.backbone(images[0])
        return self.head({"features": features, "qpos": qpos})


def build_ncnn_runner(split: Any, output_names: tuple[str, ...], config: Any, threads: int,
                      folder: Path) -> NcnnActRunner:
    """Convert ``split`` (a :class:`~robokit.deploy.engines.SplitNetwork`) of a policy with ``config``
    in ``folder`` and load it: the backbone into ncnn, the head (``features``, ``qpos`` ->
    ``output_names``) into ONNX Runtime. The files in ``folder`` may be deleted once this returns."""
    import torch

    from robokit.deploy.engines import OrtRunner, export_onnx

    h, w, _ = config.image_shape
    param, weights = convert_backbone(split.backbone, (h, w), folder)
    backbone = NcnnBackbone(param, weights, threads, split.mean, split.std)
    with torch.no_grad():
        features = split.backbone(torch.zeros(len(config.camera_names), 3, h, w)).numpy()
    qpos = np.zeros((1, config.state_dim), np.float32)
    head_path = folder / "head.onnx"
    export_onnx(split.head, (features, qpos), head_path, output_names, input_names=("features", "qpos"))
    return NcnnActRunner(backbone, OrtRunner(head_path, threads).run)
