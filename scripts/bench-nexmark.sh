#!/usr/bin/env bash
# Nexmark through the SQL engine (docs/benchmarks.md). Throughput: the events are written to
# the broker first, then each query's pipeline reads the bid topic from the beginning and
# writes its sink topic; the figure is bids read per second of wall time, and per CPU-second
# of the whole kappa process (broker and pipeline together). Latency: q0 with events
# generated in real time at a fixed rate, measured from each event's time to its output.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
kappa="$CARGO_TARGET_DIR/release/kappa"
events="${EVENTS:-5000000}"
rate="${RATE:-50000}"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
kport=19492
hport=19493
server="--server http://127.0.0.1:$hport"
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$kport --http-listen 127.0.0.1:$hport --registry-listen 127.0.0.1:0 >"$dir/kappa.log" 2>&1 &
pid=$!
sleep 1
"$kappa" bench nexmark --bootstrap-server 127.0.0.1:$kport --events "$events" --partitions 4
bids=$((events / 50 * 46))
"$kappa" sql $server -f "$root/bench/nexmark/tables.sql" >/dev/null
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
tick=$(getconf CLK_TCK)
for q in q0 q1 q2 q5 q7; do
  c0=$(cpu); t0=$(date +%s.%N)
  id=$("$kappa" sql $server -f "$root/bench/nexmark/$q.sql" | sed -n 's/.*Submitted pipeline \([^ ]*\).*/\1/p')
  while :; do
    n=$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["records_in"])')
    [ "$n" -ge "$bids" ] && break
    sleep 0.2
  done
  t1=$(date +%s.%N); c1=$(cpu)
  out=$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["records_out"])')
  "$kappa" pipeline stop $server "$id" >/dev/null
  python3 - "$q" "$bids" "$t0" "$t1" "$c0" "$c1" "$tick" "$out" <<'PY'
import sys
q, bids, t0, t1, c0, c1, tick, out = sys.argv[1:]
wall = float(t1) - float(t0); cpu = (int(c1) - int(c0)) / int(tick)
print(f"{q}: {int(bids)} bids in {wall:.2f} s = {int(bids)/wall:,.0f} events/s; "
      f"{cpu:.2f} CPU-s = {int(bids)/cpu:,.0f} events per CPU-second; {out} records out")
PY
done

# latency: q0 over a live bid topic fed at a fixed rate
"$kappa" sql $server -e "
CREATE TABLE live_bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
  WITH ('connector' = 'kafka', 'topic' = 'live-bid', 'format' = 'json', 'scan.startup.mode' = 'latest-offset');
CREATE TABLE live_q0 (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
  date_time TIMESTAMP(3), extra VARCHAR) WITH ('connector' = 'kafka', 'topic' = 'live-q0', 'format' = 'json');
INSERT INTO live_q0 SELECT * FROM live_bid;" >/dev/null
sleep 2
"$kappa" bench nexmark --bootstrap-server 127.0.0.1:$kport --events $((rate * 30)) --rate "$rate" --partitions 4 \
  --person-topic live-person --auction-topic live-auction --bid-topic live-bid >/dev/null
sleep 2
"$root/.venv/bin/python" "$root/bench/nexmark/latency.py" 127.0.0.1:$kport live-q0 "$rate"
