# TensorRT toolchain image: NVIDIA's NGC TensorRT image at a pinned tag (TensorRT 10, CUDA 12,
# trtexec in /opt/tensorrt/bin), plus this project's package, onnx and cuda-python for the
# engine stage's device buffers. Built by `invoke images --target tensorrt`; runs with
# `docker run --gpus all` (NVIDIA Container Toolkit).
#
# NOT built on the project's machines: NGC (nvcr.io) is unreachable there (README, status). A Debian
# base cannot stand in: the TensorRT and CUDA libraries come with the NGC image.
# No "# syntax=" line: it would pull a frontend image. Needs BuildKit (DOCKER_BUILDKIT=1).
ARG BASE=nvcr.io/nvidia/tensorrt:25.01-py3

FROM ${BASE} AS builder
# --system-site-packages: the tensorrt Python bindings live in the NGC image's system Python.
RUN python3 -m venv --system-site-packages /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY converters ./converters
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -c constraints.txt '.[tensorrt]'

FROM ${BASE} AS runtime
RUN useradd --create-home --uid 10001 --user-group converter
COPY --from=builder /opt/venv /opt/venv
# Labels last: a changed build argument then invalidates no earlier layer.
ARG VERSION=0.1.0
ARG REVISION=unknown
# Hash of the converters source the image holds; the docker runner refuses a stale image.
ARG CODE=unknown
LABEL org.opencontainers.image.title="tensor-edge-converter-tensorrt" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="tensor-edge-converter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tensor-edge-converter.code="${CODE}"
ENV PATH=/opt/venv/bin:$PATH:/opt/tensorrt/bin
USER 10001:10001
WORKDIR /home/converter
ENTRYPOINT ["python", "-m", "converters"]
