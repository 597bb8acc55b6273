#!/usr/bin/env bash
# Transactions benchmark of record (docs/benchmarks.md): librdkafka producing 1 KiB records
# with acks=all and idempotence, then the same in transactions of 10, 100 and 1,000 batches
# (batch.size 16 KiB = 16 records a batch), all against one `kappa dev`; then a consumer
# reading a transactional topic with read_committed and with read_uncommitted.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
bash "$root/scripts/build-deps.sh"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
kappa="$CARGO_TARGET_DIR/release/kappa"
records="${RECORDS:-1000000}"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
port=19492
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$port --http-listen 127.0.0.1:0 --registry-listen 127.0.0.1:0 >"$dir/kappa.log" 2>&1 &
pid=$!
sleep 1
b="--bootstrap-server 127.0.0.1:$port"
batch=16384
per_batch=$((batch / 1024))
produce() {
  "$kappa" bench produce $b --records "$records" --record-size 1024 --partitions 6 --acks all \
    --batch-size $batch -X enable.idempotence=true "$@"
}
produce --topic idempotent | tee "$dir/base.txt"
for batches in 10 100 1000; do
  produce --topic "txn-$batches" --records-per-txn $((batches * per_batch)) | tee "$dir/txn-$batches.txt"
done
rate_of() { sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' "$1"; }
base=$(rate_of "$dir/base.txt")
for batches in 10 100 1000; do
  t=$(rate_of "$dir/txn-$batches.txt")
  echo "transactions of $batches batches: $t records/s = $((100 * t / base)) % of idempotent produce ($base records/s)"
done
for isolation in read_committed read_uncommitted read_committed read_uncommitted; do
  echo -n "$isolation: "
  "$kappa" bench consume $b --topic txn-100 -X isolation.level=$isolation
done
