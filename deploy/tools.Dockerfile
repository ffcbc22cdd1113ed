# syntax=docker/dockerfile:1
# ibflow tools: every workspace package in one image, for the one-shot `migrate` service
# (ibflow-migrate: the migrations of every package, the JetStream streams) and the
# operator CLI (`docker compose run --rm migrate ibflow status`). Build from the root:
#   docker build -f deploy/tools.Dockerfile -t ibflow/tools .

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim-bookworm AS build
COPY --from=uv /uv /bin/uv
ENV UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src

# 1. Dependencies only. uv needs every workspace member's pyproject.toml to check the lock.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/api/pyproject.toml services/api/
COPY services/cli/pyproject.toml services/cli/
COPY services/gateway-bridge/pyproject.toml services/gateway-bridge/
COPY services/gateway-sim/pyproject.toml services/gateway-sim/
COPY services/order-manager/pyproject.toml services/order-manager/
COPY services/position-monitor/pyproject.toml services/position-monitor/
COPY services/scheduler/pyproject.toml services/scheduler/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace --all-packages

# 2. The sources, then every package, not editable.
COPY shared/ shared/
COPY services/ services/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --all-packages

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 ibflow \
    && useradd --system --uid 10001 --gid ibflow --no-create-home --shell /usr/sbin/nologin ibflow
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER ibflow:ibflow
# A one-shot container has nothing to probe; compose waits for it to exit with 0
# (depends_on: condition: service_completed_successfully).
HEALTHCHECK NONE
ENTRYPOINT []
CMD ["ibflow-migrate"]
