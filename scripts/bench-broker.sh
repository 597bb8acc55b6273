#!/usr/bin/env bash
# Broker benchmark of record (docs/benchmarks.md): the disk's fsynced sequential write
# bandwidth, then produce (acks=all, acks=1), consume from a warm page cache, and produce
# latency at half the acks=all maximum rate. Client and broker share this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
kappa="$CARGO_TARGET_DIR/release/kappa"
records="${RECORDS:-1000000}"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
port=19392
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT

echo "disk: $(dd if=/dev/zero of="$dir/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)"
rm -f "$dir/dd"
"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$port --http-listen 127.0.0.1:0 --registry-listen 127.0.0.1:0 >"$dir/kappa.log" 2>&1 &
pid=$!
sleep 1
b="--bootstrap-server 127.0.0.1:$port"
"$kappa" bench produce $b --topic acks-all --records "$records" --record-size 1024 --partitions 6 --acks all | tee "$dir/all.txt"
"$kappa" bench produce $b --topic acks-1 --records "$records" --record-size 1024 --partitions 6 --acks 1
# The first read follows the writes closely (the kernel may still be writing them back); the
# next ones read from a warm page cache.
for run in 1 2 3 4 5 6; do
  "$kappa" bench consume $b --topic acks-all
done
max=$(sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' "$dir/all.txt")
half=$((max / 2))
# Latency at half the acks=all maximum, twice: first while the page cache still grows into
# memory this VM has never touched (slow to write: see docs/benchmarks.md), then after the
# throughput topics are deleted, so appends reuse page-cache memory, as on a broker whose
# page cache is full (the steady state of any long-running broker).
echo "latency, page cache growing into untouched memory:"
"$kappa" bench produce $b --topic latency --records $((half * 10)) --record-size 1024 --partitions 6 --acks all --rate "$half" --linger-ms 1
"$kappa" topic delete $b acks-1 >/dev/null
"$kappa" topic delete $b latency >/dev/null
echo "latency, page cache reusing memory:"
"$kappa" bench produce $b --topic latency2 --records $((half * 10)) --record-size 1024 --partitions 6 --acks all --rate "$half" --linger-ms 1
"$kappa" bench consume $b --topic acks-all --group bench-group --members 3
