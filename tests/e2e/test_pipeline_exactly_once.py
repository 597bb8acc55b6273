"""Streaming SQL pipelines through kill -9 (DESIGN.md, "The stream runtime (v2)": the checkpoint
is the Kafka transaction). A pipeline with 'sink.delivery-guarantee' = 'exactly-once' commits,
every `execution.checkpointing.interval`, its output since the last checkpoint, its state
changelog and its source offsets in one transaction; so a read_committed consumer must see each
result exactly once however often `kappa dev` is killed with SIGKILL and restarted on the same
data dir. With 'at-least-once' nothing may be missing, but results may repeat.

Each test runs one pipeline over seeded bids (shuffled within the watermark's bound, on 4
partitions, as in test_sql.py) with a checkpoint interval of 1 s and parallelism 2, and kills
kappa 10 times: produce the next chunk of the input, let it run a random 0.3-3 s (so some kills
land during checkpoints and commits), kill -9, restart. Then the rest of the input and the
sentinels go in and the output is read with a read_committed consumer:

- windowed (TUMBLE into a `kafka` JSON table): the rows equal DuckDB's batch result as a
  multiset (exactly-once), or contain each of its rows and nothing else (at-least-once);
- non-windowed (GROUP BY auction into `upsert-kafka`): the last value per key equals DuckDB's
  GROUP BY. For exactly-once moreover each value of a key is the aggregate of a prefix of that
  key's input (all bids of an auction are on one source partition, so the order is known), and
  the counts of a key rise strictly in read_committed order: a replay after a crash that
  reached the output twice would repeat a count or go back.

The seed is printed (and can be fixed with KAPPA_EO_SEED=<n>), as are the kill times and the
pipeline's state before each kill; a failure carries the tail of kappa's log."""
import json
import os
import random
import re
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from itertools import accumulate

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from test_sql import (PARTITIONS, SENTINEL_MS, arrival_order, assert_none_late, assert_same_rows,
                      bids_ddl, bids_messages, create_topics, gen_bids, get_pipeline,
                      insert_pipeline_id, oracle, partition_of, produce, sentinels, sql,
                      to_tuple, unique)

KILLS = 10                 # per test; 20 per guarantee over the two kinds of pipeline
BIDS = 4000
OUT_PARTITIONS = 2
RUN_BEFORE_KILL_S = (0.3, 3.0)
FINAL_TIMEOUT_S = 90
SETTLE_S = 3.0             # read on this long after the output looked complete, to catch extras

WINDOW_COLUMNS = [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"),
                  ("n", "int"), ("total", "int")]
WINDOW_ORACLE = """SELECT epoch_ms(ws), epoch_ms(ws + 10000), auction, count(*), sum(price)
                   FROM (SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids)
                   GROUP BY ALL"""
TOTALS_ORACLE = "SELECT auction, count(*), sum(price) FROM bids GROUP BY auction"
# the sentinels as bids (the non-windowed query counts them too: auction -1)
SENTINEL_BIDS = [{"auction": -1, "bidder": 0, "price": 1, "url": "sentinel", "ts": SENTINEL_MS}
                 for _ in range(PARTITIONS)]


def log_tail(k, chars=6000):
    try:
        return re.sub(r"\x1b\[[0-9;]*m", "", k.log())[-chars:]
    except OSError as e:
        return f"(no log: {e})"


@contextmanager
def explained(k, what):
    """Re-raises an AssertionError with `what` (seed, kill times...) and kappa's log tail."""
    try:
        yield
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- {what()}\n--- tail of kappa's log:\n{log_tail(k)}") from None


def pipeline_script(kind, guarantee, src, out):
    settings = ["SET 'execution.checkpointing.interval' = '1 s'", "SET 'parallelism.default' = '2'"]
    if kind == "windowed":
        return ";\n".join([
            bids_ddl("bids", src),
            "CREATE TABLE results (window_start TIMESTAMP(3), window_end TIMESTAMP(3), "
            "auction BIGINT, n BIGINT, total BIGINT)\n"
            f"  WITH ('connector' = 'kafka', 'topic' = '{out}', 'format' = 'json',\n"
            f"        'sink.delivery-guarantee' = '{guarantee}')",
            *settings,
            "INSERT INTO results SELECT window_start, window_end, auction, COUNT(*) AS n, "
            "SUM(price) AS total\n"
            "FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n"
            "GROUP BY window_start, window_end, auction"])
    return ";\n".join([
        bids_ddl("bids", src, watermark=False),
        "CREATE TABLE totals (auction BIGINT, n BIGINT, total BIGINT, "
        "PRIMARY KEY (auction) NOT ENFORCED)\n"
        f"  WITH ('connector' = 'upsert-kafka', 'topic' = '{out}', 'key.format' = 'json',\n"
        f"        'value.format' = 'json', 'sink.delivery-guarantee' = '{guarantee}')",
        *settings,
        "INSERT INTO totals SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"])


