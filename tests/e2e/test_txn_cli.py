"""`kappa txn list|describe|producers` (kafka-transactions.sh's views) on transactions that
librdkafka's transactional producer opens and ends, and the transaction metrics."""
import re
import subprocess
import urllib.request

from confluent_kafka import Producer

from conftest import KAPPA_BIN
from test_confluent_kafka import create_topic


def cli(kappa, *args, ok=True):
    r = subprocess.run([KAPPA_BIN, "txn", *args, "--bootstrap-server", kappa.bootstrap],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r.stdout if ok else r.stderr


def listed(kappa, *args):
    """transactional id -> (producer id, state) from `kappa txn list`."""
    rows = {}
    for line in cli(kappa, "list", *args).splitlines()[1:]:
        txn_id, _coordinator, producer_id, state = line.split()
        rows[txn_id] = (int(producer_id), state)
    return rows


def described(kappa, txn_id):
    return dict(line.split(": ", 1) for line in cli(kappa, "describe", txn_id).splitlines())


def metric(kappa, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{kappa.http_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name}(?:_total)? (\d+)", text, re.M)
    assert m, f"{name} not in /metrics"
    return int(m.group(1))


def test_transactions_are_listed_described_and_counted(kappa):
    create_topic(kappa, "cli-txn", 3)
    p = Producer({"bootstrap.servers": kappa.bootstrap, "transactional.id": "cli-app",
                  "transaction.timeout.ms": 45000})
    p.init_transactions(30)
    assert listed(kappa)["cli-app"][1] == "Empty"
    started = metric(kappa, "kappa_transactions_started")

    p.begin_transaction()
    offsets = []
    for partition in (0, 2):
        p.produce("cli-txn", value=b"v", partition=partition,
                  on_delivery=lambda err, m: offsets.append((m.partition(), m.offset())))
    assert p.flush(30) == 0
    producer_id, state = listed(kappa)["cli-app"]
    assert state == "Ongoing"
    d = described(kappa, "cli-app")
    assert d["TransactionState"] == "Ongoing"
    assert int(d["ProducerId"]) == producer_id
    assert d["TransactionTimeoutMs"] == "45000"
    assert sorted(d["TopicPartitions"].split(",")) == ["cli-txn-0", "cli-txn-2"]
    assert int(d["CurrentTransactionStartTimeMs"]) > 0
    assert listed(kappa, "--state", "Ongoing").keys() == {"cli-app"}
    assert listed(kappa, "--state", "CompleteCommit") == {}
    assert metric(kappa, "kappa_transactions_open") == 1
    assert metric(kappa, "kappa_transactions_started") == started + 1
    # The partition's producer view shows where the open transaction began.
    rows = cli(kappa, "producers", "--topic", "cli-txn", "--partition", "2").splitlines()[1:]
    assert len(rows) == 1
    pid, _epoch, last_seq, _ts, txn_start = rows[0].split()
    assert int(pid) == producer_id and int(last_seq) == 0
    assert int(txn_start) == dict(offsets)[2]

    committed = metric(kappa, "kappa_transactions_committed")
    p.commit_transaction(30)
    assert listed(kappa)["cli-app"][1] == "CompleteCommit"
    d = described(kappa, "cli-app")
    assert d["TopicPartitions"] == "" and d["CurrentTransactionStartTimeMs"] == "-1"
    assert metric(kappa, "kappa_transactions_committed") == committed + 1
    assert metric(kappa, "kappa_transactions_open") == 0
    rows = cli(kappa, "producers", "--topic", "cli-txn", "--partition", "2").splitlines()[1:]
    assert rows[0].split()[4] == "-1", "no transaction open after the commit"

    p.begin_transaction()
    p.produce("cli-txn", value=b"w", partition=1)
    assert p.flush(30) == 0
    aborted = metric(kappa, "kappa_transactions_aborted")
    p.abort_transaction(30)
    assert listed(kappa)["cli-app"][1] == "CompleteAbort"
    assert metric(kappa, "kappa_transactions_aborted") == aborted + 1


def test_an_unknown_transaction_is_a_clear_error(kappa):
    err = cli(kappa, "describe", "no-such-txn", ok=False)
    assert "no-such-txn" in err and "ransactional" in err
    err = cli(kappa, "list", "--state", "Bogus", ok=False)
    assert "Bogus" in err


def test_a_timeout_above_the_brokers_maximum_is_refused(kappa):
    from confluent_kafka import KafkaException
    p = Producer({"bootstrap.servers": kappa.bootstrap, "transactional.id": "too-long",
                  "transaction.timeout.ms": 900001})
    try:
        p.init_transactions(30)
        raise AssertionError("a timeout over transaction.max.timeout.ms was accepted")
    except KafkaException as e:
        assert e.args[0].name() == "INVALID_TRANSACTION_TIMEOUT", e
