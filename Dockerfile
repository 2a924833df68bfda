# syntax=docker/dockerfile:1
# The base image. For a reproducible build pin it by digest: `make image-pin` writes
# python:3.11-slim@sha256:… here (docker buildx imagetools inspect); commit that line.
ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: a virtual environment with the locked dependencies (every file's hash
# checked: requirements.lock, `make lock`), then taskwarden itself without resolving again.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/taskwarden
COPY requirements.lock ./
RUN /opt/taskwarden/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN /opt/taskwarden/bin/pip install --no-deps .

# Final stage: the venv only, no build tools, a non-root user, state on a volume.
FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/taskwarden \
        --shell /usr/sbin/nologin taskwarden \
    && mkdir -p /var/lib/taskwarden /etc/taskwarden \
    && chown taskwarden:taskwarden /var/lib/taskwarden
COPY --from=build /opt/taskwarden /opt/taskwarden
ENV PATH=/opt/taskwarden/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TASKWARDEN_CONFIG=/etc/taskwarden/taskwarden.yaml \
    TASKWARDEN_STATE__PATH=/var/lib/taskwarden/state.db \
    TASKWARDEN_DAEMON__HEALTH_BIND=0.0.0.0:9464
USER 10001:10001
VOLUME ["/var/lib/taskwarden"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["taskwarden", "--log-format=json"]
CMD ["run"]
