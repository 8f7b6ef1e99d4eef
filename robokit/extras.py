"""Which optional extra brings which import, and the one-line error when one is missing.

``pip install robokit`` is the torch-free core (hardware, record, replay, inspect, the deploy
client): a robot PC that only records installs in seconds instead of pulling gigabytes of CUDA
libraries. Commands that need more import it lazily, inside the function that uses it; when that
import fails the CLI turns the :class:`ModuleNotFoundError` into :class:`MissingExtra`, one line
that names the extra to install.
"""

from __future__ import annotations

from robokit.errors import UserError

#: top-level module -> (what a user knows it as, the robokit extra that installs it)
EXTRA_OF_MODULE: dict[str, tuple[str, str]] = {
    "torch": ("torch", "train"),
    "torchvision": ("torch", "train"),
    "pyarrow": ("pyarrow", "lerobot"),
    "av": ("PyAV", "lerobot"),
    "franky": ("franky", "franka"),
    "evdev": ("evdev", "teleop"),
    "rerun": ("rerun-sdk", "view"),
    "onnx": ("ONNX", "cpu-infer"),
    "onnxruntime": ("ONNX Runtime", "cpu-infer"),
    "openvino": ("OpenVINO", "cpu-infer"),
}


class MissingExtra(UserError):
    """A command needs a package from an optional extra that is not installed."""

    def __init__(self, what: str, package: str, extra: str) -> None:
        super().__init__(f"{what} needs {package}: pip install 'robokit[{extra}]'")
        self.package = package
        self.extra = extra


def missing_extra(exc: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """The :class:`MissingExtra` for a failed import, or ``None`` when no extra provides it.

    ``what`` names the thing that needed it (e.g. ``"robokit train"``). Only the top-level module
    counts: a missing ``torch._C`` is a broken torch, not a missing extra.
    """
    name = exc.name or ""
    if name not in EXTRA_OF_MODULE:
        return None
    package, extra = EXTRA_OF_MODULE[name]
    return MissingExtra(what, package, extra)

