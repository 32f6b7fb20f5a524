# TFLite toolchain image: Python 3.11 (Debian bookworm), pinned tensorflow-cpu, ai-edge-litert, the
# ONNX export tools (tf2onnx, onnx, onnxruntime), MediaPipe (the real-client check of each TFLite
# artifact runs in the validation stages) and this project's package. Built by
# `invoke images --target tflite`.
#
# BASE is a build argument so the same file builds on a pulled image or on a base bootstrapped
# from a Debian mirror (`invoke images --base bootstrap`) where no registry is reachable.
# No "# syntax=" line: it would pull a frontend image. Needs BuildKit (DOCKER_BUILDKIT=1).
ARG BASE=debian:12.11-slim

FROM ${BASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the project's metadata and constraints with an empty package, so a
# code change rebuilds only the small layer below. The CA bundle of a TLS-intercepting proxy
# arrives as a build secret: readable only while the RUN executes, in no layer. Without a proxy
# the secret is simply absent.
COPY constraints.txt pyproject.toml README.md ./
RUN mkdir -p converters/stages converters/runners \
 && touch converters/__init__.py converters/stages/__init__.py converters/runners/__init__.py
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -c constraints.txt '.[tflite,mediapipe]' \
 && rm -rf build converters ./*.egg-info
COPY converters ./converters
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir --no-deps --force-reinstall .

FROM ${BASE} AS runtime
# MediaPipe imports OpenCV (opencv-contrib-python, its dependency), which links X11, GL and GLib
# libraries a slim Debian lacks, and its task runtime loads EGL and GLES when it starts; nothing here
# draws on a screen.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* \
    libgl1=1.6.* libegl1=1.6.* libgles2=1.6.* libglib2.0-0=2.74.* libsm6=2:1.2.* \
    libxext6=2:1.3.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group converter
COPY --from=builder /opt/venv /opt/venv
# Labels last: a changed build argument then invalidates no earlier layer.
ARG VERSION=0.1.0
ARG REVISION=unknown
# Hash of the converters source the image holds; the docker runner refuses a stale image.
ARG CODE=unknown
LABEL org.opencontainers.image.title="tensor-edge-converter-tflite" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="tensor-edge-converter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tensor-edge-converter.code="${CODE}"
ENV PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=3 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/converter
ENTRYPOINT ["python", "-m", "converters"]
