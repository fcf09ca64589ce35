# The worker, the simulator and every other appfirst command, on Python 3.11.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY topics ./topics
COPY codecs ./codecs
COPY streams ./streams
COPY providers ./providers
COPY rules ./rules
RUN pip install --no-cache-dir . && useradd --system appfirst && mkdir -p /var/lib/appfirst \
    && chown appfirst /var/lib/appfirst
USER appfirst
ENV APPFIRST_DATA_DIR=/var/lib/appfirst APPFIRST_WEB_HOST=0.0.0.0
ENTRYPOINT ["appfirst"]
CMD ["worker"]
