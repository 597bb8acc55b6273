#!/usr/bin/env bash
# Schema registry benchmark of record (docs/benchmarks.md): registrations per second (each a
# new schema version, checked for compatibility and written to _schemas with acks=all), then
# GET /schemas/ids/{id} per second, the call every deserializer makes. Client and registry
# share this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
bash "$root/scripts/build-deps.sh"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
kappa="$CARGO_TARGET_DIR/release/kappa"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
kport=19492
rport=19481
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT

"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$kport --http-listen 127.0.0.1:0 \
  --registry-listen 127.0.0.1:$rport >"$dir/kappa.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break
  sleep 0.1
done
"$kappa" bench registry --registry-url "http://127.0.0.1:$rport" \
  --connections "${CONNECTIONS:-16}" --seconds "${SECONDS_READ:-10}" \
  --registrations "${REGISTRATIONS:-2000}" --subjects "${SUBJECTS:-8}"
