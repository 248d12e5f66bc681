# syntax=docker/dockerfile:1
# One image for the three services; docker-compose.yml picks one with `python -m producer|consumer|retrainer`.
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /uvx /usr/local/bin/

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/edgeloop/venv \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    PATH=/opt/edgeloop/venv/bin:$PATH

WORKDIR /opt/edgeloop/src

# Dependencies first, from the lock file only: this layer (torch is most of it) is rebuilt only when
# uv.lock changes, not on every code change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

COPY README.md ./
COPY edgeloop ./edgeloop
COPY producer ./producer
COPY consumer ./consumer
COPY retrainer ./retrainer
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# Not root. The mount points exist with this owner so that fresh named volumes inherit it.
RUN useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin edgeloop \
 && mkdir -p /registry /data \
 && chown edgeloop:edgeloop /registry /data
USER edgeloop
WORKDIR /home/edgeloop
# The installed packages belong to root: numba caches the score index's compiled kernel here instead.
ENV NUMBA_CACHE_DIR=/home/edgeloop/.cache/numba

EXPOSE 9101 9102 9103
CMD ["python", "-m", "consumer", "--help"]
