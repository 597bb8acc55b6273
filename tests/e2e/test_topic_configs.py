"""Topic configs as Kafka has them, through confluent-kafka's AdminClient against `kappa dev`:
every Kafka topic config is accepted and described (source, synonyms, read-only), values are
checked with Kafka's INVALID_CONFIG messages, unknown names are refused, broker defaults come
from `[broker.properties]` and show on the BROKER resource, manual replica assignments naming
the one broker are accepted, and the timestamp window refuses records with INVALID_TIMESTAMP."""
import re
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

from conftest import KAPPA_BIN, Kappa

# What tools (Connect, Streams, Debezium, Terraform providers) set, and what Kappa honours.
SETTINGS = {
    "min.cleanable.dirty.ratio": "0.1",
    "max.compaction.lag.ms": "600000",
    "min.compaction.lag.ms": "1000",
    "unclean.leader.election.enable": "true",
    "preallocate": "true",
    "segment.index.bytes": "4096",
    "message.timestamp.after.max.ms": "60000",
    "message.timestamp.before.max.ms": "86400000",
    "flush.messages": "1000",
    "flush.ms": "5000",
    "file.delete.delay.ms": "1000",
    "compression.type": "gzip",
    "message.format.version": "2.8",
    "cleanup.policy": "compact,delete",
    "segment.jitter.ms": "100",
    "index.interval.bytes": "1024",
    "message.downconversion.enable": "false",
    "follower.replication.throttled.replicas": "*",
}


def admin(kappa):
    return AdminClient({"bootstrap.servers": kappa.bootstrap})


def describe(a, resource):
    return a.describe_configs([resource])[resource].result(10)


def source(entry):
    """The entry's ConfigSource code (librdkafka gives an int or the enum)."""
    return getattr(entry.source, "value", entry.source)


def refused(future):
    with pytest.raises(KafkaException) as e:
        future.result(10)
    return e.value.args[0]


def test_every_setting_is_accepted_described_and_altered(kappa):
    a = admin(kappa)
    a.create_topics([NewTopic("cfg", 2, 1, config=SETTINGS)])["cfg"].result(15)
    res = ConfigResource(ResourceType.TOPIC, "cfg")
    configs = describe(a, res)
    for name, value in SETTINGS.items():
        entry = configs[name]
        assert entry.value == value, name
        assert source(entry) == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, name
        assert not entry.is_read_only and not entry.is_default
    # Not set: Kafka's defaults, with the broker config that carries them as the synonym.
    retention = configs["retention.ms"]
    assert retention.value == "604800000" and retention.is_default
    assert ("log.retention.hours", "168") in {(s.name, s.value) for s in retention.synonyms.values()}
    assert configs["segment.bytes"].value == "1073741824"
    assert configs["remote.storage.enable"].value == "false"

    # Incremental: SET one, DELETE one (back to the default), APPEND to a list.
    alter = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "0.3", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("preallocate", None, incremental_operation=AlterConfigOpType.DELETE),
        ConfigEntry("leader.replication.throttled.replicas", "0:0",
                    incremental_operation=AlterConfigOpType.APPEND),
    ])
    a.incremental_alter_configs([alter])[alter].result(10)
    configs = describe(a, res)
    assert configs["min.cleanable.dirty.ratio"].value == "0.3"
    assert configs["preallocate"].value == "false" and configs["preallocate"].is_default
    assert configs["leader.replication.throttled.replicas"].value == "0:0"
    assert configs["max.compaction.lag.ms"].value == "600000"

    # A name Kafka does not know, and values Kafka refuses: INVALID_CONFIG with its messages.
    bad = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.cleanable.ratio", "0.3", incremental_operation=AlterConfigOpType.SET)])
    e = refused(a.incremental_alter_configs([bad])[bad])
    assert e.code() == KafkaError.INVALID_CONFIG
    assert "Unknown topic config name: min.cleanable.ratio" in e.str()
    bad = ConfigResource(ResourceType.TOPIC, "cfg", incremental_configs=[
        ConfigEntry("min.cleanable.dirty.ratio", "1.5", incremental_operation=AlterConfigOpType.SET)])
    e = refused(a.incremental_alter_configs([bad])[bad])
    assert e.code() == KafkaError.INVALID_CONFIG
    assert ("Invalid value 1.5 for configuration min.cleanable.dirty.ratio: "
            "Value must be no more than 1") in e.str()
    assert describe(a, res)["min.cleanable.dirty.ratio"].value == "0.3"

    for name, config, message in [
        ("c1", {"segment.index.bytes": "two"}, "Not a number of type INT"),
        ("c2", {"compression.type": "brotli"}, "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer"),
        ("c3", {"preallocate": "maybe"}, "Expected value to be either true or false"),
        ("c4", {"no.such.config": "1"}, "Unknown topic config name: no.such.config"),
        ("c5", {"min.compaction.lag.ms": "10", "max.compaction.lag.ms": "5"}, "conflict topic config setting"),
    ]:
        e = refused(a.create_topics([NewTopic(name, 1, 1, config=config)])[name])
        assert e.code() == KafkaError.INVALID_CONFIG, name
        assert message in e.str(), e.str()
    assert not {"c1", "c2", "c3", "c4", "c5"} & set(a.list_topics(timeout=10).topics)

    # AlterConfigs (the whole set) with what librdkafka's suite sets.
    whole = ConfigResource(ResourceType.TOPIC, "cfg", set_config={
        "compression.type": "gzip", "message.format.version": "0.10.2"})
    a.alter_configs([whole])[whole].result(10)  # deprecated, still what librdkafka 0081 uses
    configs = describe(a, res)
    assert configs["message.format.version"].value == "0.10.2"
    assert configs["min.cleanable.dirty.ratio"].is_default


