# syntax=docker/dockerfile:1
# cartridge-warp container image. One binary per source keeps the image small:
#   docker build --build-arg FEATURES=mongodb,postgres -t cartridge/warp:v1.0.0-mongodb .
# FEATURES defaults to every connector (the seed's cartridge/warp:v1.0.0).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG FEATURES=mongodb,mysql,bigquery,postgres
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is copied
# out of the cached target dir so the next stage can see it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p warp-cli --no-default-features --features "${FEATURES}" \
 && cp target/release/cartridge-warp /usr/local/bin/cartridge-warp

FROM debian:bookworm-slim AS runtime
# TLS is rustls: the image needs only the CA bundle.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 1000 warp \
 && useradd --uid 1000 --gid 1000 --no-create-home --shell /usr/sbin/nologin warp \
 && mkdir -p /etc/cartridge-warp /var/log/cartridge-warp /tmp/cartridge-warp \
 && chown 1000:1000 /var/log/cartridge-warp /tmp/cartridge-warp
COPY --from=build /usr/local/bin/cartridge-warp /usr/local/bin/cartridge-warp
USER 1000:1000
EXPOSE 8080 8081
# The seed's Deployment sets `command: ["cartridge-warp"]` and passes `run ...` as args.
ENTRYPOINT ["cartridge-warp"]
CMD ["--help"]
