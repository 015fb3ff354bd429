# alertd: the job-alert daemon, as a container. README.md, "In a container", has more.
#   docker build -t alertd .
#   docker run -d --name alertd --init --read-only --tmpfs /tmp \
#     -v alertd-data:/data -v "$PWD/alerts.yaml:/data/alerts.yaml:ro" \
#     -e SLACK_WEBHOOK=... alertd
# The base image is a build argument, so it can be built from a local one (CI uses a
# debootstrapped Debian 12 with python3 and python3-venv): --build-arg BASE=...
ARG BASE=python:3.12-slim
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/alertd/bin:$PATH \
    ALERTD_STATE_DIR=/data \
    ALERTD_CONFIG=/data/alerts.yaml

COPY pyproject.toml README.md /src/
COPY alertd /src/alertd
# A venv, as on a host: the image's own Python packages stay untouched. The user is
# numeric (10001) so that a platform can check it is not root without reading
# /etc/passwd; /data is the only place it writes.
RUN python3 -m venv /opt/alertd \
    && /opt/alertd/bin/pip install --no-cache-dir /src \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin alertd \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0700 /data

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]

# Healthy once a cycle has ended (`alertd run` rewrites /data/heartbeat.json after each)
# and while they keep ending; the first check comes 30s after the start. `alertd health`
# exits 0 or 1 only (Docker reserves 2).
HEALTHCHECK --interval=30s --timeout=20s --start-period=5m --retries=3 CMD ["alertd", "health"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["alertd"]
CMD ["run"]
