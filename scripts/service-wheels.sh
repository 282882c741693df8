#!/usr/bin/env bash
# Wheels of kernelwatch's own service dependencies for a GPU node without a package index
# (CPython 3.12, x86-64), into .whl/svc/. The device image already has torch, numpy, scipy,
# pandas, pyyaml, rich, httpx, click, prometheus-client, nvidia-ml-py; these are the rest the
# worker, the API and the release flow need with the embedded default (SQLite + local broker).
set -euo pipefail
dir=${1:-.whl/svc}
mkdir -p "$dir"
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
pkgs=(fastapi starlette pydantic pydantic-core pydantic-settings python-dotenv typing-inspection
      annotated-types annotated-doc sqlalchemy greenlet alembic mako celery kombu billiard vine amqp
      click-didyoumean click-repl click-plugins prompt-toolkit wcwidth tzlocal tzdata
      python-dateutil platformdirs uvicorn ruptures opentelemetry-api importlib-metadata)
python3 -m pip download -q --no-deps "${plat[@]}" -d "$dir" "${pkgs[@]}" 2>&1 | grep -v "is ignored" || true
du -sh "$dir"
