# syntax=docker/dockerfile:1
#
# airflow-secrets-operator: one static binary in an empty image, running as a non-root user.
#
#   docker build -t airflow-secrets-operator .                 # builds from source (default)
#   docker build --target prebuilt -t airflow-secrets-operator dist/
#       # packages a binary built beforehand: dist/ holds airflow-secrets-operator (static,
#       # x86_64-unknown-linux-musl) and ca-certificates.crt — what tests/image.sh does where
#       # no base image can be pulled.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin airflow-secrets-operator \
 && cp target/release/airflow-secrets-operator /airflow-secrets-operator \
 && cp /etc/ssl/certs/ca-certificates.crt /ca-certificates.crt

# The runtime image, shared by both ways of building.
FROM scratch AS base
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="airflow-secrets-operator" \
      org.opencontainers.image.description="Airflow connections, variables and config from AWS Secrets Manager for Airflow 3 Remote Execution agents" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/airflow-secrets-operator"]
CMD ["run"]

FROM base AS prebuilt
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chmod=0555 airflow-secrets-operator /airflow-secrets-operator

FROM base AS runtime
COPY --from=build /ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build --chmod=0555 /airflow-secrets-operator /airflow-secrets-operator
