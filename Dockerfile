# sluice: a layer-7 reverse proxy and load balancer.
#
#   docker build -t sluice .
#   docker run -p 8080:8080 -v "$PWD/config:/etc/sluice:ro" sluice
#
# The config is mounted at /etc/sluice; the image carries config/sluice.toml
# there as a default. Listen on 0.0.0.0 (not 127.0.0.1) inside a container,
# and set [admin] token when the admin listener is not on loopback.

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY config ./config
# The stub build left newer timestamps behind; make sure sluice itself rebuilds.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: upstreams with `tls = true` are verified against the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY config/sluice.toml /etc/sluice/sluice.toml
USER sluice
WORKDIR /etc/sluice
EXPOSE 8080 9900
# No HEALTHCHECK: the slim image has no HTTP client (curl, wget) to probe
# with, and adding one only for that grows the image. Orchestrators can
# probe the admin listener (GET /api/status) from outside instead.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["run", "-c", "/etc/sluice/sluice.toml"]
