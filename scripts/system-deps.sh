#!/usr/bin/env bash
# Installs the system libraries MuJoCo's headless rendering needs: Mesa's EGL with its software
# driver (MUJOCO_GL=egl, our default). Video encoding needs nothing here: imageio-ffmpeg ships its
# own ffmpeg. Runs apt-get only when something is missing and we are root; else says what to run.
set -euo pipefail
missing=()
ldconfig -p | grep -q 'libEGL.so.1' || missing+=(libegl1)
ldconfig -p | grep -q 'libGL.so.1' || missing+=(libgl1)
ls /usr/lib/*/dri/swrast_dri.so /usr/lib/*/dri/*swrast* >/dev/null 2>&1 || missing+=(libgl1-mesa-dri libegl-mesa0)
# `python3 -m venv` (the Makefile's first step) needs ensurepip, a separate package on Debian/Ubuntu
if ! [ -x "${VENV:-.venv}/bin/python" ] && ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=("python3-venv")
fi
python3 -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' ||
  echo "warning: python3 is $(python3 -V 2>&1 | cut -d' ' -f2); crl is tested on Python 3.10-3.12" >&2
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system libraries: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "warning: missing system packages (headless MuJoCo rendering, python3 -m venv): ${missing[*]}" >&2
  echo "         install them with: sudo apt-get install ${missing[*]}" >&2
fi
