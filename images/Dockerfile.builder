# syntax=docker/dockerfile:1
# Both images built from the source tree, for users with a registry at hand (Docker, BuildKit,
# buildah): a Rust builder stage on Alpine (musl, so the binaries are static) and the same scratch
# final stages as images/hmq/Dockerfile and images/hmq-operator/Dockerfile.
#
#   docker build -f images/Dockerfile.builder --target hmq -t hmq:dev .
#   docker build -f images/Dockerfile.builder --target hmq-operator -t hmq-operator:dev .
#
# hmq's CI cannot pull base images, so it builds the binaries on the host and uses the scratch
# Dockerfiles (scripts/build-images.sh); this file is not built there.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hmq --bin hmq-operator \
    && mkdir -p /out \
    && cp target/release/hmq target/release/hmq-operator /out/

FROM scratch AS hmq
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hmq" \
      org.opencontainers.image.description="hmq: an MQTT 3.1/3.1.1 broker" \
      org.opencontainers.image.source="https://github.com/hmq-rs/hmq" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/hmq /hmq
EXPOSE 1883 8883 8080 1993
USER 65532:65532
ENTRYPOINT ["/hmq"]

FROM scratch AS hmq-operator
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="hmq-operator" \
      org.opencontainers.image.description="hmq-operator: runs hmq MQTT broker clusters on Kubernetes" \
      org.opencontainers.image.source="https://github.com/hmq-rs/hmq" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/hmq-operator /hmq-operator
EXPOSE 8080
USER 65532:65532
ENTRYPOINT ["/hmq-operator"]
