#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine (root, Python 3.11, package registries only):
# the offline Fashion-MNIST package, a project venv in .venv, and the project in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision first, pinned to the builds verified on this machine kind (see pyproject ranges).
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev,sweeps]"
# The sweeper is our own on current Optuna now: a venv made before that still has the old plugin, whose
# hydra_plugins package would register a second "optuna" sweeper pinned to Optuna 2.
.venv/bin/python -m pip uninstall -q -y hydra-optuna-sweeper 2>/dev/null || true
