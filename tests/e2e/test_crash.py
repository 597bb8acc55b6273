"""Durability: a producer writes continuously, the broker is killed with SIGKILL at a random
moment and restarted on the same data dir; every acknowledged record must be there exactly
once, at the offset it was acknowledged with, in order. acks=all waits for the fsync, acks=1 for
the write to the file: a crash of the process loses neither, with writes through the page cache
or direct (O_DIRECT, whose zero padding after the last batch recovery must recognise)."""
import random
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_confluent_kafka import create_topic, read_all


def assert_acknowledged_records_kept(got, acked, log_start):
    """Every acknowledged record at or past its partition's log start (0 if not given) was
    read once, at the offset it was acknowledged with, and offsets run on from the log start.
    Returns the acknowledged records that had to be there."""
    where = {}
    per_partition = {}
    for m in got:
        assert m.value() not in where, f"{m.value()[:12]} appears twice"
        where[m.value()] = (m.partition(), m.offset())
        per_partition.setdefault(m.partition(), []).append(m.offset())
    kept = {v: pos for v, pos in acked.items() if pos[1] >= log_start.get(pos[0], 0)}
    for value, position in kept.items():
        assert where.get(value) == position, f"acknowledged {value[:12]} at {position}, found {where.get(value)}"
    for pt, offsets in per_partition.items():
        start = log_start.get(pt, 0)
        assert offsets == list(range(start, start + len(offsets)))
    return kept


def produce_then_kill(k, acks, keep_going, value_len=0, records_per_check=1, **config):
    """Produces keyed records to topic "crash" while `keep_going()`, checked every
    `records_per_check` records, then kills the broker with SIGKILL. Returns the records
    acknowledged before or after the kill: value -> (partition, offset)."""
    acked = {}

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())

    # No retries: without idempotence a retry could legitimately duplicate a record.
    p = Producer({"bootstrap.servers": k.bootstrap, "acks": acks, "retries": 0, "linger.ms": 1,
                  "message.timeout.ms": 5000, **config})
    i = 0
    while keep_going():
        for _ in range(records_per_check):
            p.produce("crash", key=str(i % 17).encode(), value=f"r{i}".ljust(value_len).encode(),
                      on_delivery=on_delivery)
            i += 1
            p.poll(0)
            if len(p) > 5000:
                p.poll(0.01)
    k.kill()
    p.flush(15)
    return acked


@pytest.mark.parametrize("acks,direct,round_", [
    ("all", "false", 0), ("all", "false", 1), ("all", "true", 0), ("all", "true", 1),
    ("1", "false", 0), ("1", "true", 0)])
def test_acknowledged_records_survive_kill_9(kappa_factory, acks, direct, round_):
    k = kappa_factory(["--direct-writes", direct]).start()
    create_topic(k, "crash", 3)
    kill_at = time.time() + random.uniform(0.5, 2.0)
    acked = produce_then_kill(k, acks, lambda: time.time() < kill_at,
                              **{"batch.num.messages": random.choice([1, 10, 500])})
    assert len(acked) > 100, "the producer should have been acknowledged before the kill"

    k.start()
    got = read_all(k, "crash", 3, expected=len(acked))
    assert_acknowledged_records_kept(got, acked, {})
    # The restarted broker takes new writes after the recovered tail.
    p2 = Producer({"bootstrap.servers": k.bootstrap})
    p2.produce("crash", value=b"after", partition=0)
    assert p2.flush(10) == 0
    k.stop()


@pytest.mark.parametrize("acks,direct", [("all", "false"), ("all", "true"), ("1", "false")])
def test_acknowledged_records_survive_kill_9_in_reused_segment_files(kappa_factory, acks, direct):
    """The same, with segments so small and retention so short that rolls reuse the files of
    expired segments: when the broker dies, its active segments hold the old segment's bytes
    after their last batch, and recovery must keep every acknowledged record and none of those."""
    k = kappa_factory(["--direct-writes", direct]).start()
    create_topic(k, "crash", 3, {"segment.bytes": "1100000", "retention.bytes": "2200000"})
    kill_at = time.time() + random.uniform(0.5, 2.0)
    give_up = time.time() + 30

    def keep_going():
        """Until the kill time and a reused file (its marker) both exist."""
        assert time.time() < give_up, "no roll reused a segment file"
        return time.time() < kill_at or not any(k.data_dir.rglob("*.reused"))

    acked = produce_then_kill(k, acks, keep_going, value_len=1000, records_per_check=1000)
    assert len(acked) > 1000

    k.start()
    c = Consumer({"bootstrap.servers": k.bootstrap, "group.id": "unused"})
    log_start = {pt: c.get_watermark_offsets(TopicPartition("crash", pt), timeout=10)[0]
                 for pt in range(3)}
    c.close()
    assert all(start > 0 for start in log_start.values()), "retention moved every log start"
    got = read_all(k, "crash", 3)
    kept = assert_acknowledged_records_kept(got, acked, log_start)
    assert kept, "some acknowledged records are past the log start"
    # Nothing read is anything but a record this producer sent.
    assert all(m.value().startswith(b"r") and len(m.value()) == 1000 for m in got)
    p2 = Producer({"bootstrap.servers": k.bootstrap})
    p2.produce("crash", value=b"after", partition=0)
    assert p2.flush(10) == 0
    k.stop()
