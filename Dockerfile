# syntax=docker/dockerfile:1
# llm-usage-consumer worker image.
#
#   docker build -t llm-usage-consumer:dev .
#   docker run --rm -p 9464:9464 -e USAGE_CONSUMER_BOOTSTRAP_SERVERS=kafka:9092 llm-usage-consumer:dev
#
# Both stages use the same base image so the venv built in the first one runs unchanged in the
# second (same /usr/local/bin/python3.11). confluent-kafka, pydantic-core and msgspec come as
# manylinux wheels (librdkafka is bundled), so neither stage needs a compiler.

# Keep both FROM lines on the same pinned tag (tests/test_deploy.py checks it).
FROM python:3.11.16-slim-trixie AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# A venv without pip: the runtime image gets the project and its [project.dependencies] only,
# not the test/bench extras and not the installer. The dependencies are the runtime lock's
# (`make lock`), hash-checked, in a layer of their own that only a lock change rebuilds.
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --require-hashes -r requirements.lock

# Then the project, without dependencies: only what the wheel is made of (.dockerignore keeps
# the rest of the context out).
COPY pyproject.toml README.md ./
COPY consumer/ consumer/
COPY schemas/ schemas/
RUN python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && python -m pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/python -c "import consumer, schemas; print('installed', consumer.__name__)"


FROM python:3.11.16-slim-trixie AS runtime

LABEL org.opencontainers.image.title="llm-usage-consumer" \
      org.opencontainers.image.description="Kafka consumer that turns LLM gateway usage events into Prometheus metrics" \
      org.opencontainers.image.licenses="MPL-2.0"

# A fixed numeric UID/GID so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 consumer \
    && useradd --system --uid 10001 --gid consumer --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin consumer

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    USAGE_CONSUMER_METRICS_HOST=0.0.0.0 \
    USAGE_CONSUMER_METRICS_PORT=9464

USER 10001:10001
WORKDIR /tmp

EXPOSE 9464

# /healthz answers 200 while the worker loop runs (any other status, or no answer, fails).
# curl is not in the slim image; the worker's own Python is.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('USAGE_CONSUMER_METRICS_PORT', '9464') + '/healthz', timeout=4)"]

ENTRYPOINT ["python", "-m", "consumer"]
CMD ["run"]
