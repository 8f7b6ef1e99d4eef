"""Where a rerun recording goes: a local viewer, a viewer on another machine, the web viewer, a file.

Shared by the live view of ``record``/``deploy``/``replay`` (:mod:`robokit.viz.live_view`) and by
``robokit view`` (:mod:`robokit.commands.view_cmd`). The rerun SDK is the optional extra
``robokit[view]``; it is imported only when a view is asked for.

Targets (``--view``):

* ``spawn`` - start a viewer on this machine (needs a display) and stream to it;
* ``connect[:ADDR]`` - stream to a viewer already running elsewhere (``rerun`` on the laptop);
  ADDR is ``HOST[:PORT]`` (port 9876) or a full ``rerun+http://HOST:PORT/proxy`` URL;
* ``web[:WEB_PORT[:GRPC_PORT]]`` - serve the web viewer from this process (a headless robot PC):
  open ``http://ROBOT:9090`` in a browser (ports 9090 and 9876 by default);
* ``save:FILE.rrd`` - write a recording file to open later with ``rerun FILE.rrd``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np

from robokit.errors import UserError

__all__ = ["DEFAULT_GRPC_PORT", "DEFAULT_WEB_PORT", "VIEW_INSTALL_HINT", "ViewTarget", "ViewerUnreachable",
           "chunk_strips", "connect_url", "encoded_image", "import_rerun", "joint_names", "open_sink"]

log = logging.getLogger(__name__)

VIEW_INSTALL_HINT = "pip install 'robokit[view]'"
DEFAULT_GRPC_PORT = 9876
DEFAULT_WEB_PORT = 9090
MODES = ("spawn", "connect", "web", "save")
TARGET_FORMS = "spawn | connect[:HOST[:PORT]] | web[:WEB_PORT[:GRPC_PORT]] | save:FILE.rrd"


class ViewerUnreachable(OSError):
    """The viewer to stream to cannot be reached (or started)."""


def import_rerun() -> ModuleType:
    """The rerun SDK module, or a :class:`UserError` that says which extra to install."""
    try:
        import rerun
    except ImportError:
        raise UserError(f"the live view and `robokit view` need the rerun SDK: {VIEW_INSTALL_HINT} "
                        "(or pip install rerun-sdk)") from None
    return rerun


@dataclass(frozen=True)
class ViewTarget:
    """A parsed view target (see the module docs): ``mode`` and its address, port or file."""

    mode: str
    address: str | None = None  # connect: the gRPC URL
    path: Path | None = None  # save
    web_port: int = DEFAULT_WEB_PORT
    grpc_port: int = DEFAULT_GRPC_PORT

    @classmethod
    def parse(cls, text: str) -> ViewTarget:
        """Parse ``--view``'s value; one clear :class:`UserError` line for anything else."""
        mode, _, rest = (text or "").strip().partition(":")
        mode = mode.lower()
        if mode not in MODES:
            raise UserError(f"--view {text!r}: expected {TARGET_FORMS}")
        if mode == "spawn":
            if rest:
                raise UserError(f"--view {text!r}: spawn takes no address (use connect:HOST to reach another viewer)")
            return cls("spawn")
        if mode == "connect":
            return cls("connect", address=connect_url(rest))
        if mode == "save":
            if not rest or not rest.endswith(".rrd"):
                raise UserError(f"--view {text!r}: give the file to write, e.g. save:run.rrd")
            return cls("save", path=Path(rest))
        ports = [p for p in rest.split(":") if p] if rest else []
        if len(ports) > 2 or not all(p.isdigit() and 0 < int(p) < 65536 for p in ports):
            raise UserError(f"--view {text!r}: expected web, web:WEB_PORT or web:WEB_PORT:GRPC_PORT")
        web = int(ports[0]) if ports else DEFAULT_WEB_PORT
        grpc = int(ports[1]) if len(ports) > 1 else DEFAULT_GRPC_PORT
        if web == grpc:
            raise UserError(f"--view {text!r}: the web page and the gRPC stream need two different ports")
        return cls("web", web_port=web, grpc_port=grpc)

    def web_url(self, host: str) -> str:
        """The web viewer's address on ``host``, with the stream to open (the page does not find it
        by itself)."""
        stream = quote(f"rerun+http://{host}:{self.grpc_port}/proxy", safe="")
        return f"http://{host}:{self.web_port}/?url={stream}"

    def describe(self) -> str:
        """Where the view goes, in words (for the console)."""
        if self.mode == "save":
            return f"saving the view to {self.path}"
        if self.mode == "connect":
            return f"streaming the view to the viewer at {self.address}"
        if self.mode == "web":
            return (f"web viewer at {self.web_url(socket.gethostname())} (from another machine over ssh: "
                    f"ssh -L {self.web_port}:localhost:{self.web_port} -L {self.grpc_port}:localhost:"
                    f"{self.grpc_port} HOST, then open {self.web_url('localhost')})")
        return "streaming the view to a local rerun viewer"


