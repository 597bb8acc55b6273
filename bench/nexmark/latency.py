"""End-to-end latency of a pass-through pipeline: for every output record, the output
message's timestamp (when the sink produced it) minus the event's date_time (when the
generator created it, in real time). Prints percentiles over the steady part of the run."""
import json
import sys
from datetime import datetime, timezone

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

bootstrap, topic, rate = sys.argv[1], sys.argv[2], sys.argv[3]
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency-reader", "enable.auto.commit": False})
md = c.list_topics(topic, timeout=10).topics[topic]
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
lat = []
idle = 0
while idle < 10:
    msgs = c.consume(10000, 0.5)
    if not msgs:
        idle += 1
        continue
    idle = 0
    for m in msgs:
        if m.error():
            continue
        ev = datetime.strptime(json.loads(m.value())["date_time"], "%Y-%m-%d %H:%M:%S.%f")
        ev_ms = ev.replace(tzinfo=timezone.utc).timestamp() * 1000
        lat.append(m.timestamp()[1] - ev_ms)
c.close()
steady = lat[len(lat) // 10:]  # skip the first tenth (connection set-up, warm-up)
steady.sort()
pct = lambda p: steady[min(len(steady) - 1, int(p * len(steady)))]
print(f"q0 latency at {rate} events/s: {len(lat)} records, p50 {pct(0.5):.1f} ms, "
      f"p99 {pct(0.99):.1f} ms, max {steady[-1]:.1f} ms")
