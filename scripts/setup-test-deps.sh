#!/usr/bin/env bash
# Installs what the tests need, idempotently: Debian's kcat, the Python Kafka clients and
# DuckDB (the SQL tests' batch oracle) in a local venv (.venv) and kafkajs and
# @kafkajs/confluent-schema-registry in a local node_modules (tests/js).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_apt=()
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import confluent_kafka, duckdb, kafka, pytest, fastavro, jsonschema, google.protobuf' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r tests/requirements.txt
fi

if [ ! -d tests/js/node_modules/kafkajs ] || [ ! -d tests/js/node_modules/@kafkajs/confluent-schema-registry ]; then
  (cd tests/js && npm install --no-audit --no-fund --silent)
fi
