"""confluent-kafka (librdkafka) against `kappa dev`: produce/consume round trips with every
codec, ListOffsets by timestamp, and topic administration with AdminClient."""
import os
import random
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME,
                             Consumer, KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def admin(kappa):
    return AdminClient({"bootstrap.servers": kappa.bootstrap})


def create_topic(kappa, name, partitions, config=None):
    a = admin(kappa)  # the client must outlive its futures
    fs = a.create_topics([NewTopic(name, partitions, 1, config=config or {})])
    fs[name].result(15)


def read_all(kappa, topic, partitions, expected=None, timeout=30):
    """Reads every partition from the beginning to its current end; returns messages."""
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "unused",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out, eof = [], set()
    deadline = time.time() + timeout
    while time.time() < deadline and (len(eof) < partitions or (expected is not None and len(out) < expected)):
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise KafkaException(m.error())
        eof.discard(m.partition())
        out.append(m)
    c.close()
    return out


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_preserves_keys_values_headers_timestamps(kappa, codec):
    topic = f"rt-{codec}"
    create_topic(kappa, topic, 6)
    p = Producer({"bootstrap.servers": kappa.bootstrap, "compression.codec": codec,
                  "linger.ms": 5, "acks": "all"})
    sent = {}
    base_ts = 1_700_000_000_000
    errors = []
    n = 10_000
    for i in range(n):
        key = f"key-{i % 97}".encode()
        value = (f"value-{i}-" + "x" * random.randint(0, 200)).encode()
        headers = [("idx", str(i).encode()), ("codec", codec.encode())]
        p.produce(topic, value=value, key=key, headers=headers, timestamp=base_ts + i,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
        sent[i] = (key, value, base_ts + i)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert errors == []
    got = read_all(kappa, topic, 6, expected=n)
    assert len(got) == n
    seen = {}
    last_offset = {}
    for m in got:
        hdrs = dict(m.headers())
        i = int(hdrs["idx"])
        assert hdrs["codec"] == codec.encode()
        key, value, ts = sent[i]
        assert (m.key(), m.value(), m.timestamp()[1]) == (key, value, ts)
        assert i not in seen
        seen[i] = (m.partition(), m.offset())
        # offsets within a partition are dense and increasing
        assert m.offset() == last_offset.get(m.partition(), -1) + 1
        last_offset[m.partition()] = m.offset()
    assert len(seen) == n
    assert len(last_offset) == 6, "the default partitioner spreads 97 keys over all 6 partitions"
    # per-key order is kept
    by_key = {}
    for i in range(n):
        part, off = seen[i]
        prev = by_key.get(sent[i][0])
        if prev:
            assert prev[0] == part and prev[1] < off
        by_key[sent[i][0]] = (part, off)


def test_offsets_for_times(kappa):
    topic = "by-time"
    create_topic(kappa, topic, 1)
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 20, "batch.num.messages": 37})
    base = 1_600_000_000_000
    for i in range(2000):
        p.produce(topic, value=str(i).encode(), timestamp=base + i * 10, partition=0)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "unused"})
    for target in [base - 5, base, base + 1, base + 15, base + 9990, base + 19990, base + 12345]:
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, target)], timeout=10)
        expected = next(i for i in range(2000) if base + i * 10 >= target)
        assert tp.offset == expected, target
    [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 10**9)], timeout=10)
    assert tp.offset == -1  # OFFSET_END: no record that recent
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert (lo, hi) == (0, 2000)
    c.close()


