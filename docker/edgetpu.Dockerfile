# Edge TPU toolchain image: Debian bookworm (x86-64 only: Coral ships edgetpu_compiler for
# amd64), Coral's apt repository through a signed-by keyring, edgetpu-compiler pinned, and this
# project's package with the light Python parts its Edge TPU stages need (numpy, the LiteRT
# schema reader for the pre-check). Built by `invoke images --target edgetpu`, which passes
# --platform linux/amd64.
#
# BASE is a build argument: a pulled Debian image or one bootstrapped from a Debian mirror
# (`invoke images --base bootstrap`). The CA bundle of a TLS-intercepting proxy arrives as the
# build secret "ca_bundle"; it reaches curl and apt only while a RUN executes and is in no layer.
# No "# syntax=" line: it would pull a frontend image. Needs BuildKit (DOCKER_BUILDKIT=1).
ARG BASE=debian:12.11-slim

# Throwaway stage: fetch Coral's signing key and turn it into a keyring (apt-key is deprecated).
FROM ${BASE} AS coral-key
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=2023* curl=7.88.* gnupg=2.2.* \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=ca_bundle \
    cacert=(); if [ -f /run/secrets/ca_bundle ]; then cacert=(--cacert /run/secrets/ca_bundle); fi; \
    if ! curl --fail --silent --show-error --max-time 60 "${cacert[@]}" \
         https://packages.cloud.google.com/apt/doc/apt-key.gpg -o /tmp/coral.asc; then \
      echo "Coral's package repository https://packages.cloud.google.com is unreachable:" \
           "the edgetpu image must be built on an x86-64 host that reaches it" >&2; exit 42; \
    fi \
 && gpg --dearmor --output /coral.gpg /tmp/coral.asc

FROM ${BASE} AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.* python3-venv=3.11.* \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY converters ./converters
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-cache-dir -c constraints.txt '.[edgetpu]'

FROM ${BASE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=2023* python3=3.11.* \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 --user-group converter
COPY --from=coral-key /coral.gpg /etc/apt/keyrings/coral.gpg
RUN echo "deb [signed-by=/etc/apt/keyrings/coral.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
      > /etc/apt/sources.list.d/coral-edgetpu.list
# apt reaches Coral's repository over HTTPS; a proxy's CA (if any) comes only through the secret,
# named in an apt setting that this same RUN deletes.
RUN --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then \
      echo 'Acquire::https::CAInfo "/run/secrets/ca_bundle";' > /etc/apt/apt.conf.d/99build-ca; \
    fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends edgetpu-compiler=16.0 \
 && rm -rf /var/lib/apt/lists/* /etc/apt/apt.conf.d/99build-ca
COPY --from=builder /opt/venv /opt/venv
# Labels last: a changed build argument then invalidates no earlier layer.
ARG VERSION=0.1.0
ARG REVISION=unknown
# Hash of the converters source the image holds; the docker runner refuses a stale image.
ARG CODE=unknown
LABEL org.opencontainers.image.title="tensor-edge-converter-edgetpu" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="tensor-edge-converter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tensor-edge-converter.code="${CODE}"
ENV PATH=/opt/venv/bin:$PATH
USER 10001:10001
WORKDIR /home/converter
ENTRYPOINT ["python", "-m", "converters"]
