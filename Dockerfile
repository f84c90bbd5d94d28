# The moemesh image: static CPU builds of moemesh and moemeshctl on an empty
# base, run as an unprivileged user. No base image is pulled and nothing is
# compiled inside the build: scripts/docker-build.sh builds the binaries on
# the host (CGO_ENABLED=0; the CPU kernels are Go assembly) and prepares the
# context this file expects:
#
#   bin/moemesh, bin/moemeshctl   the binaries
#   rootfs/                       etc/passwd and etc/group (nonroot = 65532),
#                                 etc/ssl/certs/ca-certificates.crt, tmp/ (1777)
#   home/                         the home directory of nonroot (empty)
#
# The CUDA variant (a -tags cuda build on an NVIDIA base) is described in
# docs/deploy.md.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/moemesh/moemesh
LABEL org.opencontainers.image.title="moemesh" \
      org.opencontainers.image.description="Serve Qwen3 Mixture-of-Experts models across many workers (CPU build)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

COPY rootfs/ /
COPY --chown=65532:65532 home/ /home/nonroot/
COPY bin/ /usr/local/bin/

ENV PATH=/usr/local/bin HOME=/home/nonroot
USER 65532:65532
WORKDIR /home/nonroot
# The coordinator's gRPC and HTTP APIs (pass --grpc-addr 0.0.0.0:50051
# --http-addr 0.0.0.0:8080: the defaults listen on loopback only).
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/moemesh"]
CMD ["--help"]
