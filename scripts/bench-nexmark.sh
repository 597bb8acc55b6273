#!/usr/bin/env bash
# Nexmark through the SQL engine (docs/benchmarks.md). Throughput: the events are written to
# the broker first, then each query's pipeline reads the bid topic from the beginning and
# writes its sink topic; the figure is bids read per second of wall time, and per CPU-second
# of the whole kappa process (broker and pipeline together). Latency: q0 with events
# generated in real time at a fixed rate, measured from each event's time to its output.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
bash "$root/scripts/build-deps.sh"
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
echo "| query | runtime | events/s | events per processor CPU-second | events per kappa CPU-second | records out |"
echo "|---|---|---|---|---|---|"
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
# the stream processor's own threads: pipeline coordinators and tasks (v1: pipeline-pN; v2:
# pipeline-pN, pN-source-i, pN-keyed-i) and librdkafka's (rdk:*); the broker's are left out
proc_cpu() {
  local sum=0
  for t in /proc/$pid/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in
      pipeline-*|p[0-9]*-source-*|p[0-9]*-keyed-*|rdk:*)
        sum=$((sum + $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0))) ;;
    esac
  done
  echo $sum
}
tick=$(getconf CLK_TCK)
# each query on each runtime setting: v1; v2 at parallelism 1 and 2, checkpoints every 10 s
# with at-least-once or with exactly-once (a Kafka transaction per checkpoint)
configs="${CONFIGS:-v1 v2-p1 v2-p1-eos v2-p2 v2-p2-eos}"
queries="${QUERIES:-q0 q1 q2 q5 q7}"
sql_for() {
  local q=$1 cfg=$2 opts="" sets=""
  case $cfg in
    v1) sets="SET 'execution.runtime' = 'v1';" ;;
    v2-p*) sets="SET 'parallelism.default' = '$(echo "$cfg" | sed 's/v2-p\([0-9]*\).*/\1/')';" ;;
  esac
  case $cfg in *-eos) opts=", 'sink.delivery-guarantee' = 'exactly-once'" ;; esac
  local name="${q}_${cfg//-/_}"
  echo "$sets"
  sed -e "s/nexmark_$q\b/nexmark_$name/g" -e "s/'nexmark-$q'/'nexmark-$q-$cfg'/" \
      -e "s/'format' = 'json'\$/'format' = 'json'$opts/" "$root/bench/nexmark/$q.sql"
}
for q in $queries; do
for cfg in $configs; do
  sql_for "$q" "$cfg" > "$dir/$q-$cfg.sql"
  c0=$(cpu); p0=$(proc_cpu); t0=$(date +%s.%N)
  id=$("$kappa" sql $server -f "$dir/$q-$cfg.sql" | sed -n 's/.*Submitted pipeline \([^ ]*\).*/\1/p')
  [ -n "$id" ] || { echo "$q $cfg: the pipeline did not start" >&2; "$kappa" sql $server -f "$dir/$q-$cfg.sql" >&2 || true; exit 1; }
  while :; do
    n=$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["records_in"])')
    [ "$n" -ge "$bids" ] && break
    sleep 0.2
  done
  t1=$(date +%s.%N); c1=$(cpu); p1=$(proc_cpu)
  out=$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["records_out"])')
  "$kappa" pipeline stop $server "$id" >/dev/null
  python3 - "$q" "$cfg" "$bids" "$t0" "$t1" "$c0" "$c1" "$p0" "$p1" "$tick" "$out" <<'PY'
import sys
q, cfg, bids, t0, t1, c0, c1, p0, p1, tick, out = sys.argv[1:]
wall = float(t1) - float(t0); cpu = (int(c1) - int(c0)) / int(tick)
pcpu = max((int(p1) - int(p0)) / int(tick), 1e-9)
print(f"| {q} | {cfg} | {int(bids)/wall:,.0f} | {int(bids)/pcpu:,.0f} | {int(bids)/cpu:,.0f} | {out} |")
PY
done
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
