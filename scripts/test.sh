#!/usr/bin/env bash
# The whole test suite: sets up its own dependencies, builds, runs Rust tests with nextest,
# then the real-client end-to-end tests (kcat, confluent-kafka, kafka-python, kafkajs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"

bash scripts/build-deps.sh
bash scripts/setup-test-deps.sh

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --locked --bin kappa
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast
else
  cargo test --locked --workspace
fi

export KAPPA_BIN="$CARGO_TARGET_DIR/debug/kappa"
.venv/bin/python -m pytest -q tests/e2e

# librdkafka's own test suite against `kappa dev` (scripts/librdkafka-suite.sh; `--all` runs
# every single-broker entry, docs/benchmarks.md and the README say how it went): in CI, the
# entries for what the broker does most (produce, consume, offsets, groups, idempotence,
# transactions, aborted messages, record errors, static membership). 0113 (cooperative
# rebalances, about 10 minutes) runs with `--all`.
bash scripts/librdkafka-suite.sh 0001 0002 0005 0011 0012 0013 0015 0022 0030 0055 0061 0090 \
  0092 0094 0102 0103 0129 0137
