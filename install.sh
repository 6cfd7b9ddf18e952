#!/usr/bin/env bash
# Installs gatewatch into ./.venv from this repository's own files, offline-ready.
#   ./install.sh          runtime + test tools
# Needs Python >= 3.11 and access to PyPI (or a PyPI mirror) once.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install -e '.[test]'
# These declare the GUI build opencv-python, which would share the cv2 folder with our headless
# build; their real needs are already installed from pyproject.toml.
"${PIP[@]}" install --no-deps -r requirements-nodeps.txt
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
  echo "install.sh: opencv-python (GUI build) is installed next to opencv-python-headless; removing it" >&2
  "${PIP[@]}" uninstall -y opencv-python
  "${PIP[@]}" install --force-reinstall --no-deps opencv-python-headless
fi
# Convert dlib's embedder to ONNX once (offline; cached under ~/.cache/gatewatch/models).
.venv/bin/gatewatch models fetch --pack open
# Liveness (MiniFASNet, Apache-2.0) is not on PyPI: from GATEWATCH_MODEL_MIRROR, or downloaded by
# sha256 where there is internet. Without it the service starts, says so in /healthz and, with the
# default GATEWATCH_LIVENESS=required, denies at every gate: not a reason to fail the install.
.venv/bin/gatewatch models fetch minifasnet_v2 minifasnet_v1se \
  || echo "install.sh: liveness weights not available; gates deny until they are (see README, Model packs)" >&2
# Gate cameras run YuNet-s (MIT, opencv_zoo) where it is available offline, several times faster
# than the open pack's MTCNN (benchmarks/bench_gates); without it they fall back to MTCNN.
.venv/bin/gatewatch models fetch yunet_s \
  || echo "install.sh: YuNet not available; gate cameras use MTCNN (slower, see README)" >&2
