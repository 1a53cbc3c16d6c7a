"""Headless MuJoCo rendering: pick a back end before dm_control is imported, and fail clearly.

MUJOCO_GL must be set before mujoco/dm_control are imported; `crl.envs` sets it to `egl` (Mesa's
software EGL works on machines with no GPU) unless the user chose one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

BACKENDS = ("egl", "osmesa", "glfw")
INSTALL_HINTS = {
    "egl": "apt-get install libegl1 libgl1-mesa-dri",
    "osmesa": "apt-get install libosmesa6",
    "glfw": "a display (X server or Xvfb) and apt-get install libglfw3",
}
# A whole render, not only a context: with no display GLFW "creates" a context and fails later,
# when MuJoCo's rendering context is built.
_PROBE = ("import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco/>'); r = mujoco.Renderer(m, 16, 16); "
          "r.update_scene(mujoco.MjData(m)); r.render(); r.close()")


class RenderingBackendError(RuntimeError):
    pass


def set_default_backend() -> None:
    if "MUJOCO_GL" not in os.environ and "mujoco" in sys.modules:
        warnings.warn("mujoco was imported before crl.envs and chose its GL back end without MUJOCO_GL; "
                      "set MUJOCO_GL=egl in the shell (or import crl.envs first) for headless rendering",
                      RuntimeWarning, stacklevel=2)
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])


def _probe(backend: str, timeout: float = 60.0) -> str | None:
    """Tries a 16x16 offscreen context in a fresh process; returns None on success, else why not."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out"
    if out.returncode == 0:
        return None
    lines = [line for line in out.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {out.returncode}"


def import_suite():
    """`dm_control.suite`, or a RenderingBackendError: dm_control opens its GL back end on import."""
    try:
        from dm_control import suite
    except Exception as error:  # noqa: BLE001 - a broken GL stack fails in many ways on import
        raise backend_error(error) from error
    return suite


_checked = False


def ensure_rendering_backend() -> None:
    """Raises RenderingBackendError naming every MUJOCO_GL value tried, unless rendering works."""
    global _checked
    if _checked:
        return
    try:
        exec(_PROBE, {})  # noqa: S102 - our own constant: one 16x16 render in this process
    except Exception as error:  # noqa: BLE001 - any failure here means no usable GL context
        raise backend_error(error) from error
    _checked = True


def backend_error(error: Exception) -> RenderingBackendError:
    """`error` (a failed render) explained: every MUJOCO_GL value tried, and what to install."""
    return RenderingBackendError(explain_failure(os.environ.get("MUJOCO_GL", "egl"), f"{type(error).__name__}: {error}"))


def explained(render):
    """`render()`, with a failure explained as `ensure_rendering_backend` does (for envs that
    render through gymnasium's MuJoCo renderer: mazes, Fetch)."""
    try:
        return render()
    except Exception as error:  # noqa: BLE001 - a GL failure surfaces as many exception types
        if not is_gl_failure(error):
            raise
        raise backend_error(error) from error


def is_gl_failure(error: Exception) -> bool:
    """A failure to get an OpenGL context (not, say, a bad camera name)."""
    text = f"{type(error).__name__}: {error}"
    return isinstance(error, ImportError) or type(error).__name__ in ("FatalError", "GLError") or any(
        word in text for word in ("OpenGL", "EGL", "GLFW", "OSMesa", "DISPLAY", "display"))


def explain_failure(chosen: str, reason: str) -> str:
    lines = [f"MuJoCo offscreen rendering failed with MUJOCO_GL={chosen}: {reason}",
             "Tried each back end in a fresh process:"]
    working = []
    for backend in BACKENDS:
        result = _probe(backend)
        lines.append(f"  MUJOCO_GL={backend}: {'works' if result is None else 'fails: ' + result}")
        if result is None:
            working.append(backend)
        else:
            lines.append(f"    to fix: {INSTALL_HINTS[backend]}")
    if chosen in working:
        lines.append(f"MUJOCO_GL={chosen} works in a fresh process: here mujoco was imported (and chose its back "
                     f"end) before MUJOCO_GL={chosen} was set. Set MUJOCO_GL={chosen} in the shell, or import "
                     "crl.envs before mujoco, gymnasium_robotics or dm_control.")
    elif working:
        lines.append(f"Set MUJOCO_GL={working[0]} before starting Python.")
    else:
        lines.append("No back end works here; install one of the above (egl is the usual choice).")
    return "\n".join(lines)