def read_committed(bootstrap, topic, done, timeout=FINAL_TIMEOUT_S, settle=SETTLE_S):
    """Every message a read_committed consumer reads from the start of each partition of topic,
    in the order it read them (offset order within a partition). Reads until `settle` seconds
    after done(messages) first held, or until the timeout."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("eo-reader"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        assert md.error is None, md.error
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out = []
        deadline = time.time() + timeout
        settle_at = None
        while True:
            now = time.time()
            if settle_at is None and done(out):
                settle_at = now + settle
            if (settle_at is not None and now >= settle_at) or now >= deadline:
                return out
            for m in c.consume(1000, 0.3):
                if m.error():
                    raise KafkaException(m.error())
                out.append(m)
    finally:
        c.close()


def sample(k, pid):
    """The pipeline's state and checkpoints, for the printed history (never fails)."""
    try:
        p = get_pipeline(k, pid)
        return f"{p.get('state')} checkpoints={p.get('checkpoints')} " \
               f"records_in={(p.get('metrics') or {}).get('records_in')}"
    except Exception as e:  # kappa still starting, an unknown pipeline...: reported, not judged
        return f"({type(e).__name__}: {str(e)[:120]})"


# ---------------------------------------------------------------------------------------------
# What a read_committed consumer saw, judged

def windowed_rows(msgs):
    return [json.loads(m.value()) for m in msgs]


def check_windowed(msgs, expected, guarantee):
    rows = windowed_rows(msgs)
    if guarantee == "exactly-once":
        assert_same_rows(rows, expected, WINDOW_COLUMNS)
        return
    got = Counter(to_tuple(r, WINDOW_COLUMNS) for r in rows)
    want = set(expected)
    missing = sorted(want - set(got))
    unexpected = sorted(set(got) - want)
    dups = sum(n - 1 for n in got.values())
    assert not missing and not unexpected, \
        f"{len(rows)} rows ({len(got)} distinct, {dups} repeats), expected {len(want)} distinct\n" \
        f"missing ({len(missing)}): {missing[:10]}\nunexpected ({len(unexpected)}): {unexpected[:10]}"
    print(f"at-least-once: {len(rows)} rows for {len(want)} results, {dups} repeats")


def upserts_by_key(msgs):
    """auction -> [(partition, offset, value dict or None for a tombstone)], in offset order."""
    by_key = defaultdict(list)
    for m in msgs:
        assert m.key() is not None, f"an upsert without a key at {m.partition()}/{m.offset()}: {m.value()!r}"
        key = json.loads(m.key())
        assert isinstance(key, dict) and set(key) == {"auction"}, f"key {m.key()!r}"
        value = None if m.value() is None else json.loads(m.value())
        if value is not None:
            assert set(value) == {"auction", "n", "total"} and value["auction"] == key["auction"], \
                f"key {key} value {value} at {m.partition()}/{m.offset()}"
        by_key[key["auction"]].append((m.partition(), m.offset(), value))
    for updates in by_key.values():
        updates.sort(key=lambda u: (u[0], u[1]))
    return by_key


def last_values(by_key):
    """auction -> (n, total) of the last update, keys whose last update is a tombstone left out."""
    return {a: (u[-1][2]["n"], u[-1][2]["total"]) for a, u in by_key.items() if u[-1][2] is not None}


def diff_values(got, expected):
    lines = []
    for a in sorted(set(got) | set(expected)):
        if got.get(a) != expected.get(a):
            lines.append(f"auction {a}: got (n, total) {got.get(a)}, expected {expected.get(a)}")
    return lines


