# One image for the whole cell: `python -m manipulator`, `python -m controller`,
# `python -m sensor` (docker-compose.yml picks the command per service) and the
# `workcell` command. Runtime dependencies only: no dev extras, no tests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# README.md is the package's long description: pip needs it to build.
COPY pyproject.toml README.md ./
COPY workcell ./workcell
COPY controller ./controller
COPY manipulator ./manipulator
COPY sensor ./sensor
RUN pip install . && rm -rf build ./*.egg-info

# A non-root user owns /data, so a fresh named volume mounted there (which
# Docker seeds from the image, ownership included) is writable by it.
RUN useradd --system --create-home --uid 10001 workcell \
    && mkdir -p /data \
    && chown workcell:workcell /data
USER workcell
WORKDIR /home/workcell

CMD ["workcell", "--help"]
