# sluice: a layer-7 reverse proxy and load balancer.
#
#   docker build -t sluice .
#   docker run -p 8080:8080 -p 9900:9900 sluice
#
# The default command is the demo, listening on every interface so the
# published ports reach it: the proxy on 8080, the dashboard and admin API on
# 9900 (with an admin token the demo makes up and prints at start; add
# `--token SECRET` to choose it). To run a config of your own, mount it and
# name the command:
#
#   docker run -p 8080:8080 -v "$PWD/config:/etc/sluice:ro" sluice run -c /etc/sluice/sluice.toml
#
# Listen on 0.0.0.0 (not 127.0.0.1) inside a container, and set
# [admin] token when the admin listener is not on loopback.

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
# sluice probes itself (the slim image has no curl): the admin listener's
# dashboard page needs no token and answers while sluice runs. Both the demo
# and config/sluice.toml have the admin listener on port 9900; a config
# without it needs its own --health-cmd or --no-healthcheck.
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s --retries=3 \
    CMD ["sluice", "probe", "http://127.0.0.1:9900/"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["demo", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:9900"]
