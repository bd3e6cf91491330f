# CPU image of the guarded engine (the serving issue adds `guard serve` as the entry point).
# CUDA variant: start FROM an NVIDIA CUDA runtime image and build with --build-arg GUARD_CUDA=1.
FROM python:3.11-slim

ARG GUARD_CUDA=0
ENV PYTHONUNBUFFERED=1 \
    GUARD_HOME=/home/guard/.cache/guard \
    VLLM_CPU_KVCACHE_SPACE=2 \
    GUARD_CUDA=${GUARD_CUDA}

RUN useradd --create-home --uid 10001 guard
WORKDIR /opt/guard
COPY --chown=guard:guard . .
USER guard
RUN bash scripts/setup.sh

HEALTHCHECK --interval=30s --timeout=5s --start-period=300s CMD [".venv/bin/python", "-c", "import guard"]
ENTRYPOINT [".venv/bin/guard"]
CMD ["selftest"]
