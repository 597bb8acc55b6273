#!/usr/bin/env bash
# Large state (docs/benchmarks.md): a non-windowed aggregation over KEYS distinct keys (default
# 10 million) on the v2 runtime, with its memory capped far below the state's size. Writes
# KEYS JSON records {"k": i, "v": i % 7} to a 4-partition topic, runs
#   SELECT k, COUNT(*), SUM(v) FROM big GROUP BY k   into an upsert-kafka table,
# and reports events/s, the process's CPU, RSS, the checkpoints' duration and state size.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kappa/target}"
bash "$root/scripts/build-deps.sh"
cargo build --release --manifest-path "$root/Cargo.toml" --bin kappa >&2
command -v kcat >/dev/null || { echo "kcat is needed (scripts/setup-test-deps.sh installs it)" >&2; exit 1; }
kappa="$CARGO_TARGET_DIR/release/kappa"
keys="${KEYS:-10000000}"
parallelism="${PARALLELISM:-2}"
dir="$(mktemp -d "${BENCH_DIR:-$root}/.bench.XXXXXX")"
kport=19592
hport=19593
server="--server http://127.0.0.1:$hport"
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
"$kappa" dev --data-dir "$dir/data" --kafka-listen 127.0.0.1:$kport --http-listen 127.0.0.1:$hport --registry-listen 127.0.0.1:0 >"$dir/kappa.log" 2>&1 &
pid=$!
sleep 1
"$kappa" topic create big --partitions 4 --bootstrap-server 127.0.0.1:$kport >/dev/null 2>&1 || true
t0=$(date +%s.%N)
awk -v n="$keys" 'BEGIN { for (i = 0; i < n; i++) printf "{\"k\":%d,\"v\":%d}\n", i, i % 7 }' |
  kcat -P -b 127.0.0.1:$kport -t big -X linger.ms=20 -X batch.num.messages=100000
echo "produced $keys records in $(python3 -c "import time; print(round(time.time() - $t0, 1))") s" >&2
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
tick=$(getconf CLK_TCK)
c0=$(cpu); t0=$(date +%s.%N)
"$kappa" sql $server -e "
SET 'parallelism.default' = '$parallelism';
SET 'execution.checkpointing.interval' = '10 s';
SET 'state.cache.max-keys' = '100000';
SET 'state.backend.rocksdb.block.cache-size' = '16 mb';
SET 'state.backend.rocksdb.writebuffer.size' = '16 mb';
CREATE TABLE big (k BIGINT, v BIGINT) WITH ('connector' = 'kafka', 'topic' = 'big', 'format' = 'json', 'scan.startup.mode' = 'earliest-offset');
CREATE TABLE big_counts (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED)
  WITH ('connector' = 'upsert-kafka', 'topic' = 'big-counts', 'key.format' = 'json', 'value.format' = 'json');
INSERT INTO big_counts SELECT k, COUNT(*), SUM(v) FROM big GROUP BY k;" >/dev/null
id=p1
rss_max=0
: > "$dir/checkpoints"
while :; do
  curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" > "$dir/now.json"
  n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"]["records_in"])' "$dir/now.json")
  python3 -c 'import json,sys; c = json.load(open(sys.argv[1]))["checkpoints"]; print(c["last_id"], c["last_duration_ms"], c["last_size_bytes"], c["last_full_size_bytes"])' "$dir/now.json" >> "$dir/checkpoints"
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status); [ "$rss" -gt "$rss_max" ] && rss_max=$rss
  [ "$n" -ge "$keys" ] && break
  sleep 1
done
t1=$(date +%s.%N); c1=$(cpu)
# one more checkpoint after the last record, with all the state in it
before=$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"]["completed"])')
while [ "$(curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpoints"]["completed"])')" -le "$((before + 1))" ]; do sleep 1; done
curl -s "http://127.0.0.1:$hport/v1/pipelines/$id" > "$dir/p.json"
state_bytes=$(du -sb "$dir/data/pipelines/$id" | cut -f1)
python3 - "$keys" "$t0" "$t1" "$c0" "$c1" "$tick" "$rss_max" "$state_bytes" "$dir/p.json" "$dir/checkpoints" <<'PY'
import json, sys
keys, t0, t1, c0, c1, tick, rss, state, path, chk = sys.argv[1:]
during = {}
for line in open(chk):
    i, d, new, full = line.split()
    if i != "None":
        during[i] = (int(d), int(new), int(full))
if during:
    print("checkpoints during the load (id: duration ms, new MB, all MB): " +
          ", ".join(f"{i}: {d}, {n/1e6:.1f}, {f/1e6:.1f}" for i, (d, n, f) in sorted(during.items(), key=lambda x: int(x[0]))))
p = json.load(open(path)); c = p["checkpoints"]; m = p["metrics"]
wall = float(t1) - float(t0); cpu = (int(c1) - int(c0)) / int(tick)
print(f"{int(keys):,} distinct keys: {int(keys)/wall:,.0f} events/s, {int(keys)/cpu:,.0f} per kappa CPU-second; "
      f"{m['records_out']:,} upserts out; peak RSS {int(rss)/1024:,.0f} MiB; "
      f"last checkpoint {c['last_duration_ms']} ms, {c['last_size_bytes']/1e6:,.1f} MB new of "
      f"{c['last_full_size_bytes']/1e6:,.1f} MB; state directory {int(state)/1e6:,.0f} MB")
PY
