"""Topic-level `compression.type`: the broker stores batches with the topic's codec whatever
the producer sent (as Kafka does), and consumers read the same records back."""
import re
import urllib.request

from confluent_kafka import Producer

from test_confluent_kafka import create_topic, read_all


def log_size(kappa, topic):
    with urllib.request.urlopen(f"http://127.0.0.1:{kappa.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(int(v) for v in re.findall(
        rf'^kappa_partition_log_size_bytes{{topic="{topic}",partition="\d+"}} (\d+)', text, re.M))


def test_the_topics_codec_is_applied_to_what_producers_send(kappa):
    values = [(f"record {i} " + "the same words again " * 40).encode() for i in range(500)]
    for topic, codec in (("as-sent", "producer"), ("zstd-topic", "zstd"), ("gzip-topic", "gzip")):
        create_topic(kappa, topic, 2, {"compression.type": codec})
        # Uncompressed from the producer, idempotent, in one transaction for the gzip topic:
        # recompression keeps producer ids, sequences and the transactional flag.
        config = {"bootstrap.servers": kappa.bootstrap, "compression.codec": "none",
                  "enable.idempotence": True, "linger.ms": 20}
        if codec == "gzip":
            config["transactional.id"] = "recompress"
        p = Producer(config)
        if codec == "gzip":
            p.init_transactions(30)
            p.begin_transaction()
        for i, v in enumerate(values):
            p.produce(topic, key=str(i).encode(), value=v)
        assert p.flush(30) == 0
        if codec == "gzip":
            p.commit_transaction(30)
        got = read_all(kappa, topic, 2, expected=len(values))
        assert sorted(m.value() for m in got) == sorted(values)
    plain = log_size(kappa, "as-sent")
    assert plain > sum(len(v) for v in values), "stored as sent"
    for topic in ("zstd-topic", "gzip-topic"):
        assert log_size(kappa, topic) < plain / 5, f"{topic} is stored compressed"
