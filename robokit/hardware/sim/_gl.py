"""Pick the offscreen OpenGL backend for MuJoCo, once, before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` when it is first imported and PyOpenGL fixes its platform at the same
moment, so the choice cannot be changed afterwards. :func:`configure` therefore runs when
:mod:`robokit.hardware.sim` is imported: it keeps an explicit user choice other than ``egl``; for
``egl`` (or nothing) it checks, with a few raw EGL calls, that a headless EGL display can really be
initialised (Mesa's software device works without a GPU) and otherwise falls back to ``osmesa``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_EGL_PLATFORM_DEVICE_EXT = 0x313F
_configured: str | None = None


def _egl_works() -> bool:
    """True when an EGL device display can be initialised (what mujoco.egl needs)."""
    name = ctypes.util.find_library("EGL") or "libEGL.so.1"
    try:
        egl = ctypes.CDLL(name)
    except OSError:
        return False
    try:
        get_proc = egl.eglGetProcAddress
        get_proc.restype = ctypes.c_void_p
        get_proc.argtypes = [ctypes.c_char_p]
        query_ptr = get_proc(b"eglQueryDevicesEXT")
        display_ptr = get_proc(b"eglGetPlatformDisplayEXT")
        if not query_ptr or not display_ptr:
            return False
        query = ctypes.CFUNCTYPE(ctypes.c_uint, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                 ctypes.POINTER(ctypes.c_int))(query_ptr)
        get_display = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p,
                                       ctypes.c_void_p)(display_ptr)
        devices = (ctypes.c_void_p * 8)()
        count = ctypes.c_int(0)
        if not query(8, devices, ctypes.byref(count)) or count.value < 1:
            return False
        egl.eglInitialize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        egl.eglTerminate.argtypes = [ctypes.c_void_p]
        for i in range(count.value):
            display = get_display(_EGL_PLATFORM_DEVICE_EXT, devices[i], None)
            if display and egl.eglInitialize(display, None, None):
                egl.eglTerminate(display)
                return True
        return False
    except (AttributeError, OSError):  # a libEGL without the entry points mujoco needs
        return False


def _preload_triton() -> None:
    """Load Triton's compiler library before Mesa's software rasteriser brings in its own LLVM.

    Mesa's llvmpipe (what EGL and OSMesa use without a GPU) loads libLLVM when the first display is
    initialised; Triton (imported by ``torch._dynamo``, e.g. through ``import torchvision``) then
    segfaults while loading its own LLVM-based library. In the other order both work, so load it
    first (~0.1 s). Nothing happens when Triton is not installed.
    """
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin:
        return
    library = Path(spec.origin).parent / "_C" / "libtriton.so"
    if library.is_file():
        try:
            ctypes.CDLL(str(library))
        except OSError as exc:
            log.debug("could not preload %s: %s", library, exc)


def configure() -> str:
    """Set ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) and return the chosen backend."""
    global _configured
    if _configured is not None:
        return _configured
    # PyOpenGL logs an INFO line about its optional accelerator module on import: noise for users.
    logging.getLogger("OpenGL").setLevel(logging.WARNING)
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested in ("", "egl", "osmesa"):
        _preload_triton()
    if "mujoco" in sys.modules:
        # Too late to choose: whoever imported mujoco first decided. Rendering may still work.
        _configured = requested or "unset"
        if not requested:
            log.warning("mujoco was imported before robokit.hardware.sim with MUJOCO_GL unset: offscreen "
                        "rendering may fail; set MUJOCO_GL=egl or import robokit.hardware.sim first")
        return _configured
    if requested in ("", "egl"):
        if _egl_works():
            chosen = "egl"
        else:
            chosen = "osmesa"
            log.warning("EGL offscreen rendering is not available; falling back to OSMesa (slower)")
        os.environ["MUJOCO_GL"] = chosen
        if os.environ.get("PYOPENGL_PLATFORM", "").lower() in ("", "egl"):
            os.environ["PYOPENGL_PLATFORM"] = chosen
        _configured = chosen
    else:
        _configured = requested
    return _configured


def release_current_context() -> None:
    """Detach the calling thread from its current EGL context.

    An EGL context can be current in only one thread at a time, and MuJoCo's renderer leaves its
    context current after each frame; releasing it lets the next frame be rendered from any thread
    (a recorder's capture thread, a deploy loop). Other backends need nothing.
    """
    if _configured != "egl":
        return
    import mujoco.egl as mj_egl

    if mj_egl.EGL_DISPLAY is not None:
        egl = mj_egl.EGL
        egl.eglMakeCurrent(mj_egl.EGL_DISPLAY, egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE, egl.EGL_NO_CONTEXT)
