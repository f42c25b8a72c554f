# m2m-surveillance application image: the `surveil` command (worker, store, dashboard, ...).
# Used by docker-compose.yml; configure it through SURVEIL_* environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package is built from (keeps .venv, var/, .git and local data out of the image).
# README.m[d]: copied when present (pyproject's readme), no error when absent.
COPY pyproject.toml README.m[d] ./
COPY streams ./streams
COPY detectors ./detectors
COPY dashboard ./dashboard
COPY replay ./replay
COPY surveil ./surveil
COPY exchange ./exchange
RUN pip install . \
    && surveil --help > /dev/null

# Unprivileged user; /data is owned by it so a named volume mounted there is writable.
RUN useradd --create-home --uid 10001 surveil \
    && mkdir -p /data \
    && chown surveil:surveil /data
USER surveil
ENV SURVEIL_DATA_DIR=/data

EXPOSE 8501
CMD ["surveil", "--help"]
