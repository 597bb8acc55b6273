"""Kafka transactions as users check them, with clients written by others: librdkafka
(confluent-kafka) for the consume-transform-produce loop, aborts, the last stable offset,
fencing and transaction timeouts; kafka-python's and kafkajs's transactional producers. Each
result is read back by read_committed and read_uncommitted consumers."""
import json
import signal
import subprocess
import sys
import threading
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)

from conftest import ROOT
from test_confluent_kafka import create_topic
from txn_app import consume_batch, transact


# ---------------------------------------------------------------------------------------------
# Helpers shared by the tests here and by test_txn_crash.py


def txn_producer(bootstrap, transactional_id, **config):
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                     "linger.ms": 2, **config})


def produce_plain(bootstrap, topic, records):
    """Non-transactional records, (partition or None, key, value) each, acks=all; all must be
    acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for partition, key, value in records:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic, key=key, value=value,
                          on_delivery=lambda err, m: errors.append(err) if err else None, **extra)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0
    assert errors == []


def send(producer, topic, value, partition, key=None):
    """Produces one record and waits for its acknowledgement; returns its offset."""
    got = []
    producer.produce(topic, key=key, value=value, partition=partition,
                     on_delivery=lambda err, m: got.append((err, m)))
    assert producer.flush(30) == 0
    err, m = got[0]
    assert err is None, f"{value!r}: {err}"
    return m.offset()


def reader(bootstrap, isolation, **config):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-test-reader",
                     "enable.auto.commit": False, "enable.partition.eof": True,
                     "isolation.level": isolation, **config})


def drain(consumer, partitions, timeout=30):
    """Polls until each of `partitions` (numbers) has reported its end, which for a
    read_committed consumer is the last stable offset; returns the records got meanwhile."""
    out, pending = [], set(partitions)
    deadline = time.time() + timeout
    while pending:
        assert time.time() < deadline, f"partitions {sorted(pending)} never reached their end"
        m = consumer.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(m.partition())
                continue
            raise KafkaException(m.error())
        pending.add(m.partition())  # its end has moved: wait for it again
        out.append(m)
    return out


def read_to_end(bootstrap, topic, partitions, isolation, timeout=30):
    """Everything an `isolation` consumer reads from the start of each partition to its end."""
    c = reader(bootstrap, isolation)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    try:
        return drain(c, range(partitions), timeout)
    finally:
        c.close()


def by_partition(msgs):
    """partition -> values (str) in the order read, which is offset order."""
    out = {}
    for m in msgs:
        out.setdefault(m.partition(), []).append(m.value().decode())
    return out


def ends(bootstrap, topic, partitions, isolation, timeout=30):
    """partition -> the end offset (ListOffsets latest) an `isolation` consumer is told: the high
    watermark for read_uncommitted, the last stable offset for read_committed. Retries while
    the broker does not answer (just restarted)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-test-ends",
                  "isolation.level": isolation})
    deadline = time.time() + timeout
    out = {}
    try:
        for p in range(partitions):
            while p not in out:
                try:
                    w = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
                    why = "timed out"
                except KafkaException as e:
                    w, why = None, e
                if w is not None:
                    out[p] = w[1]
                    continue
                assert time.time() < deadline, f"no end offset for {topic}/{p}: {why}"
                time.sleep(0.2)
    finally:
        c.close()
    return out


def wait_stable(bootstrap, topic, partitions, timeout=15):
    """Waits until no transaction holds any partition back: the last stable offset of each is its
    high watermark (commit and abort markers may land just after EndTxn is answered)."""
    deadline = time.time() + timeout
    while True:
        lso = ends(bootstrap, topic, partitions, "read_committed")
        hwm = ends(bootstrap, topic, partitions, "read_uncommitted")
        if lso == hwm:
            return hwm
        assert time.time() < deadline, f"{topic}: last stable offsets {lso}, high watermarks {hwm}"
        time.sleep(0.1)


