"""Consumer groups with real clients: members join and leave mid-stream and every record is
seen exactly once; dead members are evicted; committed offsets survive restarts."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import ConsumerRebalanceListener

from conftest import KAPPA_BIN, ROOT
from test_confluent_kafka import create_topic

N = 20_000


def produce_slowly(kappa, topic, n, seconds):
    """Writes n records spread over `seconds`, so consumption spans the rebalances."""
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 5})
    step = max(1, n // 50)
    for start in range(0, n, step):
        for i in range(start, min(n, start + step)):
            p.produce(topic, key=str(i).encode(), value=str(i).encode())
        p.poll(0)
        time.sleep(seconds / 50)
    assert p.flush(30) == 0


class RdkafkaMember(threading.Thread):
    def __init__(self, kappa, topic, group, seen, assignor, **extra):
        super().__init__(daemon=True)
        self.stop_flag = threading.Event()
        self.seen = seen
        self.topic = topic
        self.revocations = 0
        conf = {"bootstrap.servers": kappa.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                "partition.assignment.strategy": assignor}
        conf.update(extra)
        self.consumer = Consumer(conf)

    def commit_pending(self, only=None):
        """Commits processed offsets; a commit refused because a rebalance is under way is
        kept and retried (and always made before a partition is given up, in on_revoke)."""
        keys = [k for k in self.pending if only is None or k in only]
        if not keys:
            return True
        offsets = [TopicPartition(self.topic, p, self.pending[p]) for p in keys]
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION):
                return False
            raise
        for p in keys:
            del self.pending[p]
        return True

    def on_revoke(self, consumer, partitions):
        self.revocations += 1
        revoked = {tp.partition for tp in partitions}
        for _ in range(50):
            if self.commit_pending(only=revoked):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("could not commit before giving partitions up")

    def run(self):
        self.pending = {}
        self.consumer.subscribe([self.topic], on_revoke=self.on_revoke)
        while not self.stop_flag.is_set():
            msgs = self.consumer.consume(num_messages=200, timeout=0.2)
            good = [m for m in msgs if not m.error()]
            for m in good:
                self.seen.append((m.partition(), m.offset(), m.value()))
                self.pending[m.partition()] = m.offset() + 1
            self.commit_pending()
            time.sleep(0.01)
        self.consumer.close()


def wait_until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def assert_exactly_once(seen, n):
    positions = [(p, o) for p, o, _ in seen]
    dupes = len(positions) - len(set(positions))
    assert dupes == 0, f"{dupes} records were delivered twice"
    assert sorted(int(v) for _, _, v in seen) == list(range(n))


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
def test_rdkafka_group_members_join_and_leave_exactly_once(kappa, assignor):
    topic = f"grp-{assignor}"
    create_topic(kappa, topic, 6)
    seen = []
    producer = threading.Thread(target=produce_slowly, args=(kappa, topic, N, 6))
    producer.start()
    a = RdkafkaMember(kappa, topic, "g-" + assignor, seen, assignor)
    a.start()
    time.sleep(1)
    b = RdkafkaMember(kappa, topic, "g-" + assignor, seen, assignor)
    b.start()
    time.sleep(1)
    c = RdkafkaMember(kappa, topic, "g-" + assignor, seen, assignor)
    c.start()
    wait_until(lambda: len(c.consumer.assignment()) > 0, 30, "the third member to get partitions")
    assert len(a.consumer.assignment()) + len(b.consumer.assignment()) + len(c.consumer.assignment()) == 6
    time.sleep(1)
    b.stop_flag.set()
    b.join(30)
    producer.join()
    wait_until(lambda: len(seen) >= N, 60, f"all {N} records (have {len(seen)})")
    time.sleep(1)
    a.stop_flag.set()
    c.stop_flag.set()
    a.join(30)
    c.join(30)
    assert_exactly_once(seen, N)


def test_kafka_python_group_members_join_and_leave_exactly_once(kappa):
    topic = "grp-kp"
    create_topic(kappa, topic, 6)
    seen = []
    stops = []

    def member():
        stop = threading.Event()
        stops.append(stop)
        consumer = KafkaConsumer(bootstrap_servers=kappa.bootstrap, group_id="g-kp", auto_offset_reset="earliest",
                                 enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)
        consumer.subscribe([topic])

        def loop():
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=200, max_records=200)
                n = 0
                for records in batch.values():
                    for m in records:
                        seen.append((m.partition, m.offset, m.value))
                        n += 1
                if n:
                    consumer.commit()
            consumer.close()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return t

    producer = threading.Thread(target=produce_slowly, args=(kappa, topic, N, 6))
    producer.start()
    ta = member()
    time.sleep(1)
    tb = member()
    time.sleep(1)
    tc = member()
    time.sleep(2)
    stops[1].set()
    tb.join(30)
    producer.join()
    wait_until(lambda: len(seen) >= N, 60, f"all {N} records (have {len(seen)})")
    time.sleep(1)
    stops[0].set()
    stops[2].set()
    ta.join(30)
    tc.join(30)
    assert_exactly_once(seen, N)


def test_kafkajs_group_consumes_every_record_once(kappa):
    topic = "grp-js"
    create_topic(kappa, topic, 6)
    produce_slowly(kappa, topic, 6000, 1)
    r = subprocess.run(["node", str(ROOT / "tests/js/kafkajs_group.js"), kappa.bootstrap, topic, "6000"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT / "tests/js")
    assert r.returncode == 0, r.stderr + r.stdout
    lines = [l.split(",") for l in r.stdout.split()]
    seen = [(int(p), int(o), v.encode()) for p, o, v in lines]
    assert_exactly_once(seen, 6000)


MEMBER_SCRIPT = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500, "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
while True:
    c.poll(0.2)
    if c.assignment():
        print("assigned", len(c.assignment()), flush=True)
"""


