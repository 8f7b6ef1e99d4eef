"""CPU inference engines for serving: a policy's network exported to ONNX Runtime, OpenVINO or ncnn.

:func:`accelerate` takes a loaded policy and returns an object the policy server (and the in-process
runner) uses exactly like the policy: ``config``, ``predict_chunk(obs) -> (chunk, extras)``,
``reset()``, and every other attribute passed through to the policy. Only the network runs in the
engine; reading the observation, normalising and de-normalising stay in numpy, with the same checks
as the torch path.

The export happens at serve time from the weights in memory, so a checkpoint needs no second file
and cannot go out of step with one. Before the engine is used, its outputs on random inputs are
compared with torch's on the same network; a difference above the tolerance (1e-4 on the
normalised outputs, fp32) refuses the engine. Whenever the engine cannot be used -- a policy kind or
configuration without an exporter here (instruction-following policies), a policy on a GPU, a failed
export, a failed check -- the policy is served with torch and one ``logging`` warning says why.

Supported: ACT (single task, no object pointer) and CNN-MLP; ``ncnn`` runs ACT only (its backbone in
ncnn, the transformer in ONNX Runtime: see :mod:`robokit.deploy.engine_ncnn`). ONNX Runtime comes
with the ``cpu-infer`` extra (``pip install 'robokit[cpu-infer]'``), ncnn and its converter with the
``ncnn`` extra (``pip install 'robokit[ncnn]'``, which includes ``cpu-infer``), OpenVINO is used
where it is installed; nothing here imports them until asked.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import UserError
from robokit.policies.preprocess import check_qpos, stack_camera_images

log = logging.getLogger(__name__)

#: ``--engine`` choices; ``torch`` serves the policy as it is.
ENGINES = ("torch", "onnx", "openvino", "ncnn")
EXTRA = "cpu-infer"
NCNN_EXTRA = "ncnn"  # ncnn and pnnx on top of cpu-infer: kept apart, as ncnn's wheels need glibc >= 2.28
#: Largest difference from torch, on the normalised outputs, at which an engine is accepted.
DEFAULT_TOLERANCE = 1e-4
# Python modules each engine needs, and the PyPI package that brings each: the engine, and ``onnx``
# for torch's exporter (every engine reads an ONNX file it writes, ncnn for all but the backbone;
# ``onnxscript``, for torch's newer exporter, is optional). The cpu-infer extra holds ONNX Runtime:
# within 10% of OpenVINO on full ACT here, in less than half the install (78 MB against 180 MB);
# OpenVINO is used where it is installed.
_REQUIRES: dict[str, tuple[tuple[str, str], ...]] = {
    "onnx": (("onnxruntime", "onnxruntime"), ("onnx", "onnx")),
    "openvino": (("openvino", "openvino"), ("onnx", "onnx")),
    # ACT's backbone in ncnn (converted by pnnx), the rest in ONNX Runtime.
    "ncnn": (("ncnn", "ncnn"), ("pnnx", "pnnx"), ("onnxruntime", "onnxruntime"), ("onnx", "onnx")),
}
_INSTALL = {"onnx": f"pip install 'robokit[{EXTRA}]'", "openvino": f"pip install 'robokit[{EXTRA}]' openvino",
            "ncnn": f"pip install 'robokit[{NCNN_EXTRA}]'"}

# Loggers of the exporter stack that report routine notes as warnings ("skipping constant folding").
_EXPORT_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._export", "torch.fx",
                   "torch._dynamo")


class Unsupported(Exception):
    """The policy cannot be exported here; the message says why (it ends up in the warning)."""


def check_engine(engine: str) -> str:
    """``engine`` lower-cased if it is one of :data:`ENGINES` and its packages import; else a
    UserError naming the choices or the extra to install."""
    name = str(engine).strip().lower()
    if name not in ENGINES:
        raise UserError(f"unknown inference engine '{engine}'; choose one of: {', '.join(ENGINES)}")
    missing = [package for module, package in _REQUIRES.get(name, ()) if not _importable(module)]
    if missing:
        raise UserError(f"the {name} engine needs {', '.join(missing)}, not installed here: "
                        f"{_INSTALL[name]}  (or serve with --engine torch)")
    return name


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 -- not installed, or its native library does not load (OSError)
        return False
    return True


# -- what is exported, per policy kind ------------------------------------------------------------
@dataclass
class SplitNetwork:
    """A network as its image backbone and the rest.

    ``backbone(x (N, 3, H, W))`` maps images normalised as ``(pixels / 255 - mean) / std`` (per RGB
    channel) to features; ``head(features (K, C, h, w) of the K cameras, qpos (1, S))`` returns the
    network's outputs.
    """

    backbone: Any  # torch.nn.Module
    head: Any  # torch.nn.Module
    mean: np.ndarray
    std: np.ndarray


@dataclass
class ExportSpec:
    """One policy's network as an exportable module and how its outputs become ``predict_chunk``'s.

    ``module(images uint8 (1, K, 3, H, W), qpos float32 (1, S) normalised)`` returns the network's
    normalised outputs; ``finish(outputs)`` turns the engine's numpy outputs into ``(chunk, extras)``.
    ``split()``, where the network has one, gives the same network cut after its image backbone.
    """

    module: Any  # torch.nn.Module
    output_names: tuple[str, ...]
    finish: Callable[[list[np.ndarray]], tuple[np.ndarray, dict[str, Any]]]
    split: Callable[[], SplitNetwork] | None = None  # made only when asked: it copies the backbone


def export_spec(policy: Any) -> ExportSpec:
    """The :class:`ExportSpec` of ``policy``, or :class:`Unsupported` saying why there is none."""
    import torch

    kind = getattr(policy, "name", "") or type(policy).__name__
    device = getattr(policy, "device", None)
    if device is not None and torch.device(device).type != "cpu":
        raise Unsupported(f"the policy is on {device}; the engines run on the CPU (serve with --device cpu)")
    if kind == "act":
        return _act_spec(policy)
    if kind == "cnnmlp":
        return _cnnmlp_spec(policy)
    raise Unsupported(f"no exporter for '{kind}' policies")


def _denormalize(policy: Any, actions: np.ndarray) -> np.ndarray:
    std = policy.action_std.detach().cpu().numpy()
    mean = policy.action_mean.detach().cpu().numpy()
    return (actions * std + mean).astype(np.float32)


def _act_spec(policy: Any) -> ExportSpec:
    import torch
    from torch import nn

    cfg = policy.config
    if cfg.multi_task:
        raise Unsupported("this ACT follows instructions (its text encoder is not exported)")
    if cfg.object_pointer:
        raise Unsupported("this ACT has an object pointer (not exported)")
    model = policy.model
    fused = policy._fused.get(model.backbone)  # the inference copy torch serves with

    class ACTGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.fused = fused

        def forward(self, images: torch.Tensor, qpos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            latent = torch.zeros(qpos.shape[0], cfg.latent_dim, dtype=qpos.dtype)  # z = 0 at inference
            actions, done_logits, _ = self.model.decode(images, qpos, latent, backbone=self.fused)
            return actions, done_logits

    def finish(outputs: list[np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        # Mirrors ACTPolicy.predict_chunk's extras (a test holds the two together).
        chunk = _denormalize(policy, outputs[0][0])
        extras: dict[str, Any] = {}
        if cfg.done_weight > 0:
            done = (1.0 / (1.0 + np.exp(-outputs[1][0].astype(np.float64)))).astype(np.float32)
            extras["done"] = float(done[min(1, len(done) - 1)])
            extras["done_chunk"] = done
        return chunk, extras

    class ACTHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, features: torch.Tensor, qpos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            latent = torch.zeros(qpos.shape[0], cfg.latent_dim, dtype=qpos.dtype)
            return self.model.decode_features(features, qpos, latent)  # type: ignore[no-any-return]

    def split() -> SplitNetwork:
        normalizer = model.image_normalizer
        # The converter traces the default layout (the served copy is channels-last).
        backbone = copy.deepcopy(fused).to(memory_format=torch.contiguous_format).eval()
        return SplitNetwork(backbone, ACTHead().eval(), normalizer.mean.flatten().numpy().copy(),
                            normalizer.std.flatten().numpy().copy())

    return ExportSpec(ACTGraph().eval(), ("actions", "done_logits"), finish, split=split)


def _cnnmlp_spec(policy: Any) -> ExportSpec:
    import torch
    from torch import nn

    model = policy.model
    fused = nn.ModuleList(policy._fused.get(b) for b in model.backbones)

    class CNNMLPGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.fused = fused

        def forward(self, images: torch.Tensor, qpos: torch.Tensor) -> torch.Tensor:
            return self.model(images, qpos, list(self.fused))

    def finish(outputs: list[np.ndarray]) -> tuple[np.ndarray, dict[str, Any]]:
        return _denormalize(policy, outputs[0][0])[None], {}

    return ExportSpec(CNNMLPGraph().eval(), ("actions",), finish)


# -- export and engines ---------------------------------------------------------------------------
def example_inputs(config: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (images uint8 (1, K, 3, H, W), normalised qpos float32 (1, S)) for ``config``."""
    rng = np.random.default_rng(seed)
    h, w, _ = config.image_shape
    images = rng.integers(0, 256, (1, len(config.camera_names), 3, h, w), dtype=np.uint8)
    qpos = rng.standard_normal((1, config.state_dim)).astype(np.float32)
    return images, qpos


