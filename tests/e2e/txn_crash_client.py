"""The client of test_txn_crash.py, in a process of its own: the consume-transform-produce app of
txn_app.py (transactional.id txc-app, group txc-group) reading topic txc-in from the group's
committed offsets and writing txc, one record per input record, "txn|partition|offset", to the
input's partition. Every fourth transaction or so is aborted. It runs until killed.

argv: bootstrap first_transaction_number log_path seed. The log gets a line per step, written
before the next one starts: "ready", "begin T N" (transaction T holds N records), then
"commit-call T" / "abort-call T" just before the call and "committed T" / "aborted T" once it
has returned; "error ..." and exit 1 on any failure."""
import os
import random
import sys
import time
import traceback

from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from txn_app import committed_or_beginning, consume_batch, transact  # noqa: E402

IN, OUT, PARTITIONS = "txc-in", "txc", 3


def main():
    bootstrap, first, log_path, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    log = open(log_path, "a", buffering=1)

    def note(*words):
        log.write(" ".join(map(str, words)) + "\n")
        log.flush()

    try:
        rng = random.Random(seed)
        producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "txc-app",
                             "transaction.timeout.ms": 10000, "linger.ms": 1})
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "txc-group",
                             "isolation.level": "read_committed", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"})
        # As an exactly-once app restarts: fence the previous incarnation (its open transaction
        # is aborted) before reading where the group's committed offsets say to resume.
        producer.init_transactions(40)
        consumer.assign(committed_or_beginning(
            consumer, [TopicPartition(IN, p) for p in range(PARTITIONS)], 40))
        note("ready")
        t = first
        give_up = time.time() + 120  # the test kills it long before
        while time.time() < give_up:
            msgs = consume_batch(consumer, rng.randint(1, 30))
            if not msgs:
                continue
            note("begin", t, len(msgs))
            transact(producer, consumer, msgs, OUT,
                     lambda m: (m.key(), f"{t}|{m.partition()}|{m.offset()}".encode(), m.partition()),
                     commit=rng.random() >= 0.25, on_event=lambda event: note(event, t), timeout=60)
            t += 1
    except Exception:
        note("error", traceback.format_exc().replace("\n", " | "))
        sys.exit(1)


if __name__ == "__main__":
    main()
