"""kcat (librdkafka's CLI, from Debian) and Kappa's own CLI against `kappa dev`."""
import json
import subprocess
import time

import pytest

from conftest import KAPPA_BIN


def kappa_cli(kappa, *args, input=None):
    r = subprocess.run([KAPPA_BIN, *args, "--bootstrap-server", kappa.bootstrap], input=input,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trip(kappa, codec):
    topic = f"kcat-{codec}"
    kappa_cli(kappa, "topic", "create", topic, "--partitions", "6")
    n = 10_000
    lines = "".join(f"key{i % 53}:value-{i}\n" for i in range(n))
    subprocess.run(["kcat", "-P", "-b", kappa.bootstrap, "-t", topic, "-z", codec, "-K", ":",
                    "-H", "source=kcat", "-X", "acks=all"],
                   input=lines, text=True, check=True, timeout=60)
    before = time.time() * 1000
    out = subprocess.run(["kcat", "-C", "-b", kappa.bootstrap, "-t", topic, "-e", "-q",
                          "-f", "%k|%s|%h|%p|%o|%T\n"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == n
    values = set()
    per_partition = {}
    for key, value, headers, partition, offset, ts in rows:
        i = int(value.split("-")[1])
        assert key == f"key{i % 53}"
        assert headers == "source=kcat"
        assert 0 < int(ts) <= before + 1000
        values.add(value)
        per_partition.setdefault(int(partition), []).append(int(offset))
    assert len(values) == n
    assert sorted(per_partition) == list(range(6))
    for offsets in per_partition.values():
        assert offsets == list(range(len(offsets)))


def test_cli_topic_lifecycle_and_produce_consume(kappa):
    assert "created topic cli" in kappa_cli(kappa, "topic", "create", "cli", "-p", "3", "-c", "retention.ms=60000")
    assert "cli\t3" in kappa_cli(kappa, "topic", "list")
    kappa_cli(kappa, "topic", "alter", "cli", "-c", "max.message.bytes=5000", "--partitions", "4")
    described = kappa_cli(kappa, "topic", "describe", "cli")
    assert "partitions: 4" in described
    assert "retention.ms=60000  (override)" in described
    assert "max.message.bytes=5000  (override)" in described

    kappa_cli(kappa, "produce", "cli", "--key-separator", "=", "--partition", "2", "-H", "h1=v1",
              input="a=1\nb=2\nc=3\n")
    out = kappa_cli(kappa, "consume", "cli", "--from-beginning", "--max-messages", "3", "--format", "json")
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["key"], r["value"], r["partition"], r["offset"]) for r in records] == [
        ("a", "1", 2, 0), ("b", "2", 2, 1), ("c", "3", 2, 2)]
    assert all(r["headers"] == {"h1": "v1"} for r in records)
    assert "2\t0\t3" in kappa_cli(kappa, "topic", "describe", "cli")

    out = kappa_cli(kappa, "consume", "cli", "--partition", "2", "--offset", "1", "--exit-at-end", "--format", "kv")
    assert out == "b\t2\nc\t3\n"

    kappa_cli(kappa, "topic", "delete", "cli")
    assert "cli\t" not in kappa_cli(kappa, "topic", "list")
    r = subprocess.run([KAPPA_BIN, "topic", "delete", "cli", "--bootstrap-server", kappa.bootstrap],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "cli" in r.stderr


def test_metrics_and_health(kappa):
    assert kappa.http("/health").strip() == "ok"
    subprocess.run(["kcat", "-P", "-b", kappa.bootstrap, "-t", "m", "-p", "0"], input="x\ny\n",
                   text=True, check=True, timeout=30)
    subprocess.run(["kcat", "-C", "-b", kappa.bootstrap, "-t", "m", "-e", "-q"], capture_output=True,
                   check=True, timeout=30)
    text = kappa.http("/metrics")
    lines = text.splitlines()

    def value(prefix):
        return [float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(prefix)]

    assert value('kappa_topic_records_in_total{topic="m"}') == [2.0]
    assert value('kappa_topic_records_out_total{topic="m"}')[0] >= 2.0
    assert value('kappa_partition_end_offset{topic="m",partition="0"}') == [2.0]
    assert value('kappa_broker_requests_total{api="Produce"}')[0] >= 1
    assert any(l.startswith('kappa_broker_request_duration_seconds_bucket{') and 'api="Fetch"' in l for l in lines)
    assert value('kappa_partition_log_size_bytes{topic="m",partition="0"}')[0] > 0
    # kcat produces with acks=all (librdkafka's default), so the records waited for an fsync.
    assert value('kappa_log_fsync_duration_seconds_count')[0] >= 1


def test_clean_shutdown_and_restart_keeps_topics_and_configs(kappa_factory):
    k = kappa_factory().start()
    kappa_cli(k, "topic", "create", "keep", "-p", "2", "-c", "retention.bytes=123456")
    kappa_cli(k, "produce", "keep", "--partition", "1", input="one\ntwo\n")
    assert k.stop() == 0
    assert "stopped cleanly" in k.log()
    k.start()
    described = kappa_cli(k, "topic", "describe", "keep")
    assert "partitions: 2" in described and "retention.bytes=123456  (override)" in described
    out = kappa_cli(k, "consume", "keep", "--from-beginning", "--exit-at-end")
    assert out == "one\ntwo\n"
    k.stop()


def test_a_second_broker_on_the_same_data_dir_refuses_to_start(kappa_factory):
    """Two brokers on one directory would each recover and write the other's files: the
    second one stops at once and says why; the first goes on untouched."""
    first = kappa_factory().start()
    kappa_cli(first, "produce", "kept", input="one\n")
    second = kappa_factory()
    with pytest.raises(RuntimeError, match="is in use by another process"):
        second.start()
    assert kappa_cli(first, "consume", "kept", "--from-beginning", "--exit-at-end") == "one\n"
    assert first.stop() == 0
    second.start()  # the lock went with the first process
    assert kappa_cli(second, "consume", "kept", "--from-beginning", "--exit-at-end") == "one\n"
    second.stop()


def test_cli_consume_as_group_resumes_from_committed_offsets(kappa):
    kappa_cli(kappa, "topic", "create", "cg", "-p", "2")
    kappa_cli(kappa, "produce", "cg", input="".join(f"{i}\n" for i in range(10)))
    first = kappa_cli(kappa, "consume", "cg", "--group", "cli-reader", "--from-beginning", "--max-messages", "4")
    rest = kappa_cli(kappa, "consume", "cg", "--group", "cli-reader", "--from-beginning", "--exit-at-end")
    seen = first.split() + rest.split()
    assert sorted(seen, key=int) == [str(i) for i in range(10)], (first, rest)
    assert "cg\t" in kappa_cli(kappa, "group", "describe", "cli-reader")
