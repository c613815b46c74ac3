# One image for the whole cell: `python -m manipulator`, `python -m controller`,
# `python -m sensor` (docker-compose.yml picks the command per service) and the
# `workcell` command. Runtime dependencies only: no dev extras, no tests.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# The dependencies first, in a layer of their own: Docker rebuilds it only when
# pyproject.toml changes, not on every code edit. Their list is read from
# pyproject.toml itself (its exact pins, and what building the package takes),
# so there is no second list to keep.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(p['build-system']['requires'] + p['project']['dependencies']))" > requirements.txt \
    && pip install --requirement requirements.txt \
    && rm requirements.txt
# Then the sources, and the package itself: no dependencies to fetch (they are
# in), nothing to download to build it (setuptools is in too).
# README.md is the package's long description: pip needs it to build.
COPY README.md ./
COPY workcell ./workcell
COPY controller ./controller
COPY manipulator ./manipulator
COPY sensor ./sensor
RUN pip install --no-deps --no-build-isolation . && rm -rf build ./*.egg-info

# A non-root user owns /data, so a fresh named volume mounted there (which
# Docker seeds from the image, ownership included) is writable by it.
RUN useradd --system --create-home --uid 10001 workcell \
    && mkdir -p /data \
    && chown workcell:workcell /data
USER workcell
WORKDIR /home/workcell

CMD ["workcell", "--help"]
