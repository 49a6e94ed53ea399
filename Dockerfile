# syntax=docker/dockerfile:1
# One image for every deployable of shopkata, chosen by its command (docs/containers.md):
#   python -m monolith migrate|seed|serve     the modular monolith
#   python -m services migrate|serve NAME     one service of a topology
#   python -m gateway serve                   the gateway
#   python -m launcher up                     the native launcher (everything in one container)
# and, in the `locust` target, `locust -f loadtests/locustfile.py`.
#
#   docker build -t shopkata .                    (target app, the default)
#   docker build --target locust -t shopkata-locust .
#
# Dependencies come from uv.lock only (uv sync --frozen, no dev group); the runtime stages
# carry the virtualenv and the source, not uv, compilers or caches; they run as uid 10001.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The uv the Makefile pins (UV_VERSION), so the image resolves uv.lock like a checkout does.
ARG UV_VERSION=0.13.9

FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- build: the locked virtualenv in /app/.venv ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3

# -- build-locust: the same virtualenv plus Locust ---------------------------------------
# Locust is not in uv.lock yet (the load tests add it); until it is, it is pinned here.
FROM build AS build-locust
ARG LOCUST_VERSION=2.47.0
RUN --mount=type=cache,target=/root/.cache/uv \
    uv pip install --python /app/.venv/bin/python "locust==${LOCUST_VERSION}"

# -- runtime: source and an unprivileged user, no virtualenv yet --------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --home-dir /app --no-create-home shop \
    && mkdir -p /app/var/keys \
    && chown -R shop:shop /app/var \
    && chmod 700 /app/var/keys
WORKDIR /app
COPY --chown=root:root shop ./shop
COPY --chown=root:root monolith ./monolith
COPY --chown=root:root services ./services
COPY --chown=root:root gateway ./gateway
COPY --chown=root:root launcher ./launcher
COPY --chown=root:root loadtests ./loadtests
COPY --chown=root:root topologies ./topologies
COPY --chown=root:root docker/topology-services.toml docker/topology-gateway-monolith.toml ./docker/
# var/ (keys, SQLite files, launcher runs) is the only place the app writes; compose mounts
# a named volume on var/keys, which starts with this folder's owner (uid 10001) and mode
# (0700: the signing keys are for that user alone).
USER 10001:10001

# -- locust: a master or a worker of a distributed load test (docker-compose.yml) ---------
FROM runtime AS locust
COPY --from=build-locust /app/.venv /app/.venv
EXPOSE 8089 5557
CMD ["locust", "-f", "loadtests/locustfile.py"]

# -- app (default): any deployable, by command; the monolith unless told otherwise --------
FROM runtime AS app
COPY --from=build /app/.venv /app/.venv
EXPOSE 8000
CMD ["python", "-m", "monolith", "serve", "--host", "0.0.0.0", "--port", "8000"]