def test_admin_create_describe_alter_delete(kappa):
    a = admin(kappa)
    a.create_topics([NewTopic("adm", 3, 1, config={"retention.ms": "3600000", "cleanup.policy": "delete"})])["adm"].result(10)
    md = a.list_topics(timeout=10)
    assert "adm" in md.topics and len(md.topics["adm"].partitions) == 3

    res = ConfigResource(ConfigResource.Type.TOPIC, "adm")
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.ms"].value == "3600000"
    assert not configs["retention.ms"].is_default
    assert configs["max.message.bytes"].is_default

    alter = ConfigResource(ConfigResource.Type.TOPIC, "adm", incremental_configs=[
        ConfigEntry("retention.bytes", "1048576", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([alter])[alter].result(10)
    configs = a.describe_configs([res])[res].result(10)
    assert configs["retention.bytes"].value == "1048576"
    assert configs["retention.ms"].is_default
    assert configs["message.timestamp.type"].value == "LogAppendTime"

    a.create_partitions([NewPartitions("adm", 5)])["adm"].result(10)
    assert len(a.list_topics("adm", timeout=10).topics["adm"].partitions) == 5

    # LogAppendTime: the broker stamps records
    p = Producer({"bootstrap.servers": kappa.bootstrap})
    p.produce("adm", value=b"v", partition=4, timestamp=1000)
    assert p.flush(10) == 0
    [m] = read_all(kappa, "adm", 5, expected=1)
    ts_type, ts = m.timestamp()
    assert ts_type == 2 and abs(ts - time.time() * 1000) < 60_000

    a.delete_topics(["adm"])["adm"].result(10)
    assert "adm" not in a.list_topics(timeout=10).topics


def test_admin_errors_are_kafka_error_codes(kappa):
    a = admin(kappa)
    create_topic(kappa, "dup", 1)
    cases = [
        (NewTopic("dup", 1, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (NewTopic("bad/name", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (NewTopic("rf3", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
        (NewTopic("badcfg", 1, 1, config={"retention.ms": "soon"}), KafkaError.INVALID_CONFIG),
        (NewTopic("unknowncfg", 1, 1, config={"no.such.config": "1"}), KafkaError.INVALID_CONFIG),
        (NewTopic("zero", 0, 1), KafkaError.INVALID_PARTITIONS),
    ]
    for new, code in cases:
        with pytest.raises(KafkaException) as e:
            a.create_topics([new])[new.topic].result(10)
        assert e.value.args[0].code() == code, new.topic
    with pytest.raises(KafkaException) as e:
        a.delete_topics(["never-created"])["never-created"].result(10)
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    with pytest.raises(KafkaException) as e:
        a.create_partitions([NewPartitions("dup", 1)])["dup"].result(10)
    assert e.value.args[0].code() == KafkaError.INVALID_PARTITIONS
    # nothing was created by the failed requests
    topics = a.list_topics(timeout=10).topics
    assert not {"rf3", "badcfg", "unknowncfg", "zero"} & set(topics)


def test_delete_records_moves_low_watermark(kappa):
    topic = "trim"
    create_topic(kappa, topic, 1)
    p = Producer({"bootstrap.servers": kappa.bootstrap})
    for i in range(100):
        p.produce(topic, value=str(i).encode(), partition=0)
    assert p.flush(10) == 0
    a = admin(kappa)
    fut = a.delete_records([TopicPartition(topic, 0, 40)])
    result = list(fut.values())[0].result(10)
    assert result.low_watermark == 40
    got = read_all(kappa, topic, 1, expected=60)
    assert [int(m.value()) for m in got] == list(range(40, 100))


def test_oversized_record_is_refused_and_others_survive(kappa):
    create_topic(kappa, "small", 1, config={"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 0, "message.max.bytes": 10_000_000})
    results = []
    p.produce("small", value=b"ok-1", on_delivery=lambda e, m: results.append(e))
    p.flush(10)
    p.produce("small", value=b"x" * 5000, on_delivery=lambda e, m: results.append(e))
    p.flush(10)
    p.produce("small", value=b"ok-2", on_delivery=lambda e, m: results.append(e))
    p.flush(10)
    assert results[0] is None and results[2] is None
    assert results[1].code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert [m.value() for m in read_all(kappa, "small", 1, expected=2)] == [b"ok-1", b"ok-2"]


def test_unknown_topic_without_auto_create(kappa_factory):
    k = kappa_factory(["--auto-create-topics", "false"]).start()
    p = Producer({"bootstrap.servers": k.bootstrap, "message.timeout.ms": 3000})
    errs = []
    p.produce("nope", value=b"v", on_delivery=lambda e, m: errs.append(e))
    p.flush(10)
    assert errs and errs[0] is not None
    assert errs[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._MSG_TIMED_OUT)
    assert "nope" not in AdminClient({"bootstrap.servers": k.bootstrap}).list_topics(timeout=10).topics


@pytest.mark.parametrize("acks", ["1", "all"])
def test_direct_writes_serve_tail_readers_and_survive_a_restart(kappa_factory, acks):
    """With --direct-writes the page cache never holds fresh records: a consumer reading
    while the producer writes gets them from the broker's tail cache, a late one from the files,
    and all of them again after a restart."""
    k = kappa_factory(["--direct-writes", "true"]).start()
    topic = "direct"
    create_topic(k, topic, 3)
    c = Consumer({"bootstrap.servers": k.bootstrap, "group.id": "tail", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    p = Producer({"bootstrap.servers": k.bootstrap, "linger.ms": 2, "acks": acks})
    n = 30_000
    tailed = {}
    for i in range(n):
        # Values of all sizes, so batches start and end anywhere within a 4 KiB block.
        p.produce(topic, key=str(i % 31).encode(), value=f"{i}:".encode() + b"v" * random.randint(0, 3000))
        if i % 500 == 0:
            p.poll(0)
            m = c.poll(0)
            while m is not None:
                assert m.error() is None, m.error()
                tailed.setdefault(m.partition(), []).append((m.offset(), m.value()))
                m = c.poll(0)
    assert p.flush(30) == 0
    deadline = time.time() + 30
    while sum(len(v) for v in tailed.values()) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            tailed.setdefault(m.partition(), []).append((m.offset(), m.value()))
    c.close()
    assert sum(len(v) for v in tailed.values()) == n
    for records in tailed.values():
        assert [o for o, _ in records] == list(range(len(records)))
    before = {m.value() for m in read_all(k, topic, 3, expected=n)}
    assert len(before) == n
    k.stop()
    k.start()
    after = read_all(k, topic, 3, expected=n)
    assert {m.value() for m in after} == before
    # Both reads saw the same records at the same offsets.
    assert sorted((m.partition(), m.offset(), m.value()) for m in after) == sorted(
        (part, off, v) for part, records in tailed.items() for off, v in records)


def metric_total(kappa, line_prefix):
    return sum(float(l.split()[-1]) for l in kappa.http("/metrics").splitlines()
               if l.startswith(line_prefix))


@pytest.mark.parametrize("direct", ["true", "false"])
@pytest.mark.parametrize("timestamp_type", ["CreateTime", "LogAppendTime"])
def test_large_batches_land_intact_and_are_written_without_a_copy(
        kappa_factory, direct, timestamp_type):
    """librdkafka's large batches (up to 1 MB) are read from the socket into memory of their
    own, and the log writes them from there (directly or through the page cache). Every record
    comes back as sent, before and after a restart, with the broker's timestamp on LogAppendTime
    topics."""
    k = kappa_factory(["--direct-writes", direct]).start()
    topic = "large"
    create_topic(k, topic, 6, {"message.timestamp.type": timestamp_type})
    p = Producer({"bootstrap.servers": k.bootstrap, "linger.ms": 100, "batch.size": 1_000_000,
                  "acks": "all"})
    rng = random.Random(7)
    sent = {}
    errors = []
    started = int(time.time() * 1000)
    for i in range(30_000):
        value = f"{i}:".encode() + rng.randbytes(rng.randint(100, 3000))
        p.produce(topic, key=str(i % 61).encode(), value=value, timestamp=1_600_000_000_000 + i,
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
        sent[i] = value
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert errors == []
    finished = int(time.time() * 1000)

    def check(messages):
        assert len(messages) == len(sent)
        last = {}
        for m in messages:
            i = int(m.value().split(b":", 1)[0])
            assert m.value() == sent[i]
            assert m.offset() == last.get(m.partition(), -1) + 1
            last[m.partition()] = m.offset()
            kind, ts = m.timestamp()
            if timestamp_type == "LogAppendTime":
                assert kind == TIMESTAMP_LOG_APPEND_TIME and started <= ts <= finished
            else:
                assert kind == TIMESTAMP_CREATE_TIME and ts == 1_600_000_000_000 + i
        assert len(last) == 6

    check(read_all(k, topic, 6, expected=len(sent)))
    bytes_in = metric_total(k, f'kappa_topic_bytes_in_total{{topic="{topic}"}}')
    uncopied = metric_total(k, "kappa_produce_uncopied_bytes_total")
    assert uncopied > bytes_in / 2, (uncopied, bytes_in)
    k.stop()
    k.start()
    check(read_all(k, topic, 6, expected=len(sent)))


def fetch_disk_read_bytes(kappa):
    line = next(l for l in kappa.http("/metrics").splitlines()
                if l.startswith("kappa_fetch_disk_read_bytes_total "))
    return float(line.split()[1])


def cached_midway(path):
    """Whether the page in the middle of the file is in the page cache (a read that would
    not wait for the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], os.fstat(fd).st_size // 2, os.RWF_NOWAIT)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_records_no_longer_in_the_page_cache_are_read_from_disk_intact(kappa):
    """A lagging consumer whose records have left the page cache: the broker reads them on its
    blocking pool instead of sending them with sendfile from a network thread (which would
    stall every connection on that thread), and they arrive intact and in order."""
    topic = "cold"
    create_topic(kappa, topic, 3)
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 5, "acks": "all"})
    n = 20_000
    sent = set()
    for i in range(n):
        value = f"{i}:".encode() + bytes([i % 251]) * random.randint(0, 2000)
        sent.add((str(i).encode(), value))
        p.produce(topic, key=str(i).encode(), value=value)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    # acks=all: the pages are fsynced, hence clean, and the kernel drops them when asked.
    segments = list(kappa.data_dir.glob(f"{topic}-*/*.log"))
    assert len(segments) >= 3
    for segment in segments:
        fd = os.open(segment, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if all(cached_midway(segment) for segment in segments):
        pytest.skip("this file system keeps the pages (tmpfs?): nothing to read from disk")
    before = fetch_disk_read_bytes(kappa)
    got = read_all(kappa, topic, 3, expected=n)
    assert {(m.key(), m.value()) for m in got} == sent and len(got) == n
    for partition in range(3):
        offsets = [m.offset() for m in got if m.partition() == partition]
        assert offsets == list(range(len(offsets)))
    # At least the first fetch of each partition took the disk path; the kernel's readahead,
    # set off by those reads, may have cached much of the rest again.
    assert fetch_disk_read_bytes(kappa) - before >= 3 * 100_000
