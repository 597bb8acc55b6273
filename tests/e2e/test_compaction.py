"""Log compaction with real clients: many updates over few keys plus tombstones; after the
cleaner runs, reading from the start gives exactly the latest value of every key at its
original offset. A kill -9 while cleaning loses nothing."""
import random
import re
import time

from confluent_kafka import Producer

from conftest import Kappa
from test_confluent_kafka import create_topic, read_all

KEYS = 20


def fast_maintenance(tmp_path):
    config = tmp_path / "kappa.toml"
    config.write_text("[broker]\nlog_maintenance_interval_ms = 200\n")
    return ["--config", str(config)]


def write_updates(k, topic, rounds):
    """Writes `rounds` updates per key (and deletes a few keys); returns the latest
    (offset, value) per key, None for deleted keys."""
    p = Producer({"bootstrap.servers": k.bootstrap, "linger.ms": 2, "compression.codec": "lz4"})
    latest = {}
    errors = []

    def report(err, msg):
        if err:
            errors.append(err)
        else:
            latest[msg.key().decode()] = (msg.offset(), msg.value())

    for r in range(rounds):
        for key in range(KEYS):
            value = None if (r == rounds - 1 and key % 5 == 0) else f"{key}-{r}".encode()
            p.produce(topic, key=f"k{key}".encode(), value=value, partition=0, on_delivery=report)
        p.poll(0)
    assert p.flush(30) == 0 and errors == []
    # Fillers with their own key, one uncompressed batch each, roll the updates out of the
    # active segment (which compaction never touches).
    filler = Producer({"bootstrap.servers": k.bootstrap, "linger.ms": 0})
    for i in range(40):
        filler.produce(topic, key=b"filler", value=bytes(random.getrandbits(8) for _ in range(400)), partition=0)
        assert filler.flush(10) == 0
    return latest


def compacted_view(k, topic):
    got = read_all(k, topic, 1)
    return [(m.offset(), m.key().decode(), m.value()) for m in got]


def assert_compacted(view, latest):
    updates = [v for v in view if v[1] != "filler"]
    keys = [v[1] for v in updates]
    assert len(keys) == len(set(keys)), "a key appears more than once"
    by_key = {v[1]: (v[0], v[2]) for v in updates}
    for key, (offset, value) in latest.items():
        if value is None:
            assert key not in by_key, f"tombstoned {key} still present"
        else:
            assert by_key.get(key) == (offset, value), f"{key}: {by_key.get(key)} != {(offset, value)}"


def test_compaction_keeps_latest_value_per_key_at_original_offsets(tmp_path):
    k = Kappa(tmp_path / "data", tmp_path / "kappa.log", fast_maintenance(tmp_path)).start()
    try:
        create_topic(k, "compact", 1, config={"cleanup.policy": "compact", "segment.bytes": "4096",
                                              "delete.retention.ms": "0"})
        latest = write_updates(k, "compact", 50)
        deadline = time.time() + 30
        while True:
            view = compacted_view(k, "compact")
            updates = [v for v in view if v[1] != "filler"]
            if len(updates) <= KEYS or time.time() > deadline:
                break
            time.sleep(0.2)
        assert "compacted" in k.log()
        assert_compacted(view, latest)
        size = float(re.search(r'kappa_partition_log_size_bytes\{topic="compact",partition="0"\} (\S+)',
                               k.http("/metrics")).group(1))
        assert size < 50 * KEYS * 20
    finally:
        k.stop()


def test_kill_9_during_compaction_loses_nothing(tmp_path):
    k = Kappa(tmp_path / "data", tmp_path / "kappa.log", fast_maintenance(tmp_path)).start()
    create_topic(k, "ck", 1, config={"cleanup.policy": "compact", "segment.bytes": "4096",
                                     "delete.retention.ms": "3600000"})
    latest = write_updates(k, "ck", 200)
    try:
        for _ in range(5):
            time.sleep(random.uniform(0.0, 0.4))
            k.kill()
            k.start()
        # Whatever state the kills left, every key's latest value is there at its offset;
        # and the cleaner, running again after the restart, gets down to one record per key.
        deadline = time.time() + 30
        while True:
            view = compacted_view(k, "ck")
            by_key = {v[1]: (v[0], v[2]) for v in view if v[1] != "filler"}
            # Tombstones are within delete.retention.ms: they stay, as the latest "value".
            for key, (offset, value) in latest.items():
                assert by_key.get(key) == (offset, value), key
            updates = [v for v in view if v[1] != "filler"]
            if len(updates) == KEYS or time.time() > deadline:
                break
            time.sleep(0.3)
        assert len(updates) == KEYS
    finally:
        k.stop()
