# syntax=docker/dockerfile:1
# streamvae container image (CPU).
#
#   docker build -t streamvae:0.1.0 .
#   docker run --rm -p 9464:9464 -e STREAMVAE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
#     -e STREAMVAE_METRICS__HOST=0.0.0.0 -v streamvae-state:/var/lib/streamvae streamvae:0.1.0
#
# GPU image: the same file with a CUDA build of torch. PyTorch's CUDA wheels ship the
# CUDA runtime and cuDNN as pip packages, so the slim base works; the host needs the
# NVIDIA driver and the NVIDIA Container Toolkit (docker run --gpus all):
#   docker build -t streamvae:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
# If you prefer NVIDIA's base image (system CUDA libraries, e.g. for other tools), use
#   --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
# and install python3 + python3-venv in the build stage first (Ubuntu's Python 3.12 works).
# Pick the cuXYZ index that matches the torch release and your driver (pytorch.org).

ARG BASE_IMAGE=python:3.11-slim
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/streamvae
# torch first and pinned, from the CPU index: an unpinned torch from PyPI pulls GBs of CUDA.
RUN /opt/streamvae/bin/pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md /src/
COPY streamvae /src/streamvae
RUN /opt/streamvae/bin/pip install /src

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="streamvae" \
      org.opencontainers.image.description="Streaming multi-site anomaly detection over Kafka" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 streamvae \
    && useradd --system --uid 10001 --gid streamvae --home-dir /var/lib/streamvae \
       --shell /usr/sbin/nologin streamvae \
    && install -d -o streamvae -g streamvae -m 0750 /var/lib/streamvae /etc/streamvae
COPY --from=build /opt/streamvae /opt/streamvae
ENV PATH=/opt/streamvae/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    STREAMVAE_STORE__PATH=/var/lib/streamvae/models \
    STREAMVAE_RETRAINING__STATE_DIR=/var/lib/streamvae/state
USER 10001:10001
WORKDIR /var/lib/streamvae
VOLUME ["/var/lib/streamvae"]
EXPOSE 9464
# Liveness from inside the container (compose); Kubernetes uses its own probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAMVAE_METRICS__PORT', '9464') + '/healthz', timeout=4)"]
# SIGTERM: finish the batch, deliver, commit, exit 0 within service.shutdown_timeout_s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamvae"]
CMD ["run"]
