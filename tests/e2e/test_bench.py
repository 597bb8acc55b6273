"""`kappa bench produce --client native` (Kappa's own lean producer, used to measure the broker
with a client that leaves it the CPU): what it writes is read back by confluent-kafka
(librdkafka, CRCs checked) and placed where kafka-python's Java-compatible partitioner says."""
import re
import subprocess
import time

import pytest
from confluent_kafka import TopicPartition
from kafka.partitioner.default import murmur2

from conftest import KAPPA_BIN
from test_confluent_kafka import read_all


def bench_produce(kappa, *args):
    return subprocess.run([KAPPA_BIN, "bench", "produce", "--client", "native",
                           "--bootstrap-server", kappa.bootstrap, *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("acks", ["all", "1", "0"])
def test_native_bench_producer_writes_records_any_client_reads(kappa, acks):
    topic, n, size, partitions = f"native-{acks}", 30_000, 300, 6
    before = time.time() * 1000
    r = bench_produce(kappa, "--topic", topic, "--records", str(n), "--record-size", str(size),
                      "--partitions", str(partitions), "--acks", acks, "--batch-size", "65536")
    assert r.returncode == 0, r.stderr
    assert re.search(rf"produce: {n} records of {size} B, acks={acks}.*; 0 failed", r.stdout), r.stdout
    after = time.time() * 1000

    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "x"})
    deadline = time.time() + 20  # acks=0: the broker may still be appending the last requests
    while sum(c.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
              for p in range(partitions)) < n and time.time() < deadline:
        time.sleep(0.2)
    c.close()
    messages = read_all(kappa, topic, partitions, expected=n)
    assert len(messages) == n
    payload = bytes(ord("a") + i % 26 for i in range(size))
    per_partition = {}
    for m in messages:
        assert m.value() == payload
        key = m.key()
        assert 0 <= int(key) < 1024 and key == str(int(key)).encode()
        # Where Kafka's Java producer (and kafka-python's default partitioner) put this key.
        assert m.partition() == (murmur2(key) & 0x7FFFFFFF) % partitions, key
        ts_type, ts = m.timestamp()
        assert ts_type == 1 and before - 1000 <= ts <= after + 1000
        per_partition.setdefault(m.partition(), []).append(m.offset())
    assert len(per_partition) == partitions
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))
    # Keys were 0..1023 in turn: each key got n/1024 records, rounded either way.
    counts = {}
    for m in messages:
        counts[m.key()] = counts.get(m.key(), 0) + 1
    assert len(counts) == 1024 and set(counts.values()) <= {n // 1024, n // 1024 + 1}


def test_native_bench_producer_reports_records_the_broker_refused(kappa):
    r = bench_produce(kappa, "--topic", "native-big", "--records", "3", "--record-size", "2000000",
                      "--batch-size", "3000000", "--partitions", "1")
    assert r.returncode != 0
    assert "3 failed" in r.stdout and "MessageTooLarge" in r.stderr, (r.stdout, r.stderr)
    assert read_all(kappa, "native-big", 1) == []


def test_fsync_bench_reports_the_disk_alone_and_cleans_up(tmp_path):
    r = subprocess.run([KAPPA_BIN, "bench", "fsync", "--dir", str(tmp_path), "--rate-mb", "12",
                        "--seconds", "1", "--files", "3", "--chunk", "65536"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # 12 MB/s for a second over 3 files in 64 KiB chunks: 64 fsyncs per file.
    m = re.search(r"fsync: 3 files, 64 KiB per fsync, 12 MB/s for ([0-9.]+) s: (\d+) fsyncs, "
                  r"latency ms p50 [0-9.]+ p99 [0-9.]+ p999 [0-9.]+ max [0-9.]+; over 10 ms: \d+ ",
                  r.stdout)
    assert m, r.stdout
    assert int(m.group(2)) == 3 * 64
    assert float(m.group(1)) >= 0.95, "paced at the rate asked"
    assert list(tmp_path.iterdir()) == []
    bad = subprocess.run([KAPPA_BIN, "bench", "fsync", "--dir", str(tmp_path), "--files", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "must be positive" in bad.stderr
