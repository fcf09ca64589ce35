# The worker, the dispatcher, the simulator and every other appfirst command, on Python 3.11.
# A patch release pinned, so that a rebuild gives the image that was tested.
FROM python:3.11.13-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
# Every directory of pyproject.toml's package-dir, at the same place, so that the image
# installs the same package as a clone (tests/unit/ops/test_compose.py checks this).
COPY src ./src
COPY topics ./topics
COPY codecs ./codecs
COPY streams ./streams
COPY providers ./providers
COPY rules ./rules
# /keys belongs to appfirst so that a named volume mounted there starts out writable by it
# (Docker copies the image's ownership into a new volume).
RUN pip install --no-cache-dir . && useradd --system appfirst \
    && mkdir -p /var/lib/appfirst /keys && chown appfirst /var/lib/appfirst /keys
USER appfirst
ENV APPFIRST_DATA_DIR=/var/lib/appfirst APPFIRST_WEB_HOST=0.0.0.0
# The web port (callbacks, /healthz, /readyz, /metrics) and the simulator's.
EXPOSE 6066 8900
ENTRYPOINT ["appfirst"]
CMD ["worker"]