def check_upserts(msgs, expected, guarantee, prefix_sums):
    by_key = upserts_by_key(msgs)
    problems = []
    for a, updates in sorted(by_key.items()):
        parts = {p for p, _, _ in updates}
        if len(parts) > 1:
            problems.append(f"auction {a}: updates on partitions {sorted(parts)}; the key decides one")
    final = last_values(by_key)
    wrong = diff_values(final, expected)
    if wrong:
        problems.append(f"{len(wrong)} of {len(expected)} keys end wrong:\n  " + "\n  ".join(wrong[:10]))
    tombstones = sum(u[2] is None for us in by_key.values() for u in us)
    print(f"{len(msgs)} upserts for {len(by_key)} keys ({tombstones} tombstones)")
    if guarantee == "exactly-once":
        for a, updates in sorted(by_key.items()):
            values = [v for _, _, v in updates if v is not None]
            ns = [v["n"] for v in values]
            back = [(i, ns[i - 1], ns[i]) for i in range(1, len(ns)) if ns[i] <= ns[i - 1]]
            if back:
                i, before, after = back[0]
                where = updates[[j for j, u in enumerate(updates) if u[2] is not None][i]]
                problems.append(f"auction {a}: n went {before} -> {after} at {where[0]}/{where[1]} "
                                f"({len(back)} times in {len(ns)} updates; n: {ns[:40]})")
            sums = prefix_sums.get(a, [0])
            bad = [v for v in values if not (1 <= v["n"] < len(sums) and v["total"] == sums[v["n"]])]
            if bad:
                problems.append(f"auction {a}: {len(bad)} updates are not the aggregate of a prefix of "
                                f"its input (n, total), first: {[(v['n'], v['total']) for v in bad[:5]]}; "
                                f"the input has {len(sums) - 1} bids")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("guarantee", ["exactly-once", "at-least-once"])
@pytest.mark.parametrize("kind", ["windowed", "upsert"])
def test_pipeline_output_through_kill_9(kappa_factory, kind, guarantee):
    seed = int(os.environ.get("KAPPA_EO_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    print(f"seed {seed} (KAPPA_EO_SEED={seed} repeats it): {kind}, {guarantee}, {KILLS} kills")
    started = time.time()
    history = []

    def what():
        return f"seed {seed}; {kind} {guarantee}; history:\n  " + "\n  ".join(history)

    k = kappa_factory().start()
    src, out = unique("bids"), unique("out")
    create_topics(k, {src: PARTITIONS, out: OUT_PARTITIONS})
    bids = gen_bids(seed, n=BIDS)
    ordered = arrival_order(bids, seed + 1)
    assert_none_late(ordered)
    messages = bids_messages(ordered)
    bounds = [round(i * len(messages) / (KILLS + 1)) for i in range(KILLS + 2)]
    chunks = [messages[a:b] for a, b in zip(bounds, bounds[1:])]

    if kind == "windowed":
        expected = oracle(bids, WINDOW_ORACLE)
        assert len(expected) > 100
    else:
        expected = {a: (n, total) for a, n, total in oracle(bids + SENTINEL_BIDS, TOTALS_ORACLE)}
    # auction -> [0, price of its 1st bid, of the first two, ...] in the order of its partition
    prefix_sums = {}
    for b in ordered:
        prefix_sums.setdefault(b["auction"], []).append(b["price"])
    prefix_sums = {a: [0, *accumulate(ps)] for a, ps in prefix_sums.items()}
    prefix_sums[-1] = list(range(PARTITIONS + 1))
    assert all(len({partition_of(b) for b in bids if b["auction"] == a}) == 1 for a in prefix_sums if a >= 0)

    with explained(k, what):
        pid = insert_pipeline_id(sql(k, pipeline_script(kind, guarantee, src, out)))
        for i in range(KILLS):
            produce(k, src, chunks[i])
            run = rng.uniform(*RUN_BEFORE_KILL_S)
            time.sleep(run)
            state = sample(k, pid)
            k.kill()
            history.append(f"kill {i + 1} after {run:.2f}s, chunk {i + 1} of {len(chunks)} in; before: {state}")
            k.start()
        produce(k, src, chunks[KILLS] + sentinels())
        history.append(f"the rest ({len(chunks[KILLS])} bids) and the sentinels in; {sample(k, pid)}")

        if kind == "windowed":
            want = len(expected)
            msgs = read_committed(k.bootstrap, out,
                                  lambda ms: len({m.value() for m in ms}) >= want)
        else:
            msgs = read_committed(k.bootstrap, out,
                                  lambda ms: last_values(upserts_by_key(ms)) == expected)
        end_state = sample(k, pid)
        history.append(f"read {len(msgs)} messages after {time.time() - started:.0f}s; {end_state}")
        print("\n".join(history))

        if kind == "windowed":
            check_windowed(msgs, expected, guarantee)
        else:
            check_upserts(msgs, expected, guarantee, prefix_sums)

        p = get_pipeline(k, pid)
        assert p["state"] == "RUNNING", p
        if guarantee == "exactly-once":
            completed = (p.get("checkpoints") or {}).get("completed")
            assert isinstance(completed, int) and completed >= 1, \
                f"no completed checkpoints reported: {p.get('checkpoints')!r}"
    print(f"{kind} {guarantee}: passed in {time.time() - started:.0f}s")
    k.stop()