def connect_url(address: str) -> str:
    """``HOST[:PORT]`` or a rerun URL -> the gRPC URL rerun connects to ('' -> this machine, port 9876)."""
    address = address.strip()
    if not address:
        return f"rerun+http://127.0.0.1:{DEFAULT_GRPC_PORT}/proxy"
    if "://" in address:
        parsed = urlparse(address)
        if not parsed.hostname or not parsed.scheme.startswith("rerun"):
            raise UserError(f"--view connect:{address}: expected HOST[:PORT] or rerun+http://HOST:PORT/proxy")
        return address
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    if not port:
        host, port = address, str(DEFAULT_GRPC_PORT)
    if not host or not port.isdigit():
        raise UserError(f"--view connect:{address}: expected HOST[:PORT], e.g. connect:laptop.local:9876")
    return f"rerun+http://{host}:{port}/proxy"


def _probe(url: str, timeout_s: float) -> None:
    """Raise :class:`ViewerUnreachable` unless something accepts TCP connections at ``url``.

    rerun itself would wait ~5 s for an absent viewer and then log errors from its own threads; a
    quick probe gives one clear warning instead.
    """
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or DEFAULT_GRPC_PORT
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ViewerUnreachable(f"no rerun viewer at {host}:{port} ({exc.strerror or exc}); start one there with "
                                f"`rerun` (it listens on port {DEFAULT_GRPC_PORT})") from None


def open_sink(rec: Any, target: ViewTarget, probe_timeout_s: float = 1.0) -> None:
    """Point the recording stream ``rec`` at ``target``; :class:`ViewerUnreachable` if it cannot be."""
    rr = import_rerun()
    if target.mode == "save":
        path = target.path if target.path is not None else Path("view.rrd")
        path.parent.mkdir(parents=True, exist_ok=True)
        rec.save(str(path))
    elif target.mode == "connect":
        _probe(target.address or connect_url(""), probe_timeout_s)
        rec.connect_grpc(target.address)
    elif target.mode == "web":
        try:
            url = rec.serve_grpc(grpc_port=target.grpc_port)
            rr.serve_web_viewer(web_port=target.web_port, open_browser=False, connect_to=url)
        except (RuntimeError, OSError, ValueError) as exc:  # a port in use, mostly
            raise ViewerUnreachable(f"cannot serve the web viewer on ports {target.web_port}/{target.grpc_port} "
                                    f"({exc}); pick others with --view web:WEB_PORT:GRPC_PORT") from None
    else:
        _spawn(rr, rec)


def _spawn(rr: Any, rec: Any, wait_s: float = 1.0) -> None:
    """Start a local viewer and stream to it; :class:`ViewerUnreachable` when it cannot run here."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ViewerUnreachable("no display here to show a viewer on (DISPLAY is not set); on a headless "
                                "machine use --view web, or --view connect:LAPTOP with `rerun` running there")
    # The viewer binary comes with the SDK, beside this interpreter: found even when the virtual
    # environment is not on PATH (.venv/bin/robokit run directly).
    beside = Path(sys.executable).with_name("rerun")
    try:
        rr.spawn(port=DEFAULT_GRPC_PORT, connect=False, executable_path=str(beside) if beside.is_file() else None,
                 recording=rec)
    except (RuntimeError, OSError, ValueError) as exc:  # no viewer binary
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ViewerUnreachable(f"cannot start a rerun viewer here ({reason}); use --view web or "
                                "--view connect:LAPTOP") from None
    url = connect_url("")
    deadline = time.monotonic() + wait_s
    while True:  # rr.spawn waited for the port already; a viewer that cannot open a window exits
        try:
            _probe(url, 0.5)
            break
        except ViewerUnreachable:
            if time.monotonic() > deadline:
                raise ViewerUnreachable(f"the rerun viewer started here did not open port {DEFAULT_GRPC_PORT} "
                                        f"within {wait_s:.0f} s; use --view web or --view connect:LAPTOP") from None
            time.sleep(0.2)
    rec.connect_grpc(url)


# -- what the live view and `robokit view` log -------------------------------------------------------
def joint_names(n: int) -> list[str]:
    """Series names of a state or action vector: the joints, then the gripper."""
    return [f"j{i + 1}" for i in range(n - 1)] + ["gripper"] if n > 1 else ["value"]


def encoded_image(rr: Any, image: np.ndarray, quality: int = 85) -> Any:
    """An RGB image as a rerun JPEG image (10x less to send or store than raw pixels)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        return rr.Image(image)
    return rr.EncodedImage(contents=buf.tobytes(), media_type="image/jpeg")


def chunk_strips(rr: Any, start: int, chunk: np.ndarray) -> Any:
    """A predicted chunk (H, A) as line strips: one per action value, x = the step it is for."""
    chunk = np.asarray(chunk, dtype=float)
    x = start + np.arange(chunk.shape[0], dtype=float)
    strips = [np.column_stack([x, chunk[:, j]]) for j in range(chunk.shape[1])]
    return rr.LineStrips2D(strips, labels=joint_names(chunk.shape[1]))
