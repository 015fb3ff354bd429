# alertd: the job-alert daemon, as a container.
#   docker build -t alertd .
#   docker run -d --name alertd -v alertd-data:/data \
#     -v "$PWD/alerts.yaml:/data/alerts.yaml:ro" -e SLACK_WEBHOOK=... alertd
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ALERTD_STATE_DIR=/data \
    ALERTD_CONFIG=/data/alerts.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY alertd ./alertd
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin alertd \
    && mkdir -p /data && chown alertd:alertd /data

USER alertd
VOLUME ["/data"]

# Healthy while the daemon keeps ending cycles (it rewrites /data/heartbeat.json each one).
HEALTHCHECK --interval=5m --timeout=30s --start-period=2m CMD ["alertd", "health"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["alertd"]
CMD ["run"]
