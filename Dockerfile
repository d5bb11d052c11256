# syntax=docker/dockerfile:1
# churnwatch image: a release build in the official Rust image, copied into
# a slim Debian runtime with a non-root user. Build: docker build -t churnwatch .

FROM rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka-sys (bundled).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the dependency builds between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin churnwatch \
    && cp target/release/churnwatch /usr/local/bin/churnwatch

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home churnwatch
COPY --from=build /usr/local/bin/churnwatch /usr/local/bin/churnwatch
COPY deploy/churnwatch.toml /etc/churnwatch/churnwatch.toml
USER churnwatch
# /metrics, /healthz, /readyz and /api.
EXPOSE 9464
ENTRYPOINT ["churnwatch"]
CMD ["run", "--config", "/etc/churnwatch/churnwatch.toml"]
