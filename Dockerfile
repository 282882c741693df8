# One image for every kernelwatch service (api, dashboard, worker, migrate).
# The GPU worker is built with WITH_TORCH=1: the default torch wheel on Linux brings its CUDA
# runtime; FlashInfer versions get their own virtualenvs on the node at run time (data volume).
FROM python:3.11-slim

ARG WITH_TORCH=0
ARG TORCH=torch==2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KERNELWATCH_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY harness harness
COPY kernelwatch kernelwatch
RUN pip install ./harness . \
    && if [ "$WITH_TORCH" = "1" ]; then pip install "$TORCH"; fi \
    && mkdir -p /data

EXPOSE 8000 8050
CMD ["kernelwatch", "api", "--host", "0.0.0.0", "--port", "8000"]
