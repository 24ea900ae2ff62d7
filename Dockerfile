# syntax=docker/dockerfile:1
# Build:  docker build --build-arg VERSION=0.1.0 -t talkover-exporter:0.1.0 .
# Run:    docker run --rm --read-only -p 9868:9868 \
#           -v talkover-state:/var/lib/talkover-exporter talkover-exporter:0.1.0 --demo
# Lint:   hadolint Dockerfile   (part of deploy/check.sh)
#
# Both base images are pinned to exact tags. The final image is distroless
# (no shell, no package manager) and runs as the numeric non-root user 65532;
# the only place it writes is the volume /var/lib/talkover-exporter, so it
# runs unchanged with a read-only root filesystem.

# ---- build stage -----------------------------------------------------------
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Cargo reads every target of the workspace before it builds any, tests and
# benches included, so the build context holds them all.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY tests ./tests
COPY benches ./benches
# The registry and the build output stay in BuildKit caches between builds,
# so an edit rebuilds only our crates; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin talkover-exporter \
    && mkdir -p /out/state \
    && cp target/release/talkover-exporter /out/talkover-exporter

# ---- runtime stage ---------------------------------------------------------
FROM gcr.io/distroless/cc-debian12:nonroot

# Image version; defaults to the Cargo.toml version. CI passes the release tag.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="talkover-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Talkover webhook delivery logs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/talkover/talkover-exporter" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/talkover-exporter /usr/local/bin/talkover-exporter
# The state file keeps counters exact across restarts; mount a volume here.
# The directory is created owned by 65532 so a fresh named volume inherits
# that owner and the non-root user can write to it.
COPY --from=build --chown=65532:65532 /out/state /var/lib/talkover-exporter
ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/state.redb
VOLUME ["/var/lib/talkover-exporter"]

# Numeric user and group (not the name "nonroot"), so Kubernetes'
# runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
EXPOSE 9868
ENTRYPOINT ["/usr/local/bin/talkover-exporter"]
