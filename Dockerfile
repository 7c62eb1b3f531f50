# syntax=docker/dockerfile:1
# credit-worker image: build stage (Rust + the C toolchains of librdkafka and LightGBM), then a
# small runtime stage with only the shared libraries the binary links (glibc, libstdc++, libgcc,
# OpenSSL, zlib). Runs as a non-root user, writes nothing to its root filesystem (run it with
# a read-only root; /tmp is not needed), and holds the models so a tag pins code and model.
# The default (last) target is the worker; `--target devtools` builds the load generator image
# (credit-dev: replay, registry stand-in), which production never runs.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      clang libclang-dev libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev \
      pkg-config python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# CMake >= 3.28 for lightgbm3-sys, pinned by hash (same file as the local bootstrap).
COPY scripts/requirements-tools.txt scripts/requirements-tools.txt
RUN python3 -m venv /opt/tools \
 && /opt/tools/bin/pip install -q --disable-pip-version-check --require-hashes -r scripts/requirements-tools.txt
ENV PATH=/opt/tools/bin:$PATH
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY devtools devtools
COPY migrations migrations
COPY schemas schemas
COPY config config
RUN cargo build --release --locked --bin credit-worker --bin credit-dev \
 && strip target/release/credit-worker target/release/credit-dev

FROM debian:bookworm-slim AS base
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 credit \
 && useradd --system --uid 10001 --gid credit --no-create-home --shell /usr/sbin/nologin credit
WORKDIR /app

FROM base AS devtools
COPY --from=build /src/target/release/credit-dev /usr/local/bin/credit-dev
# The German Credit data set (CC BY 4.0, see data/README.md) for the `replay` load generator.
COPY data/german_credit.csv data/README.md data/
USER 10001:10001

FROM base AS runtime
COPY --from=build /src/target/release/credit-worker /usr/local/bin/credit-worker
COPY config/default.toml config/default.toml
COPY models models
# Local defaults point at loopback; in a container listen on every interface. Everything else
# comes from CREDIT_WORKER__<SECTION>__<KEY> variables (see config/default.toml).
# MIMALLOC_ALLOW_THP=0: no transparent huge pages under the allocator, so batch memory given
# back and taken again is not cleared 2 MiB at a time (fewer page faults and a lower peak RSS
# in `make bench`).
ENV CREDIT_WORKER_CONFIG=/app/config/default.toml \
    CREDIT_WORKER__HTTP__LISTEN=0.0.0.0:9464 \
    CREDIT_WORKER__LOGGING__FORMAT=json \
    MIMALLOC_ALLOW_THP=0
USER 10001:10001
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["credit-worker", "probe", "--url", "http://127.0.0.1:9464/health"]
ENTRYPOINT ["credit-worker"]
CMD ["worker", "--config", "/app/config/default.toml"]
