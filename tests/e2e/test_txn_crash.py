"""Transactions through kill -9. A consume-transform-produce app (txn_crash_client.py, its own
process, librdkafka) runs transactions over three partitions, commits its input offsets to a
group inside them and aborts some; the broker is killed with SIGKILL at a random moment of that
traffic and restarted on the same data dir, twenty times, the app restarting with it (same
transactional.id, so each incarnation fences the last and resumes from the group's offsets).

Afterwards, for a read_committed consumer:
- a transaction whose commit_transaction() returned is visible, all its records, once;
- a transaction that was aborted, or whose commit_transaction() was never called, is invisible;
- one whose commit call was in flight at the kill may be either, but all or nothing;
- the group's committed offsets are exactly the input that the visible output came from: each
  input record below them has its output visible once, none above;
- the last stable offset of a partition, sampled before each kill, after each restart and at
  the end, never moves backwards."""
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from test_confluent_kafka import create_topic
from test_transactions import ends, group_offsets, produce_plain, read_to_end, wait_stable

CLIENT = Path(__file__).with_name("txn_crash_client.py")
ROUNDS = 20
PARTITIONS = 3
IN_RECORDS = PARTITIONS * 8000


def parse_client_log(path):
    """transaction number -> {"n": records, "events": {"commit-call", "committed", ...}}"""
    txns = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if words[0] == "begin":
            txns[int(words[1])] = {"n": int(words[2]), "events": set()}
        elif words[0] in ("commit-call", "committed", "abort-call", "aborted"):
            txns[int(words[1])]["events"].add(words[0])
    return txns


def wait_ready(client, log_path, err_path, timeout=90):
    deadline = time.time() + timeout
    while not (log_path.exists() and "ready" in log_path.read_text().splitlines()):
        if client.poll() is not None or time.time() > deadline:
            log = log_path.read_text() if log_path.exists() else ""
            raise AssertionError(f"the client did not get going: {log} {err_path.read_text()}")
        time.sleep(0.05)


def test_transactions_survive_kill_9(kappa_factory, tmp_path):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print("seed", seed)
    k = kappa_factory().start()
    create_topic(k, "txc-in", PARTITIONS)
    create_topic(k, "txc", PARTITIONS)
    produce_plain(k.bootstrap, "txc-in",
                  [(i % PARTITIONS, f"k{i % 50}", f"in{i}") for i in range(IN_RECORDS)])

    txns = {}
    lso_history = []  # (when, {partition: read_committed end offset})
    for r in range(ROUNDS):
        if r:
            k.start()
        lso_history.append((f"round {r} start", ends(k.bootstrap, "txc", PARTITIONS, "read_committed")))
        log_path, err_path = tmp_path / f"client-{r}.log", tmp_path / f"client-{r}.err"
        with open(err_path, "w") as err:
            client = subprocess.Popen(
                [sys.executable, str(CLIENT), k.bootstrap, str(r * 1_000_000), str(log_path),
                 str(rng.randrange(1 << 30))], stdout=err, stderr=err)
        try:
            wait_ready(client, log_path, err_path)
            time.sleep(rng.uniform(0.3, 2.5))  # the kill comes at a random moment of the traffic
            lso_history.append((f"round {r} before the kill",
                                ends(k.bootstrap, "txc", PARTITIONS, "read_committed")))
            assert client.poll() is None, \
                f"the client failed before the kill: {log_path.read_text()[-3000:]} {err_path.read_text()}"
            k.kill()
        finally:
            client.kill()
            client.wait()
        txns.update(parse_client_log(log_path))

    k.start()
    # The app's next incarnation fences the last one: whatever it left open is aborted.
    Producer({"bootstrap.servers": k.bootstrap, "transactional.id": "txc-app"}).init_transactions(60)
    lso_history.append(("the end", wait_stable(k.bootstrap, "txc", PARTITIONS, timeout=30)))
    for p in range(PARTITIONS):
        history = [lso[p] for _, lso in lso_history]
        assert history == sorted(history), \
            f"partition {p}: the last stable offset went back: {[(w, lso[p]) for w, lso in lso_history]}"

    visible = read_to_end(k.bootstrap, "txc", PARTITIONS, "read_committed", timeout=60)
    per_txn = Counter()
    sources = []
    for m in visible:
        t, src_partition, src_offset = map(int, m.value().decode().split("|"))
        assert m.partition() == src_partition
        per_txn[t] += 1
        sources.append((src_partition, src_offset))
    assert len(sources) == len(set(sources)), "an input record's output is visible more than once"

    for t, count in per_txn.items():
        events = txns.get(t, {}).get("events", set())
        assert "commit-call" in events, f"transaction {t} is visible though it was {sorted(events)}"
        assert count == txns[t]["n"], f"transaction {t}: {count} of its {txns[t]['n']} records visible"
    for t, info in txns.items():
        if "committed" in info["events"]:
            assert per_txn[t] == info["n"], \
                f"transaction {t} was committed, {per_txn[t]} of its {info['n']} records visible"

    offsets = group_offsets(k.bootstrap, "txc-group", "txc-in", PARTITIONS)
    for p in range(PARTITIONS):
        got = sorted(o for sp, o in sources if sp == p)
        upto = max(offsets[p], 0)
        assert got == list(range(upto)), \
            f"input partition {p}: group offset {offsets[p]}, outputs visible for {len(got)} inputs " \
            f"({got[:3]}...{got[-3:]})"

    committed = sum("committed" in i["events"] for i in txns.values())
    aborted = sum("aborted" in i["events"] for i in txns.values())
    assert committed >= 10 and aborted >= 3, f"too little traffic to tell: {committed} committed, {aborted} aborted"
    k.stop()
