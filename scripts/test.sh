#!/usr/bin/env bash
# The whole test suite: sets up its own dependencies, builds, runs Rust tests with nextest,
# then the real-client end-to-end tests (kcat, confluent-kafka, kafka-python, kafkajs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"

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
