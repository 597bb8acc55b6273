"""The v2 stream runtime (DESIGN.md, "The stream runtime (v2)") as a user meets it: a
non-windowed aggregation into an upsert-kafka table against DuckDB, Flink's refusal of an
updating result into an append-only table, checkpoints in GET /v1/pipelines/{id}, parallelism,
state far larger than the memory it may use, and savepoints with an upgrade of the SQL that
keeps the aggregates' state."""
import json
import os
import shutil
import time
import urllib.error
import urllib.request

import pytest

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from test_sql import (PARTITIONS, api, arrival_order, bids_ddl, bids_messages, create_topics,
                      gen_bids, get_pipeline, insert_pipeline_id, oracle, produce, sentinels, sql,
                      sql_status, unique, wait_for, wait_state)

TOTALS_ORACLE = "SELECT auction, count(*), sum(price) FROM bids GROUP BY auction"


def totals_ddl(name, topic, extra_columns="", options=""):
    return (f"CREATE TABLE {name} (auction BIGINT, n BIGINT, total BIGINT{extra_columns},\n"
            f"  PRIMARY KEY (auction) NOT ENFORCED)\n"
            f"  WITH ('connector' = 'upsert-kafka', 'topic' = '{topic}', 'key.format' = 'json',\n"
            f"        'value.format' = 'json'{options})")


def read_latest(kappa, topic, until=None, timeout=60, settle=2.0):
    """The last value per key of an upsert topic (read_committed), None for a tombstone;
    reads until `until(latest)` holds, then `settle` seconds more."""
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        latest, deadline, settle_at = {}, time.time() + timeout, None
        while time.time() < deadline and (settle_at is None or time.time() < settle_at):
            m = c.poll(0.2)
            if m is None:
                if settle_at is None and until is not None and until(latest):
                    settle_at = time.time() + settle
                continue
            if m.error():
                raise KafkaException(m.error())
            key = json.loads(m.key())
            latest[key["auction"]] = json.loads(m.value()) if m.value() is not None else None
        return latest
    finally:
        c.close()


def feed_bids(kappa, src, seed, n=3000, sentinel=True):
    bids = gen_bids(seed, n=n)
    produce(kappa, src, bids_messages(arrival_order(bids, seed + 1)) + (sentinels() if sentinel else []))
    return bids


def expected_totals(bids, sentinel=True):
    rows = oracle(bids, TOTALS_ORACLE)
    out = {a: (n, t) for a, n, t in rows}
    if sentinel:
        out[-1] = (PARTITIONS, PARTITIONS)  # the sentinels: auction -1, price 1 each
    return out


def as_totals(latest):
    return {k: (v["n"], v["total"]) for k, v in latest.items() if v is not None}


