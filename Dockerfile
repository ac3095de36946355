# One image for every driftloop process: the service is picked at run time with
# `driftloop run NAME` (or `driftloop topics` for the one-shot topic setup).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Container-friendly defaults; docker-compose.yml and k8s/configmap.yaml set
# them explicitly as well. The settings defaults (127.0.0.1, ./.driftloop-data,
# ./artifacts) would make /metrics unreachable from Prometheus and point into
# /app, which the non-root user cannot write.
ENV DRIFTLOOP_METRICS_ADDR=0.0.0.0 \
    DRIFTLOOP_DATA_DIR=/data/state \
    DRIFTLOOP_ARTIFACT_STORE=file:///data/artifacts

WORKDIR /app

# Fixed uid/gid so k8s securityContext (runAsUser/fsGroup 10001) matches.
RUN groupadd --system --gid 10001 driftloop \
 && useradd --system --uid 10001 --gid driftloop --create-home \
        --shell /usr/sbin/nologin driftloop

# The installable part of the repo only: the host's .venv (hundreds of MB),
# caches and tests stay out of the build context and the image. README.md is
# needed because pyproject.toml names it as the package readme.
COPY pyproject.toml README.md /tmp/driftloop/
COPY driftloop /tmp/driftloop/driftloop
COPY shared /tmp/driftloop/shared
COPY services /tmp/driftloop/services
COPY schemas /tmp/driftloop/schemas

# A normal install: the schemas and the Kafka pom ship inside the package as package
# data. The sources are built outside the working directory and removed, so nothing
# in /app can shadow the installed driftloop package.
RUN pip install --no-cache-dir /tmp/driftloop && rm -rf /tmp/driftloop

# The /data directories exist in the image and belong to the app user so that
# a fresh Docker named volume mounted there inherits that ownership.
RUN mkdir -p /data/state /data/artifacts \
 && chown -R driftloop:driftloop /data

USER driftloop

ENTRYPOINT ["driftloop"]
CMD ["--help"]