def group_offsets(bootstrap, group, topic, partitions):
    """The group's committed offsets (partition -> offset, -1001 for none), read as a
    read_committed consumer does (OffsetFetch with require_stable)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got}


def bounded(fn, timeout, what):
    """fn() in a thread that must finish within `timeout` seconds (kafka-python's transactional
    calls wait without a bound); returns its result or raises its exception."""
    result = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: B036 - handed to the test's thread
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"{what} did not finish in {timeout} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


# ---------------------------------------------------------------------------------------------


def test_consume_transform_produce_is_exactly_once_with_aborts(kappa):
    create_topic(kappa, "ctp-in", 3)
    create_topic(kappa, "ctp-out", 3)
    n = 3000
    produce_plain(kappa.bootstrap, "ctp-in", [(None, f"k{i % 101}", f"v{i}") for i in range(n)])
    input_ends = ends(kappa.bootstrap, "ctp-in", 3, "read_uncommitted")
    assert sum(input_ends.values()) == n

    consumer = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": "ctp-app",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["ctp-in"])
        producer = txn_producer(kappa.bootstrap, "ctp-app-0")
        producer.init_transactions(30)

        def transform(m):
            return m.key(), b"T:" + m.value().upper(), None

        done, outcomes = {}, []
        deadline = time.time() + 120
        while done != input_ends:
            assert time.time() < deadline, f"the app got through {done} of {input_ends}"
            msgs = consume_batch(consumer, 150)
            if not msgs:
                continue
            commit = len(outcomes) % 3 != 1  # every third transaction is aborted and redone
            positions = transact(producer, consumer, msgs, "ctp-out", transform, commit)
            if commit:
                done.update({tp.partition: tp.offset for tp in positions})
            outcomes.append(commit)
        assert outcomes.count(False) >= 3 and outcomes.count(True) >= 6

        got = consumer.committed([TopicPartition("ctp-in", p) for p in range(3)], timeout=30)
        assert {tp.partition: tp.offset for tp in got} == input_ends
    finally:
        consumer.close()
    assert group_offsets(kappa.bootstrap, "ctp-app", "ctp-in", 3) == input_ends

    wait_stable(kappa.bootstrap, "ctp-out", 3)
    committed = read_to_end(kappa.bootstrap, "ctp-out", 3, "read_committed")
    expected = sorted(f"T:V{i}" for i in range(n))
    assert sorted(m.value().decode() for m in committed) == expected, "not exactly once"
    for m in committed:
        assert m.key() == f"k{int(m.value()[3:]) % 101}".encode()
    uncommitted = read_to_end(kappa.bootstrap, "ctp-out", 3, "read_uncommitted")
    assert len(uncommitted) > n, "the aborted transactions' records were written too"
    assert {m.value() for m in uncommitted} == {m.value() for m in committed}


def test_aborted_transactions_are_invisible_to_read_committed(kappa):
    """Two transactional producers and a plain one write to the same partitions, record by
    record interleaved; per round each transaction commits or aborts."""
    create_topic(kappa, "mix", 3)
    plain = Producer({"bootstrap.servers": kappa.bootstrap, "acks": "all"})
    a = txn_producer(kappa.bootstrap, "mix-a")
    b = txn_producer(kappa.bootstrap, "mix-b")
    a.init_transactions(30)
    b.init_transactions(30)
    order = {0: [], 1: [], 2: []}  # partition -> [(value, who)] in log order
    committed = {"plain": True}
    outcomes = [(True, False), (False, True), (False, False), (True, True)]
    for r, (a_commits, b_commits) in enumerate(outcomes):
        a.begin_transaction()
        b.begin_transaction()
        if r == 2:  # an aborted transaction with large batches
            for i in range(900):
                b.produce("mix", value=f"r{r}-bulk{i}".encode(), partition=i % 3)
                order[i % 3].append((f"r{r}-bulk{i}", f"b{r}"))
            assert b.flush(30) == 0
        for i in range(6):
            for producer, who, partition in ((a, f"a{r}", i % 3), (b, f"b{r}", (i + 1) % 3),
                                             (plain, "plain", (i + 2) % 3)):
                if who == "plain" and i % 2 == 0:
                    continue
                value = f"r{r}-{who}-{i}"
                send(producer, "mix", value.encode(), partition)
                order[partition].append((value, who))
        for producer, who, commits in ((a, f"a{r}", a_commits), (b, f"b{r}", b_commits)):
            if commits:
                producer.commit_transaction(30)
            else:
                producer.abort_transaction(30)
            committed[who] = commits

    wait_stable(kappa.bootstrap, "mix", 3)
    got = by_partition(read_to_end(kappa.bootstrap, "mix", 3, "read_committed"))
    for p in range(3):
        assert got.get(p, []) == [v for v, who in order[p] if committed[who]], f"partition {p}"
    everything = by_partition(read_to_end(kappa.bootstrap, "mix", 3, "read_uncommitted"))
    for p in range(3):
        assert everything.get(p, []) == [v for v, _ in order[p]], f"partition {p}"


def test_read_committed_stops_at_an_open_transaction_until_it_commits(kappa):
    create_topic(kappa, "lso", 2)
    produce_plain(kappa.bootstrap, "lso", [(0, None, f"before-{i}") for i in range(5)] +
                  [(1, None, f"other-{i}") for i in range(3)])
    p = txn_producer(kappa.bootstrap, "lso-txn")
    p.init_transactions(30)
    p.begin_transaction()
    first_txn_offset = send(p, "lso", b"txn-0", 0)
    for i in (1, 2):
        send(p, "lso", f"txn-{i}".encode(), 0)
    produce_plain(kappa.bootstrap, "lso", [(0, None, f"after-{i}") for i in range(2)])

    lso = ends(kappa.bootstrap, "lso", 2, "read_committed")
    hwm = ends(kappa.bootstrap, "lso", 2, "read_uncommitted")
    assert lso[0] == first_txn_offset < hwm[0], (lso, hwm)
    assert lso[1] == hwm[1], "a partition without an open transaction is stable to its end"

    c = reader(kappa.bootstrap, "read_committed")
    c.assign([TopicPartition("lso", pt, OFFSET_BEGINNING) for pt in range(2)])
    got = by_partition(drain(c, [0, 1]))
    assert got[0] == [f"before-{i}" for i in range(5)], "read_committed reads up to the LSO only"
    assert c.position([TopicPartition("lso", 0)])[0].offset == first_txn_offset

    p.commit_transaction(30)
    wait_stable(kappa.bootstrap, "lso", 2)
    got = by_partition(drain(c, [0]))
    assert got[0] == ["txn-0", "txn-1", "txn-2", "after-0", "after-1"]
    c.close()


def test_a_new_producer_with_the_same_transactional_id_fences_the_old_one(kappa):
    create_topic(kappa, "fence", 2)
    p1 = txn_producer(kappa.bootstrap, "fence-id")
    p1.init_transactions(30)
    p1.begin_transaction()
    first = send(p1, "fence", b"p1-before", 0)
    assert ends(kappa.bootstrap, "fence", 2, "read_committed")[0] == first, "p1's transaction is open"

    p2 = txn_producer(kappa.bootstrap, "fence-id")
    p2.init_transactions(30)
    # Initialising the new instance ends (aborts) the old one's transaction: nothing stays open.
    wait_stable(kappa.bootstrap, "fence", 2)

    error = None
    reports = []
    try:
        for partition in (0, 1):  # a partition already in p1's transaction, and a new one
            p1.produce("fence", value=b"p1-after", partition=partition,
                       on_delivery=lambda err, m: reports.append(err))
        p1.flush(30)
        p1.commit_transaction(30)
    except (KafkaException, SystemError) as e:
        # confluent-kafka raises the fatal error from inside flush()'s delivery callbacks,
        # where Python wraps it in a SystemError whose cause it is.
        while not isinstance(e, KafkaException) and e.__cause__ is not None:
            e = e.__cause__
        error = e.args[0]
    assert error is not None, f"the fenced producer committed (deliveries: {reports})"
    assert error.fatal(), error
    assert error.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                            KafkaError.INVALID_PRODUCER_EPOCH), error

    p2.begin_transaction()
    send(p2, "fence", b"p2-0", 0)
    send(p2, "fence", b"p2-1", 1)
    p2.commit_transaction(30)
    wait_stable(kappa.bootstrap, "fence", 2)
    got = by_partition(read_to_end(kappa.bootstrap, "fence", 2, "read_committed"))
    assert got == {0: ["p2-0"], 1: ["p2-1"]}
    everything = by_partition(read_to_end(kappa.bootstrap, "fence", 2, "read_uncommitted"))
    assert everything[0][0] == "p1-before", "p1's record was written, then aborted"


ZOMBIE = """
import os, signal, sys
from confluent_kafka import Producer
bootstrap, txn_id, topic = sys.argv[1:4]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
              "transaction.timeout.ms": 3000})
