#!/usr/bin/env bash
# Starts Kappa on this machine with zero configuration (extra flags are passed to `kappa dev`).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required: install Rust from your distribution or rustup" >&2
  exit 1
fi
bash "$root/scripts/build-deps.sh"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa
exec "$CARGO_TARGET_DIR/release/kappa" dev "$@"