def test_killed_member_is_evicted_and_its_partitions_move(kappa):
    topic = "evict"
    create_topic(kappa, topic, 6)
    survivor = RdkafkaMember(kappa, topic, "g-evict", [], "range")
    survivor.start()
    wait_until(lambda: len(survivor.consumer.assignment()) == 6, 30, "the first member to own all partitions")
    proc = subprocess.Popen([sys.executable, "-c", MEMBER_SCRIPT, kappa.bootstrap, "g-evict", topic],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("assigned")
        wait_until(lambda: len(survivor.consumer.assignment()) == 3, 30, "the partitions to be shared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.time()
        wait_until(lambda: len(survivor.consumer.assignment()) == 6, 30, "the dead member's partitions to move")
        # Not before its session timeout (6 s) ran out.
        assert time.time() - killed_at > 4
    finally:
        if proc.poll() is None:
            proc.kill()
        survivor.stop_flag.set()
        survivor.join(30)


def consume_n(bootstrap, group, topic, n, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    conf.update(extra)
    c = Consumer(conf)
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(int(m.value()))
    c.commit(asynchronous=False)
    c.close()
    return got


def test_committed_offsets_survive_consumer_and_broker_restarts(kappa_factory):
    k = kappa_factory().start()
    create_topic(k, "resume", 1)
    p = Producer({"bootstrap.servers": k.bootstrap})
    for i in range(300):
        p.produce("resume", value=str(i).encode())
    assert p.flush(10) == 0
    first = consume_n(k.bootstrap, "g-resume", "resume", 100)
    assert first == list(range(100))
    second = consume_n(k.bootstrap, "g-resume", "resume", 100)
    assert second == list(range(100, 200))
    committed_after_second = second[-1] + 1
    k.kill()  # committed offsets were acknowledged: they must survive kill -9
    k.start()
    third = consume_n(k.bootstrap, "g-resume", "resume", 1)
    assert third[0] == committed_after_second
    c = Consumer({"bootstrap.servers": k.bootstrap, "group.id": "g-resume"})
    [tp] = c.committed([TopicPartition("resume", 0)], timeout=10)
    assert tp.offset == committed_after_second + 1
    c.close()
    k.stop()


def test_static_member_restart_does_not_rebalance_the_others(kappa):
    topic = "static"
    create_topic(kappa, topic, 4)
    other = RdkafkaMember(kappa, topic, "g-static", [], "range", **{"group.instance.id": "other"})
    other.start()
    first = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "g-static", "group.instance.id": "mover",
                      "session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
    first.subscribe([topic])
    wait_until(lambda: (first.poll(0.1), len(first.assignment()) == 2)[1], 30, "the static member's partitions")
    wait_until(lambda: len(other.consumer.assignment()) == 2, 30, "the other member's partitions")
    revocations_before = other.revocations
    first.close()  # a static member's close does not leave the group
    second = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "g-static", "group.instance.id": "mover",
                       "session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
    second.subscribe([topic])
    wait_until(lambda: (second.poll(0.1), len(second.assignment()) == 2)[1], 30, "the restarted member's partitions")
    time.sleep(2)
    assert other.revocations == revocations_before, "the other member was rebalanced"
    assert len(other.consumer.assignment()) == 2
    second.close()
    other.stop_flag.set()
    other.join(30)


def test_group_cli_and_lag_metrics(kappa):
    from test_kcat_and_cli import kappa_cli
    create_topic(kappa, "lagged", 2)
    p = Producer({"bootstrap.servers": kappa.bootstrap})
    for i in range(100):
        p.produce("lagged", value=str(i).encode(), partition=i % 2, timestamp=1_000_000 + i)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "cli-g", "enable.auto.commit": False})
    c.assign([TopicPartition("lagged", 0, 10), TopicPartition("lagged", 1, 30)])
    c.commit(offsets=[TopicPartition("lagged", 0, 10), TopicPartition("lagged", 1, 30)], asynchronous=False)
    c.close()

    listed = kappa_cli(kappa, "group", "list")
    assert any(line.startswith("cli-g\t") for line in listed.splitlines())
    described = kappa_cli(kappa, "group", "describe", "cli-g")
    assert "lagged\t0\t10\t50\t40\t-" in described
    assert "lagged\t1\t30\t50\t20\t-" in described
    metrics = kappa.http("/metrics")
    assert 'kappa_group_lag{group="cli-g",topic="lagged",partition="0"} 40' in metrics
    assert 'kappa_group_lag{group="cli-g",topic="lagged",partition="1"} 20' in metrics

    plan = kappa_cli(kappa, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--to-earliest")
    assert "dry run" in plan
    assert "lagged\t0\t10\t50" in kappa_cli(kappa, "group", "describe", "cli-g")
    kappa_cli(kappa, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--to-earliest", "--execute")
    assert "lagged\t0\t0\t50\t50" in kappa_cli(kappa, "group", "describe", "cli-g")
    # Records of partition 1 have timestamps 1_000_001, 1_000_003, ...: offset 20 holds 1_000_041.
    kappa_cli(kappa, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--to-datetime", "1000040", "--execute")
    described = kappa_cli(kappa, "group", "describe", "cli-g")
    assert "lagged\t0\t20\t50\t30" in described and "lagged\t1\t20\t50\t30" in described
    kappa_cli(kappa, "group", "reset-offsets", "cli-g", "--topic", "lagged", "--to-offset", "45", "--execute")
    assert "lagged\t1\t45\t50\t5" in kappa_cli(kappa, "group", "describe", "cli-g")

    # A group with a live member can be neither reset nor deleted.
    live = RdkafkaMember(kappa, "lagged", "live-g", [], "range")
    live.start()
    wait_until(lambda: len(live.consumer.assignment()) == 2, 30, "the live member's partitions")
    r = subprocess.run([KAPPA_BIN, "group", "delete", "live-g", "--bootstrap-server", kappa.bootstrap],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "live-g" in r.stderr
    live.stop_flag.set()
    live.join(30)

    kappa_cli(kappa, "group", "delete", "cli-g")
    assert "cli-g" not in kappa_cli(kappa, "group", "list")


def test_confluent_admin_group_operations(kappa):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    create_topic(kappa, "adm-g", 3)
    a = AdminClient({"bootstrap.servers": kappa.bootstrap})
    tps = [TopicPartition("adm-g", p, 5 * (p + 1)) for p in range(3)]
    a.alter_consumer_group_offsets([ConsumerGroupTopicPartitions("adm-group", tps)])["adm-group"].result(10)
    listed = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions("adm-group")])["adm-group"].result(10)
    assert sorted((tp.partition, tp.offset) for tp in listed.topic_partitions) == [(0, 5), (1, 10), (2, 15)]

    groups = a.list_consumer_groups().result(10)
    assert "adm-group" in {g.group_id for g in groups.valid}

    member = RdkafkaMember(kappa, "adm-g", "adm-live", [], "range")
    member.start()
    wait_until(lambda: len(member.consumer.assignment()) == 3, 30, "the member's partitions")
    described = a.describe_consumer_groups(["adm-live", "adm-group"])
    live = described["adm-live"].result(10)
    assert str(live.state).endswith("STABLE")
    assert len(live.members) == 1
    assert sorted(tp.partition for tp in live.members[0].assignment.topic_partitions) == [0, 1, 2]
    assert str(described["adm-group"].result(10).state).endswith("EMPTY")
    member.stop_flag.set()
    member.join(30)

    a.delete_consumer_groups(["adm-group"])["adm-group"].result(10)
    assert "adm-group" not in {g.group_id for g in a.list_consumer_groups().result(10).valid}