def test_timestamps_outside_the_window_get_invalid_timestamp(kappa):
    a = admin(kappa)
    a.create_topics([NewTopic("window", 1, 1, config={
        "message.timestamp.before.max.ms": "3600000",
        "message.timestamp.after.max.ms": "60000"})])["window"].result(15)
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 0})
    results = {}
    now = int(time.time() * 1000)
    for label, ts in [("old", now - 2 * 3600_000), ("future", now + 600_000), ("now", now)]:
        p.produce("window", value=label.encode(), timestamp=ts,
                  on_delivery=lambda err, m, label=label: results.__setitem__(label, err))
        p.flush(10)
    assert results["now"] is None
    for label in ("old", "future"):
        assert results[label] is not None and results[label].code() == KafkaError.INVALID_TIMESTAMP, label


def test_manual_assignment_naming_this_broker(kappa):
    a = admin(kappa)
    a.create_topics([NewTopic("placed", num_partitions=2, replica_assignment=[[0], [0]])])["placed"].result(15)
    assert len(a.list_topics("placed", timeout=10).topics["placed"].partitions) == 2
    e = refused(a.create_topics([NewTopic("elsewhere", num_partitions=1, replica_assignment=[[1]])])["elsewhere"])
    assert e.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT
    a.create_partitions([NewPartitions("placed", 3, replica_assignment=[[0]])])["placed"].result(10)
    assert len(a.list_topics("placed", timeout=10).topics["placed"].partitions) == 3
    e = refused(a.create_partitions([NewPartitions("placed", 4, replica_assignment=[[2]])])["placed"])
    assert e.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT


