"""kafka-python (pure Python client) against `kappa dev`."""
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_round_trip(kappa, codec):
    topic = f"kp-{codec or 'none'}"
    admin = KafkaAdminClient(bootstrap_servers=kappa.bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=kappa.bootstrap, compression_type=codec, acks="all", linger_ms=5)
    n = 10_000
    futures = []
    for i in range(n):
        futures.append(producer.send(topic, key=f"k{i % 31}".encode(), value=f"v{i}".encode(),
                                     headers=[("i", str(i).encode())], timestamp_ms=1_650_000_000_000 + i))
    producer.flush()
    metas = [f.get(timeout=30) for f in futures]
    assert len({(m.partition, m.offset) for m in metas}) == n

    consumer = KafkaConsumer(bootstrap_servers=kappa.bootstrap, group_id=None, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    tps = [TopicPartition(topic, p) for p in range(6)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {}
    for m in consumer:
        i = int(dict(m.headers)["i"])
        assert m.key == f"k{i % 31}".encode() and m.value == f"v{i}".encode()
        assert m.timestamp == 1_650_000_000_000 + i
        assert (m.partition, m.offset) == (metas[i].partition, metas[i].offset)
        got[i] = m
        if len(got) == n:
            break
    assert len(got) == n
    consumer.close()
    producer.close()
    admin.close()


def test_admin(kappa):
    admin = KafkaAdminClient(bootstrap_servers=kappa.bootstrap)
    admin.create_topics([NewTopic("kpa", num_partitions=2, replication_factor=1,
                                  topic_configs={"cleanup.policy": "compact"})])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("kpa", num_partitions=2, replication_factor=1)])
    [res] = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kpa")])
    configs = {c[0]: c[1] for c in res.resources[0][4]}
    assert configs["cleanup.policy"] == "compact"
    admin.create_partitions({"kpa": NewPartitions(total_count=4)})
    meta = admin.describe_topics(["kpa"])
    assert len(meta[0]["partitions"]) == 4
    admin.delete_topics(["kpa"])
    assert "kpa" not in admin.list_topics()
    admin.close()
