"""Headless MuJoCo rendering: pick a back end before dm_control is imported, and fail clearly.

MUJOCO_GL must be set before mujoco/dm_control are imported; `crl.envs` sets it to `egl` (Mesa's
software EGL works on machines with no GPU) unless the user chose one.
"""

from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("egl", "osmesa", "glfw")
INSTALL_HINTS = {
    "egl": "apt-get install libegl1 libgl1-mesa-dri",
    "osmesa": "apt-get install libosmesa6",
    "glfw": "a display (X server or Xvfb) and apt-get install libglfw3",
}
_PROBE = "from dm_control import _render; r = _render.Renderer(max_width=16, max_height=16); r.free()"


class RenderingBackendError(RuntimeError):
    pass


def set_default_backend() -> None:
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
        chosen = os.environ.get("MUJOCO_GL", "egl")
        raise RenderingBackendError(explain_failure(chosen, f"{type(error).__name__}: {error}")) from error
    return suite


_checked = False


def ensure_rendering_backend() -> None:
    """Raises RenderingBackendError naming every MUJOCO_GL value tried, unless rendering works."""
    global _checked
    if _checked:
        return
    chosen = os.environ.get("MUJOCO_GL", "egl")
    try:
        from dm_control import _render

        _render.Renderer(max_width=16, max_height=16).free()
    except Exception as error:  # noqa: BLE001 - any failure here means no usable GL context
        raise RenderingBackendError(explain_failure(chosen, f"{type(error).__name__}: {error}")) from error
    _checked = True


def explain_failure(chosen: str, reason: str) -> str:
    lines = [f"MuJoCo offscreen rendering failed with MUJOCO_GL={chosen}: {reason}",
             "Tried each back end in a fresh process:"]
    working = []
    for backend in BACKENDS:
        result = reason if backend == chosen else _probe(backend)
        lines.append(f"  MUJOCO_GL={backend}: {'works' if result is None else 'fails: ' + result}")
        if result is None:
            working.append(backend)
        else:
            lines.append(f"    to fix: {INSTALL_HINTS[backend]}")
    if working:
        lines.append(f"Set MUJOCO_GL={working[0]} before starting Python.")
    else:
        lines.append("No back end works here; install one of the above (egl is the usual choice).")
    return "\n".join(lines)
