#!/usr/bin/env bash
# Broker benchmark of record (docs/benchmarks.md): the disk's fsynced sequential write
# bandwidth, then produce (acks=all, acks=1, acks=all in steady state), consume from a warm
# page cache, and produce latency at half the maximum rate (acks=all three times, then
# acks=1), with the disk's own fsync latency at that rate and the broker's fsync and Produce
# latency histograms for each latency run. Client and broker share this machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
bash "$root/scripts/build-deps.sh"
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
# Each throughput run twice: with librdkafka, and with Kappa's own lean producer
# (`--client native`), which spends a fifth of librdkafka's CPU per GB and so leaves the
# broker most of the two cores.
produce() { "$kappa" bench produce $b --records "$records" --record-size 1024 --partitions 6 "$@"; }
produce --topic acks-all --acks all | tee "$dir/all.txt"
produce --topic acks-all-native --acks all --client native | tee "$dir/all-native.txt"
produce --topic acks-1 --acks 1 | tee "$dir/one.txt"
produce --topic acks-1-native --acks 1 --client native | tee "$dir/one-native.txt"
# Steady state, as on a broker whose retention deletes as much as is written: rolls reuse
# the files of expired segments, so appends overwrite written blocks and fsyncs commit no
# journal. Small segments and retention (32 and 64 MiB per partition) reach it within a 1 GB
# warm-up, which is not measured.
"$kappa" topic create steady $b --partitions 6 -c segment.bytes=33554432 -c retention.bytes=67108864 >/dev/null
produce --topic steady --acks all --client native >/dev/null
echo "steady state (segment files reused):"
produce --topic steady --acks all --client native | tee "$dir/steady.txt"
# The first read follows the writes closely (the kernel may still be writing them back); the
# next ones read from a warm page cache.
for run in 1 2 3 4 5 6; do
  "$kappa" bench consume $b --topic acks-all
done
rate_of() { sed -n 's/.*: \([0-9]*\) records\/s.*/\1/p' "$1"; }
half=$(($(rate_of "$dir/all-native.txt") / 2))
half_one=$(($(rate_of "$dir/one-native.txt") / 2))
half_rdkafka=$(($(rate_of "$dir/all.txt") / 2))
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
# One latency run of 10 s at `rate` records/s, with what the broker saw during it.
latency_run() {
  local topic=$1 rate=$2; shift 2
  broker_histograms >"$dir/h0"
  "$kappa" bench produce $b --topic "$topic" --records $((rate * 10)) --record-size 1024 --partitions 6 --rate "$rate" --linger-ms 1 "$@"
  broker_histograms >"$dir/h1"
  broker_summary "$dir/h0" "$dir/h1"
}
# Latency is measured on a settled disk: right after the 4 GB written above, the device is
# still absorbing them and stalls fsyncs for 50-150 ms (docs/benchmarks.md).
settle() { sync; sleep 20; }
settle
# Latency at half the acks=all maximum (the native producer's), twice: first while the page
# cache still grows into memory this VM has never touched (slow to write: see
# docs/benchmarks.md), then after the throughput topics are deleted, so appends reuse
# page-cache memory, as on a broker whose page cache is full (the steady state of any
# long-running broker).
# First the disk alone at that rate: the fsyncs it stalls delay acks=all records whatever the
# broker does.
echo "disk alone, $((half * 1024 / 1048576)) MB/s: $("$kappa" bench fsync --dir "$dir" --rate-mb $((half * 1024 / 1048576)))"
echo "latency, acks=all, native producer, page cache growing into untouched memory:"
latency_run latency "$half" --acks all --client native
for t in acks-1 acks-1-native acks-all-native latency; do "$kappa" topic delete $b $t >/dev/null; done
settle
echo "latency, acks=all, native producer, page cache reusing memory:"
latency_run latency2 "$half" --acks all --client native
settle
echo "latency, acks=all, native producer, steady state (segment files reused):"
latency_run steady "$half" --acks all --client native
settle
echo "latency, acks=all, librdkafka at half its own maximum:"
latency_run latency3 "$half_rdkafka" --acks all
# And acks=1 at half its own maximum: no fsync in the answer's path.
echo "latency, acks=1, native producer:"
latency_run latency1 "$half_one" --acks 1 --client native
"$kappa" bench consume $b --topic acks-all --group bench-group --members 3