def test_broker_defaults_and_the_broker_resource(tmp_path):
    config = tmp_path / "kappa.toml"
    config.write_text('[broker]\nnum_partitions = 3\n\n[broker.properties]\n'
                      '"log.cleaner.min.cleanable.ratio" = "0.2"\n"log.retention.hours" = "48"\n'
                      '"auto.create.topics.enable" = "false"\n')
    k = Kappa(tmp_path / "data", tmp_path / "kappa.log", ["--config", str(config)]).start()
    try:
        a = admin(k)
        broker = describe(a, ConfigResource(ResourceType.BROKER, "0"))
        assert broker["num.partitions"].value == "3"
        assert source(broker["num.partitions"]) == ConfigSource.STATIC_BROKER_CONFIG.value
        assert broker["auto.create.topics.enable"].value == "false"
        assert source(broker["auto.create.topics.enable"]) == ConfigSource.STATIC_BROKER_CONFIG.value
        assert broker["log.cleaner.min.cleanable.ratio"].value == "0.2"
        assert broker["log.retention.hours"].value == "48"
        assert broker["log.segment.bytes"].value == "1073741824"
        assert source(broker["log.segment.bytes"]) == ConfigSource.DEFAULT_CONFIG.value
        assert broker["log.index.size.max.bytes"].is_read_only

        a.create_topics([NewTopic("dflt", 1, 1)])["dflt"].result(15)
        topic = describe(a, ConfigResource(ResourceType.TOPIC, "dflt"))
        ratio = topic["min.cleanable.dirty.ratio"]
        assert ratio.value == "0.2" and source(ratio) == ConfigSource.STATIC_BROKER_CONFIG.value
        assert topic["retention.ms"].value == str(48 * 3600_000)
    finally:
        k.stop()

    config.write_text('[broker.properties]\n"log.cleaner.min.cleanable.ratio" = "2"\n')
    with pytest.raises(RuntimeError) as e:
        Kappa(tmp_path / "data2", tmp_path / "kappa2.log", ["--config", str(config)]).start()
    assert "log.cleaner.min.cleanable.ratio" in str(e.value)


def test_min_insync_replicas_and_flush_messages_are_honoured(kappa):
    a = admin(kappa)
    for name, config in [("isr2", {"min.insync.replicas": "2"}), ("flushed", {"flush.messages": "1"})]:
        a.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(15)

    def produce(topic, acks):
        p = Producer({"bootstrap.servers": kappa.bootstrap, "acks": acks, "linger.ms": 0,
                      "retries": 0, "message.timeout.ms": 10000})
        errors = []
        for _ in range(5):
            p.produce(topic, value=b"v", on_delivery=lambda e, m: errors.append(e))
        p.flush(15)
        return errors

    # One in-sync replica is fewer than min.insync.replicas=2: acks=all is refused, acks=1 not.
    errors = produce("isr2", "all")
    assert len(errors) == 5 and all(e is not None and e.code() == KafkaError.NOT_ENOUGH_REPLICAS
                                    for e in errors), errors
    assert produce("isr2", "1") == [None] * 5

    def fsyncs():
        m = re.search(r"^kappa_log_fsync_duration_seconds_count(?:\{[^}]*\})? (\S+)",
                      kappa.http("/metrics"), re.M)
        return float(m.group(1)) if m else 0.0

    # acks=1 asks for no fsync; flush.messages=1 has one after every write all the same.
    before = fsyncs()
    assert produce("flushed", "1") == [None] * 5
    deadline = time.time() + 10
    while fsyncs() <= before and time.time() < deadline:
        time.sleep(0.1)
    assert fsyncs() > before


def test_cli_creates_topics_with_kafka_settings(kappa):
    def cli(*args):
        return subprocess.run([KAPPA_BIN, *args, "--bootstrap-server", kappa.bootstrap],
                              capture_output=True, text=True, timeout=60)

    r = cli("topic", "create", "t", "--config", "min.cleanable.dirty.ratio=0.1",
            "--config", "unclean.leader.election.enable=true", "--config", "preallocate=true")
    assert r.returncode == 0, r.stderr
    described = cli("topic", "describe", "t").stdout
    assert "min.cleanable.dirty.ratio=0.1  (override)" in described
    assert "preallocate=true  (override)" in described
    assert "segment.index.bytes=10485760\n" in described
    r = cli("topic", "alter", "t", "-c", "flush.messages=100")
    assert r.returncode == 0, r.stderr
    described = cli("topic", "describe", "t").stdout
    assert "flush.messages=100  (override)" in described
    assert "min.cleanable.dirty.ratio=0.1  (override)" in described
    r = cli("topic", "create", "u", "--config", "min.cleanable.dirty.ratio=2")
    assert r.returncode != 0
    # rust-rdkafka hands the CLI the error code, not the broker's message.
    assert "InvalidConfig" in r.stderr
