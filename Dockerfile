# syntax=docker/dockerfile:1
# Keel: multi-stage build. The final stage has the virtualenv and the code, no build tools,
# runs as uid 10001 under tini (PID 1 forwards SIGTERM to gunicorn, which disposes the app).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.txt .
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt

FROM python:3.11-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends 'tini=0.19.*' \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 keel \
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
COPY deploy/gunicorn.conf.py deploy/gunicorn.conf.py
RUN mkdir -p var secrets && chown keel:keel var secrets
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