p.init_transactions(30)
p.begin_transaction()
for i in range(30):
    p.produce(topic, value=f"zombie-{i}".encode(), partition=i % 3)
assert p.flush(30) == 0
print("flushed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_transaction_of_a_killed_client_is_aborted_after_its_timeout(kappa):
    create_topic(kappa, "zombie", 3)
    r = subprocess.run([sys.executable, "-c", ZOMBIE, kappa.bootstrap, "zombie-app", "zombie"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL and "flushed" in r.stdout, r.stderr
    after = {f"after-{i}" for i in range(9)}
    produce_plain(kappa.bootstrap, "zombie", [(i % 3, None, f"after-{i}") for i in range(9)])

    # The broker times the transaction out (3 s, checked at its own interval) and aborts it;
    # the last stable offset then moves past the killed client's records.
    c = reader(kappa.bootstrap, "read_committed")
    c.assign([TopicPartition("zombie", p, OFFSET_BEGINNING) for p in range(3)])
    seen = []
    deadline = time.time() + 30
    while not after <= set(seen):
        assert time.time() < deadline, f"read_committed stuck behind the dead transaction: {seen}"
        m = c.poll(0.5)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
            continue
        if m.error():
            raise KafkaException(m.error())
        seen.append(m.value().decode())
    c.close()
    assert sorted(seen) == sorted(after), "only the records after the killed client's"
    wait_stable(kappa.bootstrap, "zombie", 3)
    everything = {m.value().decode() for m in read_to_end(kappa.bootstrap, "zombie", 3,
                                                           "read_uncommitted")}
    assert {f"zombie-{i}" for i in range(30)} <= everything, "the killed client's records were written"

    # The application restarts with the same transactional.id and carries on.
    p = txn_producer(kappa.bootstrap, "zombie-app")
    p.init_transactions(30)
    p.begin_transaction()
    send(p, "zombie", b"restarted", 0)
    p.commit_transaction(30)
    wait_stable(kappa.bootstrap, "zombie", 3)
    got = {m.value().decode() for m in read_to_end(kappa.bootstrap, "zombie", 3, "read_committed")}
    assert got == after | {"restarted"}


def test_kafka_python_transactional_producer(kappa):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTopicPartition

    create_topic(kappa, "kp-txn", 2)
    create_topic(kappa, "kp-in", 1)
    produce_plain(kappa.bootstrap, "kp-in", [(0, None, f"in-{i}") for i in range(10)])
    p = KafkaProducer(bootstrap_servers=kappa.bootstrap, transactional_id="kp-app",
                      max_block_ms=30000)

    def txn(prefix, offset, commit):
        p.begin_transaction()
        for i in range(10):
            p.send("kp-txn", value=f"{prefix}-{i}".encode(), partition=i % 2)
        if offset is not None:
            p.send_offsets_to_transaction({KTopicPartition("kp-in", 0): OffsetAndMetadata(offset, "", -1)},
                                          "kp-group")
        if commit:
            p.commit_transaction()
        else:
            # kafka-python 2.3.3's abort_transaction() never returns when batches are still in
            # flight (its sender thread fails removing a drained batch, over and over): flush first.
            p.flush(timeout=30)
            p.abort_transaction()
        return {f"{prefix}-{i}" for i in range(10)}

    def run():
        p.init_transactions()
        return txn("c1", 4, True), txn("a", 8, False), txn("c2", None, True)

    try:
        first, aborted, second = bounded(run, 90, "kafka-python's transactions")
    finally:
        p.close(timeout=10)
    wait_stable(kappa.bootstrap, "kp-txn", 2)

    got = [m.value().decode() for m in read_to_end(kappa.bootstrap, "kp-txn", 2, "read_committed")]
    assert sorted(got) == sorted(first | second)
    everything = {m.value().decode() for m in read_to_end(kappa.bootstrap, "kp-txn", 2,
                                                          "read_uncommitted")}
    assert aborted <= everything
    assert group_offsets(kappa.bootstrap, "kp-group", "kp-in", 1) == {0: 4}, \
        "the committed transaction's offset, not the aborted one's"

    # kafka-python's own read_committed consumer agrees. Every partition has committed records
    # after the aborted ones, so once it has them all it has passed the aborted ones.
    c = KafkaConsumer(bootstrap_servers=kappa.bootstrap, isolation_level="read_committed",
                      enable_auto_commit=False, group_id=None)
    c.assign([KTopicPartition("kp-txn", pt) for pt in range(2)])
    c.seek_to_beginning()
    seen = []
    deadline = time.time() + 30
    while not second <= set(seen):
        assert time.time() < deadline, f"kafka-python read_committed got {seen}"
        for records in c.poll(timeout_ms=500).values():
            seen += [r.value.decode() for r in records]
    c.close()
    assert sorted(seen) == sorted(first | second)


def test_kafkajs_transactions(kappa):
    create_topic(kappa, "js-txn", 3)
    create_topic(kappa, "js-txn-in", 1)
    produce_plain(kappa.bootstrap, "js-txn-in", [(0, None, f"in-{i}") for i in range(10)])
    r = subprocess.run(["node", str(ROOT / "tests/js/kafkajs_txn.js"), kappa.bootstrap],
                       capture_output=True, text=True, timeout=150, cwd=ROOT / "tests/js")
    assert r.returncode == 0, r.stderr + r.stdout
    out = json.loads(r.stdout.strip().splitlines()[-1])
    first = {f"c1-{i}" for i in range(9)}
    aborted = {f"a-{i}" for i in range(9)}
    second = {f"c2-{i}" for i in range(9)}
    # kafkajs's read_committed consumer
    assert sorted(out["seen"]) == sorted(first | second)
    assert out["groupOffset"] == "7", "the committed transaction's offset, not the aborted one's"

    wait_stable(kappa.bootstrap, "js-txn", 3)
    got = [m.value().decode() for m in read_to_end(kappa.bootstrap, "js-txn", 3, "read_committed")]
    assert sorted(got) == sorted(first | second)
    everything = {m.value().decode() for m in read_to_end(kappa.bootstrap, "js-txn", 3,
                                                          "read_uncommitted")}
    assert aborted <= everything
    assert group_offsets(kappa.bootstrap, "js-txn-group", "js-txn-in", 1) == {0: 7}
