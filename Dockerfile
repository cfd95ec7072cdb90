# syntax=docker/dockerfile:1
# Keel: multi-stage build. The final stage has the virtualenv and the code, no build tools,
# runs as uid 10001 under dumb-init (PID 1 forwards SIGTERM to gunicorn, which disposes the app).
#
#   docker build -t keel .                      # runtime requirements from the package index
#   make wheelhouse && docker build -t keel .   # air-gapped: from wheelhouse/ with --no-index
#   docker build --build-arg WHEELHOUSE=path/in/context -t keel .
#
# The install is deploy/install-runtime.sh, the very script tests/deploy runs against a fresh
# venv; with wheels in WHEELHOUSE it never reaches the network (dumb-init comes as a wheel too).

FROM python:3.11-slim AS build
ARG WHEELHOUSE=wheelhouse
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.txt deploy/install-runtime.sh ./
COPY ${WHEELHOUSE}/ /wheelhouse/
RUN sh install-runtime.sh /opt/venv /wheelhouse

FROM python:3.11-slim AS runtime
RUN groupadd --gid 10001 keel \
    && useradd --uid 10001 --gid keel --no-create-home --home-dir /app --shell /usr/sbin/nologin keel
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/keel-metrics
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY app.py ./
COPY config/ config/
COPY core/ core/
COPY modules/ modules/
COPY actions/ actions/
COPY deploy/gunicorn.conf.py deploy/healthcheck.py deploy/
RUN mkdir -p var secrets && chown keel:keel var secrets
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
ENTRYPOINT ["dumb-init", "--"]
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
