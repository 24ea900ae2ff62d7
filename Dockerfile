# syntax=docker/dockerfile:1
# Build: docker build -t talkover-exporter .
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
# Dependencies first, in their own layer, so source edits rebuild only our crate.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && echo '//! placeholder' > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && mkdir -p /out/state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/talkover-exporter /usr/local/bin/talkover-exporter
# The state file keeps counters exact across restarts; mount a volume here.
COPY --from=build --chown=65532:65532 /out/state /var/lib/talkover-exporter
ENV TALKOVER_STATE_FILE=/var/lib/talkover-exporter/state.redb
VOLUME ["/var/lib/talkover-exporter"]
USER 65532:65532
EXPOSE 9868
ENTRYPOINT ["/usr/local/bin/talkover-exporter"]
