# syntax=docker/dockerfile:1
# conduit as a container: a build stage with the Rust toolchain, a minimal non-root
# runtime stage (distroless, glibc, no shell, no package manager, no curl).
#
#   docker build -t conduit .
#   docker run -p 8080:8080 -e CONDUIT__DATABASE__URL=postgres://… \
#     -e CONDUIT__AUTH__JWT_SECRET_FILE=/run/secrets/jwt -v …:/run/secrets conduit
#
# Not built in this project's CI: its machines have no container engine. It is kept to
# steps whose effect is plain from reading them.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, as a layer of their own: it changes only with the manifests and the
# lock file, so source edits do not download every crate again. The placeholder sources
# exist only so cargo can read the workspace.
COPY Cargo.toml Cargo.lock ./
COPY migrations/Cargo.toml migrations/
COPY bench/Cargo.toml bench/
RUN mkdir -p src migrations/src bench/src \
 && touch src/lib.rs migrations/src/lib.rs \
 && for f in src/main.rs bench/src/main.rs bench/src/peer.rs bench/src/stack_probe.rs; do \
      echo 'fn main() {}' > "$f"; \
    done \
 && cargo fetch --locked
COPY . .
# protoc comes from the protoc-bin-vendored build dependency: nothing to install.
# The target directory is a build cache that outlives this layer.
RUN --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin conduit \
 && cp target/release/conduit /conduit

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /conduit /usr/local/bin/conduit
# The profiles are compiled in: APP_ENV=prod needs no config/ directory.
ENV APP_ENV=prod
# API (REST, gRPC, gRPC-Web on one port) and admin (/metrics, probe copies).
EXPOSE 8080 9090
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/conduit", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/conduit"]
CMD ["serve"]
