#!/usr/bin/env bash
# Broker benchmark of record (docs/benchmarks.md): the disk's fsynced sequential write
# bandwidth, then produce (acks=all, acks=1), consume from a warm page cache, and produce
# latency at half the maximum rate (acks=all twice, then acks=1), with the broker's own fsync
# and Produce latency histograms for each latency run. Client and broker share this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
kappa="$CARGO_TARGET_DIR/release/kappa"
records="${RECORDS:-1000000}"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
port=19392
http=19393
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT

# The disk twice: through the page cache (what the issue's `dd ... conv=fdatasync` measures,
# page-cache allocation included) and with O_DIRECT (the device alone).
echo "disk, page cache: $(dd if=/dev/zero of="$dir/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)"
rm -f "$dir/dd"
echo "disk, O_DIRECT:   $(dd if=/dev/zero of="$dir/dd" bs=1M count=1024 oflag=direct conv=fdatasync 2>&1 | tail -1)"
rm -f "$dir/dd"
"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$port --http-listen 127.0.0.1:$http --registry-listen 127.0.0.1:0 >"$dir/kappa.log" 2>&1 &
pid=$!
sleep 1
b="--bootstrap-server 127.0.0.1:$port"
"$kappa" bench produce $b --topic acks-all --records "$records" --record-size 1024 --partitions 6 --acks all | tee "$dir/all.txt"
"$kappa" bench produce $b --topic acks-1 --records "$records" --record-size 1024 --partitions 6 --acks 1 | tee "$dir/one.txt"
# The first read follows the writes closely (the kernel may still be writing them back); the
# next ones read from a warm page cache.
for run in 1 2 3 4 5 6; do
  "$kappa" bench consume $b --topic acks-all
done
max=$(sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' "$dir/all.txt")
half=$((max / 2))
max_one=$(sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' "$dir/one.txt")
half_one=$((max_one / 2))
# The broker's own histograms: fsync durations, and Produce request durations (arrival to
# answer), as cumulative buckets "name le count". They tell device stalls from the rest.
broker_histograms() {
  curl -s "http://127.0.0.1:$http/metrics" | sed -n \
    -e 's/^kappa_log_fsync_duration_seconds_bucket{le="\([^"]*\)"} \([0-9]*\).*/fsync \1 \2/p' \
    -e 's/^kappa_broker_request_duration_seconds_bucket{le="\([^"]*\)",api="Produce"} \([0-9]*\).*/produce \1 \2/p'
}
# What the broker saw in one run: the difference of two snapshots.
broker_summary() {
  awk 'NR==FNR { before[$1 " " $2] = $3; next }
       { n[$1, $2] = $3 - before[$1 " " $2]; if (!($1 in seen)) { seen[$1]; names[++m] = $1 }; les[$1, ++k[$1]] = $2 }
       END {
         for (j = 1; j <= m; j++) {
           h = names[j]; total = n[h, "+Inf"]
           printf "  broker %s: %d", (h == "fsync" ? "fsyncs" : "Produce requests"), total
           for (i = 1; i <= k[h]; i++) if (les[h, i] == "0.0128" || les[h, i] == "0.1024")
             printf ", over %s s: %d", les[h, i], total - n[h, les[h, i]]
           for (i = k[h]; i >= 1; i--) if (i == 1 || n[h, les[h, i-1]] < total) { printf ", slowest under %s s\n", les[h, i]; break }
         }
       }' "$1" "$2"
}
# Latency is measured on a settled disk: right after the 2 GB written above, the device is
# still absorbing them and stalls fsyncs for 50-150 ms (docs/benchmarks.md).
sync
sleep 20
# Latency at half the acks=all maximum, twice: first while the page cache still grows into
# memory this VM has never touched (slow to write: see docs/benchmarks.md), then after the
# throughput topics are deleted, so appends reuse page-cache memory, as on a broker whose
# page cache is full (the steady state of any long-running broker).
echo "latency, page cache growing into untouched memory:"
broker_histograms >"$dir/f0"
"$kappa" bench produce $b --topic latency --records $((half * 10)) --record-size 1024 --partitions 6 --acks all --rate "$half" --linger-ms 1
broker_histograms >"$dir/f1"
broker_summary "$dir/f0" "$dir/f1"
"$kappa" topic delete $b acks-1 >/dev/null
"$kappa" topic delete $b latency >/dev/null
sync
sleep 20
echo "latency, page cache reusing memory:"
broker_histograms >"$dir/f2"
"$kappa" bench produce $b --topic latency2 --records $((half * 10)) --record-size 1024 --partitions 6 --acks all --rate "$half" --linger-ms 1
broker_histograms >"$dir/f3"
broker_summary "$dir/f2" "$dir/f3"
# And acks=1 at half its own maximum: no fsync in the answer's path.
echo "latency, acks=1:"
broker_histograms >"$dir/f4"
"$kappa" bench produce $b --topic latency1 --records $((half_one * 10)) --record-size 1024 --partitions 6 --acks 1 --rate "$half_one" --linger-ms 1
broker_histograms >"$dir/f5"
broker_summary "$dir/f4" "$dir/f5"
"$kappa" bench consume $b --topic acks-all --group bench-group --members 3
