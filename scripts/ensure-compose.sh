#!/usr/bin/env bash
# The compose test validates docker-compose.yml with `docker compose config` (or Debian's
# `docker-compose`, v1.29, which reads the same file). Install Debian's when neither exists.
set -euo pipefail
if docker compose version >/dev/null 2>&1 || docker-compose version >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing docker-compose (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
else
  echo "no docker compose here and no way to install it: the compose test will be skipped" >&2
fi