def export_onnx(module: Any, inputs: tuple[np.ndarray, ...], path: Path, output_names: tuple[str, ...],
                input_names: tuple[str, ...] = ("images", "qpos")) -> None:
    """Write ``module`` traced on ``inputs`` (static shapes: batch 1, the policy's cameras and image
    size) as ONNX to ``path``, its inputs and outputs named as given. The exporters' own chatter is
    silenced: the caller logs one line.

    torch's TorchScript-based exporter goes first: it exports full ACT in about two thirds of the
    time of the ``torch.export``-based one, a tiny model in a tenth, and needs no further package.
    It is deprecated, so where it fails (or is gone) the newer exporter (``onnxscript``) is tried.
    """
    import torch

    args = tuple(torch.from_numpy(a) for a in inputs)
    with torch.inference_mode():
        # One eager call first: the model fills its caches (image positions) with real tensors,
        # which the exporter then takes as constants instead of tracing their creation.
        module(*args)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet_loggers(), torch.no_grad():
        warnings.simplefilter("ignore")
        inputs_named, outputs_named = list(input_names), list(output_names)
        try:
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=inputs_named,
                              output_names=outputs_named)
        except Exception:
            if not _importable("onnxscript"):
                raise
            torch.onnx.export(module, args, str(path), dynamo=True, verbose=False, input_names=inputs_named,
                              output_names=outputs_named)


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """The exporter's and optimiser's notes at errors only, for the duration of an export."""
    loggers = [logging.getLogger(name) for name in _EXPORT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class OrtRunner:
    """An ONNX file loaded in ONNX Runtime on the CPU with ``threads`` threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one request at a time: parallelism goes inside the ops
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its optimiser notes are not the user's concern
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the file's order, for the named inputs in ``feed``."""
        return list(self.session.run(None, feed))

    def __call__(self, images: np.ndarray, qpos: np.ndarray) -> list[np.ndarray]:
        return self.run({"images": images, "qpos": qpos})


class _OpenVinoRunner:
    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise pick bf16 by itself.
        compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        self.outputs = list(compiled.outputs)
        self.request = compiled.create_infer_request()

    def __call__(self, images: np.ndarray, qpos: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({"images": images, "qpos": qpos})
        return [np.asarray(result[o]) for o in self.outputs]


def build_runner(engine: str, spec: ExportSpec, config: Any, threads: int,
                 ) -> Callable[[np.ndarray, np.ndarray], list[np.ndarray]]:
    """Export ``spec.module`` (or, for ncnn, ``spec.split``) and load it into ``engine`` with
    ``threads`` threads."""
    if engine == "ncnn":
        return _build_ncnn(spec, config, threads)
    with tempfile.TemporaryDirectory(prefix="robokit-export-") as folder:
        path = Path(folder) / "policy.onnx"
        export_onnx(spec.module, example_inputs(config), path, spec.output_names)
        # Both engines read the weights while loading; the files can go afterwards.
        return OrtRunner(path, threads) if engine == "onnx" else _OpenVinoRunner(path, threads)


def _build_ncnn(spec: ExportSpec, config: Any, threads: int,
                ) -> Callable[[np.ndarray, np.ndarray], list[np.ndarray]]:
    """The ncnn runner of ``spec.split``, or Unsupported for a network without one."""
    if spec.split is None:
        raise Unsupported("the ncnn engine runs ACT only")
    from robokit.deploy.engine_ncnn import build_ncnn_runner

    with tempfile.TemporaryDirectory(prefix="robokit-export-") as folder:
        return build_ncnn_runner(spec.split(), spec.output_names, config, threads, Path(folder))


def max_difference(spec: ExportSpec, runner: Callable[[np.ndarray, np.ndarray], list[np.ndarray]],
                   config: Any, samples: int = 2) -> float:
    """Largest absolute difference between torch and the engine over all outputs of ``samples``
    random inputs (seeded, so a refusal can be reproduced)."""
    import torch

    worst = 0.0
    for seed in range(samples):
        images, qpos = example_inputs(config, seed=1000 + seed)
        with torch.inference_mode():
            expected = spec.module(torch.from_numpy(images), torch.from_numpy(qpos))
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = runner(images, qpos)
        if len(got) != len(expected):
            return float("inf")
        for e, g in zip(expected, got, strict=True):
            e_np = e.float().numpy()
            if g.shape != e_np.shape or not np.all(np.isfinite(g)):
                return float("inf")
            worst = max(worst, float(np.max(np.abs(g.astype(np.float32) - e_np))))
    return worst


class EnginePolicy:
    """A policy whose network runs in an inference engine; behaves as the policy for the server.

    ``predict_chunk`` reads the observation as the torch path does and gives the same chunk and
    extras. A request for attention maps is answered by the torch policy (the exported graph has
    none). Any other attribute is the wrapped policy's.
    """

    def __init__(self, policy: Any, engine: str, spec: ExportSpec,
                 runner: Callable[[np.ndarray, np.ndarray], list[np.ndarray]], max_error: float) -> None:
        self.policy = policy
        self.engine = engine
        self.max_error = max_error
        self._spec = spec
        self._runner = runner
        self._qpos_mean = policy.qpos_mean.detach().cpu().numpy()
        self._qpos_std = policy.qpos_std.detach().cpu().numpy()

    @property
    def config(self) -> Any:
        return self.policy.config

    def predict_chunk(self, obs: dict[str, Any], capture_attention: bool = False,
                      ) -> tuple[np.ndarray, dict[str, Any]]:
        """Action chunk float32 (chunk_size, action_dim), de-normalised, and the policy's extras."""
        if capture_attention:
            return self.policy.predict_chunk(obs, capture_attention=True)  # type: ignore[no-any-return]
        images = stack_camera_images(obs, self.config)[None]
        qpos = ((check_qpos(obs, self.config) - self._qpos_mean) / self._qpos_std).astype(np.float32)[None]
        return self._spec.finish(self._runner(images, qpos))

    def reset(self) -> None:
        """Clear per-episode state (the exported policies keep none; the policy's own reset runs)."""
        self.policy.reset()

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set above: name, device, norm stats, flags the server reads.
        if name == "policy":  # not yet set (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.policy, name)

    def __repr__(self) -> str:
        return f"EnginePolicy({getattr(self.policy, 'name', type(self.policy).__name__)}, engine={self.engine})"


def accelerate(policy: Any, engine: str = "torch", *, threads: int | None = None,
               tolerance: float = DEFAULT_TOLERANCE) -> Any:
    """``policy`` served through ``engine`` (see :data:`ENGINES`), or ``policy`` itself.

    ``torch`` returns the policy unchanged. ``onnx``/``openvino``/``ncnn`` export its network, load
    it with ``threads`` threads (default: torch's thread count) and compare it with torch on random
    inputs; an unsupported policy (for ``ncnn``: any but ACT), a failed export or a difference above
    ``tolerance`` returns the policy itself after one warning. An unknown engine, or one whose
    packages are missing, is a UserError (the message names the extra to install).
    """
    name = check_engine(engine)
    if name == "torch":
        return policy
    import torch

    t0 = time.perf_counter()
    try:
        spec = export_spec(policy)
        runner = build_runner(name, spec, policy.config, threads or torch.get_num_threads())
        error = max_difference(spec, runner, policy.config)
    except Unsupported as exc:
        log.warning("--engine %s: %s; serving with torch", name, exc)
        return policy
    except Exception as exc:  # noqa: BLE001 -- any exporter or engine failure leaves torch serving
        log.warning("--engine %s: export failed (%s: %s); serving with torch", name, type(exc).__name__,
                    str(exc).splitlines()[0][:300] if str(exc) else "")
        return policy
    if not error <= tolerance:  # also refuses NaN
        log.warning("--engine %s: outputs differ from torch by %.3g (> %.0e); serving with torch",
                    name, error, tolerance)
        return policy
    log.info("--engine %s: exported and checked in %.1f s (max difference from torch %.2g)", name,
             time.perf_counter() - t0, error)
    return EnginePolicy(policy, name, spec, runner, error)
