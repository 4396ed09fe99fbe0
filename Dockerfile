# hookside: a small, non-root image.
# Build with: docker build -t hookside .
# The toolchain link-order.txt and pgo.profdata were written with (names carry hashes of the
# compiler; the profile's format is its LLVM's).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY build.rs link-order.txt pgo.profdata pgo-rustc.txt ./
COPY src ./src
COPY examples ./examples
# Optimised with the profile of the bench's workload (bench/pgo.py; BENCHMARKS.md).
RUN RUSTFLAGS="-Cprofile-use=/src/pgo.profdata" cargo build --release --locked --bin hookside \
    && strip target/release/hookside

# distroless/cc: glibc, CA certificates, no shell, runs as the "nonroot" user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hookside /usr/local/bin/hookside
USER 65532:65532
EXPOSE 8787 9797
ENTRYPOINT ["/usr/local/bin/hookside"]
CMD ["serve", "--dir", "/etc/hookside/webhooks.d", "--listen", "127.0.0.1:8787", "--admin-listen", "0.0.0.0:9797"]