def produce_many(kappa, topic, messages):
    """Produces many small messages, waiting for room in the client's queue."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 20, "enable.idempotence": True,
                  "queue.buffering.max.messages": 500000})
    errors = []
    for partition, value in messages:
        while True:
            try:
                p.produce(topic, value=value, partition=partition,
                          on_delivery=lambda e, m: errors.append(e) if e else None)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    assert errors == []


def test_non_windowed_aggregation_into_upsert_kafka_matches_duckdb(kappa):
    src, out = unique("bids"), unique("totals")
    create_topics(kappa, {src: PARTITIONS, out: 2})
    bids = feed_bids(kappa, src, 11)
    expected = expected_totals(bids)
    answer = sql(kappa, ";\n".join([
        "SET 'parallelism.default' = '2'",
        "SET 'execution.checkpointing.interval' = '1 s'",
        bids_ddl("bids", src, watermark=False), totals_ddl("totals", out),
        "INSERT INTO totals SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"]))
    pid = insert_pipeline_id(answer)
    latest = read_latest(kappa, out, until=lambda l: as_totals(l) == expected)
    assert as_totals(latest) == expected
    # the key is the primary key, the value every column
    assert all(set(v) == {"auction", "n", "total"} for v in latest.values())
    p = wait_for(lambda: (q := get_pipeline(kappa, pid))["checkpoints"]["completed"] >= 2 and q,
                 30, "two completed checkpoints")
    assert p["state"] == "RUNNING" and p["runtime"] == "v2" and p["parallelism"] == 2, p
    c = p["checkpoints"]
    assert c["last_duration_ms"] is not None and c["last_full_size_bytes"] > 0, c
    assert p["metrics"]["records_in"] == len(bids) + PARTITIONS, p["metrics"]
    metrics = kappa.http("/metrics")
    assert "kappa_pipeline_checkpoints_completed_total" in metrics


def test_updating_result_into_an_append_only_table_is_refused(kappa):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: 1, out: 1})
    status, body = sql_status(kappa, ";\n".join([
        bids_ddl("bids", src, watermark=False),
        f"CREATE TABLE plain (auction BIGINT, n BIGINT) WITH ('connector' = 'kafka', "
        f"'topic' = '{out}', 'format' = 'json')",
        "INSERT INTO plain SELECT auction, COUNT(*) FROM bids GROUP BY auction"]))
    assert status == 400, body
    assert "doesn't support consuming update changes" in body["error"], body
    assert "GroupAggregate" in body["error"] and "upsert-kafka" in body["error"], body
    assert api(kappa, "GET", "/v1/pipelines") == []


def test_options_a_connector_does_not_implement_are_refused(kappa):
    status, body = sql_status(kappa, "CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', "
                                     "'topic' = 't', 'format' = 'json', 'sink.flush-everything' = 'yes')")
    assert status == 400, body
    assert "sink.flush-everything" in body["error"] and "sink.delivery-guarantee" in body["error"], body
    status, body = sql_status(kappa, "CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', "
                                     "'topic' = 't', 'format' = 'json', "
                                     "'sink.delivery-guarantee' = 'twice')")
    assert status == 400 and "twice" in body["error"], body


def test_state_larger_than_its_memory_matches_duckdb(kappa):
    """Many distinct keys with the decoded-key cache and RocksDB's block cache and write
    buffers capped far below the state's size: every key's final count and sum is right."""
    keys = int(os.environ.get("KAPPA_LARGE_STATE_KEYS", "200000"))
    src, out = unique("events"), unique("counts")
    create_topics(kappa, {src: PARTITIONS, out: 4})
    # two events per key, the second one later and on another partition
    msgs = [(k % PARTITIONS, json.dumps({"k": k, "v": k % 97}).encode()) for k in range(keys)]
    msgs += [((k + 1) % PARTITIONS, json.dumps({"k": k, "v": 1}).encode()) for k in range(keys)]
    produce_many(kappa, src, msgs)
    answer = sql(kappa, ";\n".join([
        "SET 'state.cache.max-keys' = '1000'",
        "SET 'state.backend.rocksdb.block.cache-size' = '1 mb'",
        "SET 'state.backend.rocksdb.writebuffer.size' = '1 mb'",
        "SET 'execution.checkpointing.interval' = '2 s'",
        f"CREATE TABLE events (k BIGINT, v BIGINT) WITH ('connector' = 'kafka', 'topic' = '{src}', "
        f"'format' = 'json', 'scan.startup.mode' = 'earliest-offset')",
        f"CREATE TABLE counts (k BIGINT, n BIGINT, s BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ("
        f"'connector' = 'upsert-kafka', 'topic' = '{out}', 'key.format' = 'json', 'value.format' = 'json')",
        "INSERT INTO counts SELECT k, COUNT(*), SUM(v) FROM events GROUP BY k"]))
    pid = insert_pipeline_id(answer)
    wait_for(lambda: get_pipeline(kappa, pid)["metrics"]["records_in"] >= 2 * keys, 300,
             "the pipeline to read every event")
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": unique("reader"),
                  "enable.auto.commit": False})
    latest = {}
    try:
        md = c.list_topics(out, timeout=10).topics[out]
        c.assign([TopicPartition(out, p, OFFSET_BEGINNING) for p in md.partitions])
        deadline, quiet_since = time.time() + 300, None
        while time.time() < deadline:
            batch = c.consume(10000, 0.5)
            if not batch:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since > 3 and len(latest) >= keys:
                    break
                continue
            quiet_since = None
            for m in batch:
                if m.error():
                    raise KafkaException(m.error())
                v = json.loads(m.value())
                latest[v["k"]] = (v["n"], v["s"])
    finally:
        c.close()
    assert len(latest) == keys
    wrong = [k for k in range(keys) if latest.get(k) != (2, k % 97 + 1)]
    assert wrong == [], f"{len(wrong)} keys wrong, e.g. {[(k, latest.get(k)) for k in wrong[:5]]}"
    p = get_pipeline(kappa, pid)
    assert p["state"] == "RUNNING", p


def test_savepoint_stop_upgrade_and_resume_keeps_the_aggregates(kappa, tmp_path):
    src, out = unique("bids"), unique("totals")
    create_topics(kappa, {src: PARTITIONS, out: 2})
    first = feed_bids(kappa, src, 21, n=2000, sentinel=False)
    answer = sql(kappa, ";\n".join([
        "SET 'execution.checkpointing.interval' = '1 s'",
        bids_ddl("bids", src, watermark=False),
        totals_ddl("totals", out, extra_columns=", average DOUBLE"),
        "INSERT INTO totals (auction, n, total) SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"]))
    pid = insert_pipeline_id(answer)
    expected = expected_totals(first, sentinel=False)
    read_latest(kappa, out, until=lambda l: as_totals(l) == expected, timeout=60)

    # a savepoint with stop: a self-contained directory a user can copy
    sp_dir = tmp_path / "sp1"
    sp = api(kappa, "POST", f"/v1/pipelines/{pid}/savepoint", {"dir": str(sp_dir), "stop": True})
    assert sp["checkpoint"] >= 1 and (sp_dir / "_metadata.json").exists(), sp
    assert wait_state(kappa, pid, "STOPPED")
    copied = tmp_path / "copied"
    shutil.copytree(sp_dir, copied)
    shutil.rmtree(sp_dir)

    second = gen_bids(22, n=2000)
    produce(kappa, src, bids_messages(arrival_order(second, 23)))
    # resume from the copy: the aggregates continue from the savepoint's state and offsets
    p = api(kappa, "POST", f"/v1/pipelines/{pid}/start", {"from_savepoint": str(copied)})
    assert p["state"] == "RUNNING", p

    # an upgrade whose aggregation keys changed cannot take the state: refused, still running
    bad = "INSERT INTO totals SELECT bidder, COUNT(*), SUM(price), 0.0 FROM bids GROUP BY bidder"
    status, text = _post(kappa, f"/v1/pipelines/{pid}/upgrade", {"sql": bad})
    assert status == 400 and "keys or aggregates changed" in text, text
    assert get_pipeline(kappa, pid)["state"] == "RUNNING"

    # the new SQL adds a column computed from the existing aggregates
    new_sql = ("INSERT INTO totals SELECT auction, COUNT(*), SUM(price), "
               "CAST(SUM(price) AS DOUBLE) / COUNT(*) FROM bids GROUP BY auction")
    up = api(kappa, "POST", f"/v1/pipelines/{pid}/upgrade", {"sql": new_sql})
    assert up["sql"] == new_sql and up["savepoint"]["checkpoint"] > sp["checkpoint"], up
    third = gen_bids(24, n=500)
    produce(kappa, src, bids_messages(arrival_order(third, 25)))
    expected = expected_totals(first + second + third, sentinel=False)
    latest = read_latest(kappa, out, until=lambda l: as_totals(l) == expected, timeout=60)
    assert as_totals(latest) == expected
    touched = {b["auction"] for b in third}
    for k in touched:
        v = latest[k]
        assert abs(v["average"] - v["total"] / v["n"]) < 1e-9, (k, v)


def _post(kappa, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{kappa.http_port}{path}",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("kind", ["windowed", "upsert"])
def test_state_is_rebuilt_from_the_changelog_when_the_local_copy_is_gone(kappa_factory, kind):
    """As when a task moves to another machine: kappa is killed, its pipelines' local RocksDB
    directories are deleted, and the restarted pipeline rebuilds its state from the changelog
    topic up to the committed checkpoint; the results are those of one uninterrupted run."""
    k = kappa_factory().start()
    src, out = unique("bids"), unique("out")
    create_topics(k, {src: PARTITIONS, out: 2})
    bids = gen_bids(31)
    ordered = arrival_order(bids, 32)
    half = len(ordered) // 2
    produce(k, src, bids_messages(ordered[:half]))
    if kind == "windowed":
        sink = ("CREATE TABLE results (window_start TIMESTAMP(3), window_end TIMESTAMP(3), "
                f"auction BIGINT, n BIGINT, total BIGINT) WITH ('connector' = 'kafka', 'topic' = '{out}', "
                "'format' = 'json', 'sink.delivery-guarantee' = 'exactly-once')")
        query = ("INSERT INTO results SELECT window_start, window_end, auction, COUNT(*), SUM(price) "
                 "FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
                 "GROUP BY window_start, window_end, auction")
    else:
        sink = totals_ddl("results", out, options=", 'sink.delivery-guarantee' = 'exactly-once'")
        query = "INSERT INTO results SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"
    pid = insert_pipeline_id(sql(k, ";\n".join([
        "SET 'execution.checkpointing.interval' = '500 ms'", "SET 'parallelism.default' = '2'",
        bids_ddl("bids", src, watermark=(kind == "windowed")), sink, query])))
    wait_for(lambda: get_pipeline(k, pid)["metrics"]["records_in"] >= half, 30, "the first half read")
    first = get_pipeline(k, pid)["checkpoints"]["completed"]
    wait_for(lambda: get_pipeline(k, pid)["checkpoints"]["completed"] >= first + 2, 30,
             "two checkpoints after the first half")
    k.kill()
    state_dir = k.data_dir / "pipelines" / pid
    assert any(state_dir.glob("task-*/chk-*")), list(state_dir.rglob("*"))[:10]
    shutil.rmtree(state_dir)
    k.start()
    p = wait_state(k, pid, "RUNNING")
    produce(k, src, bids_messages(ordered[half:]) + sentinels())
    p = wait_for(lambda: (q := get_pipeline(k, pid))["checkpoints"]["restored_from"] and q, 30,
                 "the restore to be reported")
    assert "changelog" in p["checkpoints"]["restored_from"], p["checkpoints"]
    if kind == "windowed":
        from test_sql import assert_same_rows, read_rows
        from test_pipeline_exactly_once import WINDOW_COLUMNS, WINDOW_ORACLE
        expected = oracle(bids, WINDOW_ORACLE)
        got = read_rows(k, out, expected=len(expected), timeout=60)
        assert_same_rows(got, expected, WINDOW_COLUMNS)
    else:
        expected = expected_totals(bids)
        latest = read_latest(k, out, until=lambda l: as_totals(l) == expected)
        assert as_totals(latest) == expected
    k.stop()


def _rss_bytes(k):
    with open(f"/proc/{k.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_slow_sink_slows_the_source_instead_of_filling_memory(kappa_factory):
    """The sink's Kafka client may hold 20 messages and sends every 100 ms (librdkafka's own
    settings on the table): about 200 results a second. The source topic holds far more. The
    pipeline's memory stays flat while the source's lag stays large, and the time spent
    waiting shows as backpressure."""
    k = kappa_factory().start()
    src, out = unique("events"), unique("counts")
    create_topics(k, {src: PARTITIONS, out: 1})
    pad = "x" * 100
    n = 200_000
    produce_many(k, src, [(i % PARTITIONS, json.dumps({"k": i, "pad": pad}).encode()) for i in range(n)])
    pid = insert_pipeline_id(sql(k, ";\n".join([
        "SET 'parallelism.default' = '2'",
        f"CREATE TABLE events (k BIGINT, pad VARCHAR) WITH ('connector' = 'kafka', 'topic' = '{src}', "
        f"'format' = 'json', 'scan.startup.mode' = 'earliest-offset')",
        f"CREATE TABLE counts (k BIGINT, n BIGINT, PRIMARY KEY (k) NOT ENFORCED) WITH ("
        f"'connector' = 'upsert-kafka', 'topic' = '{out}', 'key.format' = 'json', 'value.format' = 'json', "
        f"'properties.queue.buffering.max.messages' = '20', 'properties.linger.ms' = '100')",
        "INSERT INTO counts SELECT k, COUNT(*) FROM events GROUP BY k"])))
    wait_for(lambda: get_pipeline(k, pid)["metrics"]["records_out"] > 0, 30, "first output")
    time.sleep(3)
    rss_before, p_before = _rss_bytes(k), get_pipeline(k, pid)
    time.sleep(8)
    rss_after, p = _rss_bytes(k), get_pipeline(k, pid)
    m = p["metrics"]
    assert p["state"] == "RUNNING", p
    # the source is held back: most of the topic is still unread (lag), not buffered in memory
    assert m["records_in"] < n / 2, m
    # in flight: what the queues between tasks (4 batches each) and the tasks hold
    assert m["records_in"] - m["records_out"] < 2 * 6 * 8192, m
    assert m["backpressure_seconds"] > p_before["metrics"]["backpressure_seconds"] + 4, (p_before["metrics"], m)
    assert 0 <= m["queued_batches"] <= 2 * 4, m
    assert rss_after - rss_before < 64 << 20, (rss_before, rss_after)
    k.stop()


def test_savepoint_and_start_from_it_on_the_command_line(kappa, tmp_path):
    from conftest import KAPPA_BIN
    import subprocess
    src, out = unique("bids"), unique("totals")
    create_topics(kappa, {src: PARTITIONS, out: 1})
    bids = feed_bids(kappa, src, 41, n=500, sentinel=False)
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src, watermark=False), totals_ddl("totals", out),
        "INSERT INTO totals SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"])))
    expected = expected_totals(bids, sentinel=False)
    read_latest(kappa, out, until=lambda l: as_totals(l) == expected)
    server = ["--server", f"http://127.0.0.1:{kappa.http_port}"]
    sp = tmp_path / "my-savepoint"
    r = subprocess.run([KAPPA_BIN, "pipeline", "savepoint", pid, "--stop", "--dir", str(sp), *server],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"written to {sp}" in r.stdout, r.stdout
    assert get_pipeline(kappa, pid)["state"] == "STOPPED"
    meta = json.loads((sp / "_metadata.json").read_text())
    assert meta["pipeline"] == pid and meta["operators"] and meta["offsets"], meta
    r = subprocess.run([KAPPA_BIN, "pipeline", "savepoint", pid, *server],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not running" in r.stderr, (r.stdout, r.stderr)
    r = subprocess.run([KAPPA_BIN, "pipeline", "start", pid, "--from-savepoint", str(tmp_path / "nope"), *server],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not a savepoint" in r.stderr, (r.stdout, r.stderr)
    r = subprocess.run([KAPPA_BIN, "pipeline", "start", pid, "--from-savepoint", str(sp), *server],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "RUNNING" in r.stdout, (r.stdout, r.stderr)
    more = gen_bids(42, n=300)
    produce(kappa, src, bids_messages(arrival_order(more, 43)))
    expected = expected_totals(bids + more, sentinel=False)
    assert as_totals(read_latest(kappa, out, until=lambda l: as_totals(l) == expected)) == expected
    assert "savepoint" in get_pipeline(kappa, pid)["checkpoints"]["restored_from"]


def test_the_v1_runtime_stays_selectable_for_comparison(kappa):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: PARTITIONS, out: 1})
    bids = feed_bids(kappa, src, 51, n=1000)
    answer = sql(kappa, ";\n".join([
        "SET 'execution.runtime' = 'v1'",
        bids_ddl("bids", src),
        f"CREATE TABLE results (window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, n BIGINT) "
        f"WITH ('connector' = 'kafka', 'topic' = '{out}', 'format' = 'json')",
        "INSERT INTO results SELECT window_start, window_end, auction, COUNT(*) FROM "
        "TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
        "GROUP BY window_start, window_end, auction"]))
    pid = insert_pipeline_id(answer)
    expected = oracle(bids, "SELECT epoch_ms(ws), epoch_ms(ws + 10000), auction, count(*) FROM "
                            "(SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids) GROUP BY ALL")
    from test_sql import assert_same_rows, read_rows
    got = read_rows(kappa, out, expected=len(expected), timeout=60)
    assert_same_rows(got, expected, [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("n", "int")])
    p = get_pipeline(kappa, pid)
    assert p["runtime"] == "v1" and p["checkpoints"]["completed"] == 0, p
    status, body = sql_status(kappa, ";\n".join([
        "SET 'execution.runtime' = 'v1'", totals_ddl("totals", unique("t")),
        "INSERT INTO totals SELECT auction, COUNT(*), SUM(price) FROM bids GROUP BY auction"]))
    assert status == 400 and "v1 runtime" in body["error"], body


def test_key_fields_prefix_is_left_out_of_the_message_key(kappa):
    src, out = unique("bids"), unique("keyed")
    create_topics(kappa, {src: PARTITIONS, out: 1})
    bids = feed_bids(kappa, src, 61, n=50, sentinel=False)
    sql(kappa, ";\n".join([
        bids_ddl("bids", src, watermark=False),
        f"CREATE TABLE keyed (k_auction BIGINT, price BIGINT) WITH ('connector' = 'kafka', "
        f"'topic' = '{out}', 'format' = 'json', 'key.format' = 'json', 'key.fields' = 'k_auction', "
        f"'key.fields-prefix' = 'k_', 'value.fields-include' = 'EXCEPT_KEY')",
        "INSERT INTO keyed SELECT auction, price FROM bids"]))
    from test_sql import read_topic
    msgs = read_topic(kappa, out, expected=len(bids), timeout=60)
    assert len(msgs) == len(bids)
    got = sorted((json.loads(m.key())["auction"], json.loads(m.value())["price"]) for m in msgs)
    assert got == sorted((b["auction"], b["price"]) for b in bids)
    assert all(set(json.loads(m.value())) == {"price"} for m in msgs)
