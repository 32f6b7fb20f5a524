# TFLite toolchain image: Python 3.11 (Debian bookworm), pinned tensorflow-cpu, ai-edge-litert,
# and this project's package. Built by `invoke images --target tflite`.
#
# BASE is a build argument so the same file builds on a pulled image or on a base bootstrapped
# from a Debian mirror (`invoke images --base bootstrap`) where no registry is reachable.
# No "# syntax=" line: it would pull a frontend image. Needs BuildKit (DOCKER_BUILDKIT=1).
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY converters ./converters
# The CA bundle of a TLS-intercepting proxy arrives as a build secret: it is readable only while
# this RUN executes and is in no layer. Without a proxy the secret is simply absent.
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -c constraints.txt '.[tflite]'

FROM ${BASE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tensor-edge-converter-tflite" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="tensor-edge-converter" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group converter
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=3 \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/converter
ENTRYPOINT ["python", "-m", "converters"]
