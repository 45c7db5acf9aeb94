#!/usr/bin/env bash
# Installs everything the project needs (idempotent). Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: libusb for pyrealsense2; Mesa EGL/OSMesa for MuJoCo's headless rendering;
# Xvfb + the xcb bits Qt's xcb plugin lacks + ImageMagick's `import`, for the window test on a real
# X server (screenshot, 3D view on Mesa llvmpipe).
APT_PACKAGES="libusb-1.0-0 libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libopengl0 libosmesa6
              xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 imagemagick"
missing=""
for p in $APT_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# torch first and pinned: on CPU machines the local 2.13.0 CPU wheel is taken, never the CUDA build.
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
