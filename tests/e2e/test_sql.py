"""Streaming SQL against `kappa dev` (docs/sql.md): continuous queries submitted over
POST /v1/sql read JSON bids from Kafka topics and write JSON rows to a Kafka topic.

The windowed queries are checked against a batch oracle: the same rows loaded into DuckDB and
aggregated there. The rows are fed out of order, but never by more than the watermark's bound,
and a sentinel record per partition one hour later moves the watermark past every real window,
so every window fires exactly once and the streaming result must equal the batch result as a
multiset of rows."""
import json
import math
import os
import random
import re
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import datetime, timedelta

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BASE_MS = 1_704_067_200_000  # 2024-01-01 00:00:00 UTC
SPAN_MS = 120_000            # the bids spread over two minutes
DELAY_MS = 4_000             # WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
JITTER_MS = 3_000            # how far out of order the bids arrive (less than DELAY_MS)
SENTINEL_MS = BASE_MS + 3_600_000
PARTITIONS = 4
EPOCH = datetime(1970, 1, 1)
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}$")


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------------------------
# HTTP (urllib only)

def _request(kappa, method, path, body=None):
    """Returns (status, text) for any answer, 2xx or not."""
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    req = urllib.request.Request(f"http://127.0.0.1:{kappa.http_port}{path}", data=data,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _json(status, text):
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"answer {status} is not JSON: {text!r}") from None


def api(kappa, method, path, body=None):
    """A 2xx answer's parsed JSON body (None when empty); raises with the body otherwise."""
    status, text = _request(kappa, method, path, body)
    if not 200 <= status < 300:
        raise AssertionError(f"{method} {path} answered {status}: {text}")
    return _json(status, text) if text.strip() else None


def sql(kappa, text):
    """POST /v1/sql; the parsed answer of a 2xx, else raises with the answer's body."""
    return api(kappa, "POST", "/v1/sql", {"sql": text})


def sql_status(kappa, text):
    """POST /v1/sql; (status, parsed body), whatever the status."""
    status, text = _request(kappa, "POST", "/v1/sql", {"sql": text})
    return status, _json(status, text)


def insert_pipeline_id(answer):
    """The pipeline id started by the (only) INSERT of a /v1/sql answer."""
    ids = [r["pipeline"] for r in answer["results"] if r.get("statement") == "INSERT"]
    assert len(ids) == 1, answer
    return ids[0]


def list_pipelines(kappa):
    return api(kappa, "GET", "/v1/pipelines")


def get_pipeline(kappa, pid):
    return api(kappa, "GET", f"/v1/pipelines/{pid}")


def wait_for(fn, timeout, what):
    """Calls fn until it returns something truthy; HTTP connection errors count as not yet."""
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except OSError as e:  # kappa (re)starting: the HTTP listener is not up yet
            last = e
        if time.time() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(0.2)


def wait_state(kappa, pid, state, timeout=30):
    return wait_for(lambda: (p := get_pipeline(kappa, pid)) and p["state"] == state and p,
                    timeout, f"pipeline {pid} to be {state}")


def wait_metric(kappa, pid, name, pred, timeout=20):
    """Waits until pred(metrics[name]) holds; returns the pipeline."""
    return wait_for(lambda: (p := get_pipeline(kappa, pid)) and pred(p["metrics"][name]) and p,
                    timeout, f"pipeline {pid} metric {name}")


def prom_samples(text, name):
    """[(labels, value)] of one metric in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)", line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


def pipeline_prom_value(kappa, name, pid, pipeline_name=None):
    """The value of a per-pipeline metric on /metrics; the `pipeline` label may be the
    pipeline's id or its name."""
    labels_ok = {str(pid)} | ({pipeline_name} if pipeline_name else set())
    values = [v for labels, v in prom_samples(kappa.http("/metrics"), name)
              if labels.get("pipeline") in labels_ok]
    assert len(values) == 1, (name, pid, pipeline_name, values)
    return values[0]


# ---------------------------------------------------------------------------------------------
# Kafka

def create_topics(kappa, partitions_by_topic):
    a = AdminClient({"bootstrap.servers": kappa.bootstrap})  # must outlive its futures
    fs = a.create_topics([NewTopic(t, n, 1) for t, n in partitions_by_topic.items()])
    for f in fs.values():
        f.result(15)


def produce(kappa, topic, messages):
    """messages: [(partition or None, value bytes)], produced in this order (per partition order
    is kept: idempotent producer)."""
    p = Producer({"bootstrap.servers": kappa.bootstrap, "linger.ms": 5, "enable.idempotence": True})
    errors = []
    for i, (partition, value) in enumerate(messages):
        kwargs = {} if partition is None else {"partition": partition}
        p.produce(topic, value=value, on_delivery=lambda e, m: errors.append(e) if e else None, **kwargs)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert errors == []


def read_topic(kappa, topic, expected=None, until=None, timeout=60, settle=2.0):
    """Reads every partition of topic from the beginning (a fresh group, nothing committed).
    Stops `settle` seconds after `expected` messages arrived (or `until(messages)` held), to
    catch extra ones, or at the timeout; with neither, reads for `settle` seconds."""
    c = Consumer({"bootstrap.servers": kappa.bootstrap, "group.id": unique("e2e-reader"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        assert md.error is None, md.error
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        out = []
        deadline = time.time() + timeout
        settle_at = time.time() + settle if expected is None and until is None else None
        while True:
            now = time.time()
            if settle_at is None and ((expected is not None and len(out) >= expected)
                                      or (until is not None and until(out))):
                settle_at = now + settle
            if (settle_at is not None and now >= settle_at) or now >= deadline:
                return out
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            out.append(m)
    finally:
        c.close()


def read_rows(kappa, topic, **kwargs):
    return [json.loads(m.value()) for m in read_topic(kappa, topic, **kwargs)]


# ---------------------------------------------------------------------------------------------
# Bids, their order of arrival, and the batch oracle

def fmt_ts(ms):
    dt = EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{ms % 1000:03d}"


def parse_ts(s):
    """Kappa writes TIMESTAMP(3) as yyyy-MM-dd HH:mm:ss.SSS; returns epoch milliseconds."""
    assert isinstance(s, str) and TS_RE.match(s), f"not a yyyy-MM-dd HH:mm:ss.SSS timestamp: {s!r}"
    return (datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f") - EPOCH) // timedelta(milliseconds=1)


def gen_bids(seed, n=3000, start_ms=BASE_MS, span_ms=SPAN_MS):
    rng = random.Random(seed)
    words = ["auction", "item", "lot", "bid", "deal", "offer", "sale"]
    bids = []
    for _ in range(n):
        bids.append({
            "auction": rng.randint(1, 20),
            "bidder": rng.randint(1, 60),
            "price": rng.randint(1, 10_000),
            "url": (f"https://www.nexmark.com/{rng.choice(words)}/item.htm"
                    f"?query={rng.randint(1, 999)}&ch=x{rng.randint(0, 9)}"),
            "ts": start_ms + rng.randrange(span_ms),
        })
    return bids


def arrival_order(bids, seed):
    """The bids sorted by date_time plus a random jitter in [0, JITTER_MS): out of order, but no
    bid is preceded by one JITTER_MS or more younger than itself, so none is late."""
    rng = random.Random(seed)
    keyed = [(b["ts"] + rng.randrange(JITTER_MS), i, b) for i, b in enumerate(bids)]
    return [b for _, _, b in sorted(keyed, key=lambda k: (k[0], k[1]))]


def partition_of(bid):
    return bid["auction"] % PARTITIONS


def assert_none_late(ordered):
    """Each partition's watermark (max date_time seen - DELAY_MS) stays below every later
    bid's date_time on that partition, and so below the end of each window of that bid; the
    pipeline's watermark (the minimum over partitions) is lower still."""
    high = {}
    for b in ordered:
        p = partition_of(b)
        assert high.get(p, -1) - DELAY_MS < b["ts"], "the generator made a late bid"
        high[p] = max(high.get(p, -1), b["ts"])


def bid_json(bid):
    return json.dumps({"auction": bid["auction"], "bidder": bid["bidder"], "price": bid["price"],
                       "url": bid["url"], "date_time": fmt_ts(bid["ts"])}).encode()


def sentinels():
    """One bid per partition an hour after the data: the watermark passes every real window,
    and the sentinels' own windows never fire. auction = -1, price 1 (not a multiple of 7)."""
    return [(p, json.dumps({"auction": -1, "bidder": 0, "price": 1, "url": "sentinel",
                            "date_time": fmt_ts(SENTINEL_MS)}).encode()) for p in range(PARTITIONS)]


def bids_messages(ordered):
    return [(partition_of(b), bid_json(b)) for b in ordered]


def oracle(bids, query):
    """Runs query in DuckDB over a table `bids` loaded from the very JSON lines sent to Kafka;
    TIMESTAMP results come back as epoch milliseconds."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bids.jsonl")
        with open(path, "wb") as f:
            for b in bids:
                f.write(bid_json(b) + b"\n")
        con = duckdb.connect()
        con.execute("CREATE TABLE bids AS SELECT * FROM read_json(?, format = 'newline_delimited', "
                    "columns = {'auction': 'BIGINT', 'bidder': 'BIGINT', 'price': 'BIGINT', "
                    "'url': 'VARCHAR', 'date_time': 'TIMESTAMP'})", [path])
        assert con.execute("SELECT count(*) FROM bids").fetchone()[0] == len(bids)
        rows = con.execute(query).fetchall()
        con.close()
    return [tuple((v - EPOCH) // timedelta(milliseconds=1) if isinstance(v, datetime) else v
                  for v in row) for row in rows]


def to_tuple(obj, columns):
    """A Kappa output JSON object -> tuple in the order of columns [(name, kind)]."""
    assert isinstance(obj, dict) and set(obj) == {n for n, _ in columns}, obj
    out = []
    for name, kind in columns:
        v = obj[name]
        if kind == "ts":
            out.append(parse_ts(v))
        elif kind == "int":
            assert isinstance(v, int) and not isinstance(v, bool), (name, obj)
            out.append(v)
        elif kind == "float":
            assert isinstance(v, (int, float)) and not isinstance(v, bool), (name, obj)
            out.append(float(v))
        else:
            assert isinstance(v, str), (name, obj)
            out.append(v)
    return tuple(out)


def _sort_key(row):
    return tuple(round(v, 6) if isinstance(v, float) else v for v in row)


def assert_same_rows(got_objs, expected, columns):
    """got (Kappa's JSON objects) equals expected (DuckDB's tuples) as a multiset of rows;
    floats compare with a relative tolerance."""
    got = sorted((to_tuple(o, columns) for o in got_objs), key=_sort_key)
    expected = sorted((tuple(float(v) if kind == "float" else v for v, (_, kind) in zip(r, columns))
                       for r in expected), key=_sort_key)
    ok = len(got) == len(expected) and all(
        all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) if isinstance(b, float) else a == b
            for a, b in zip(g, e))
        for g, e in zip(got, expected))
    if not ok:
        g, e = Counter(map(_sort_key, got)), Counter(map(_sort_key, expected))
        missing, extra = sorted((e - g).elements()), sorted((g - e).elements())
        names = [n for n, _ in columns]
        raise AssertionError(f"{len(got)} rows, expected {len(expected)}; columns {names}\n"
                             f"missing ({len(missing)}): {missing[:10]}\nextra ({len(extra)}): {extra[:10]}")


def bids_ddl(name, topic, watermark=True, options=""):
    wm = f",\n  WATERMARK FOR date_time AS date_time - INTERVAL '{DELAY_MS // 1000}' SECOND" if watermark else ""
    return (f"CREATE TABLE {name} (\n"
            f"  auction BIGINT, bidder BIGINT, price BIGINT, url VARCHAR, date_time TIMESTAMP(3){wm}\n"
            f") WITH ('connector' = 'kafka', 'topic' = '{topic}', 'format' = 'json',\n"
            f"        'scan.startup.mode' = 'earliest-offset'{options})")


def sink_ddl(name, topic, columns_sql):
    return (f"CREATE TABLE {name} ({columns_sql})\n"
            f"  WITH ('connector' = 'kafka', 'topic' = '{topic}', 'format' = 'json')")


def run_against_oracle(kappa, seed, sink_columns_sql, statements, oracle_sql, columns):
    """Feeds seeded bids (out of order within the bound) and the sentinels, then starts the
    pipeline (it reads from the earliest offsets) and compares its output to DuckDB's."""
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: PARTITIONS, out: 2})
    bids = gen_bids(seed)
    ordered = arrival_order(bids, seed + 1)
    assert_none_late(ordered)
    produce(kappa, src, bids_messages(ordered) + sentinels())
    answer = sql(kappa, ";\n".join([bids_ddl("bids", src), sink_ddl("results", out, sink_columns_sql),
                                    *statements]))
    assert {k: answer["results"][0].get(k) for k in ("statement", "name")} == \
        {"statement": "CREATE TABLE", "name": "bids"}, answer
    pid = insert_pipeline_id(answer)
    expected = oracle(bids, oracle_sql)
    assert len(expected) > 100
    got = read_rows(kappa, out, expected=len(expected), timeout=60)
    assert_same_rows(got, expected, columns)
    return pid, bids, expected


# ---------------------------------------------------------------------------------------------
# 1. Windowed and stateless queries against the batch oracle

def test_tumbling_window_matches_batch_oracle(kappa):
    columns = [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("num_bids", "int"),
               ("bidders", "int"), ("total", "int"), ("min_price", "int"), ("max_price", "int"),
               ("avg_price", "float")]
    pid, bids, expected = run_against_oracle(
        kappa, 1001,
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, num_bids BIGINT, "
        "bidders BIGINT, total BIGINT, min_price BIGINT, max_price BIGINT, avg_price DOUBLE",
        ["INSERT INTO results\n"
         "SELECT window_start, window_end, auction, COUNT(*), COUNT(DISTINCT bidder), SUM(price),\n"
         "       MIN(price), MAX(price), AVG(price)\n"
         "FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n"
         "GROUP BY window_start, window_end, auction"],
        """SELECT epoch_ms(ws) AS window_start, epoch_ms(ws + 10000) AS window_end, auction,
                  count(*), count(DISTINCT bidder), sum(price), min(price), max(price), avg(price)
           FROM (SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids)
           GROUP BY ALL""",
        columns)
    # every real window fired: 12 windows of 10 s
    assert len({r[0] for r in expected}) == SPAN_MS // 10_000
    p = wait_for(lambda: (p := get_pipeline(kappa, pid))["metrics"]["records_out"] >= len(expected)
                 and p["metrics"]["records_in"] >= len(bids) + PARTITIONS and p, 20, "the metrics")
    assert p["state"] == "RUNNING" and p["error"] in (None, "")
    assert p["metrics"]["records_out"] == len(expected)
    assert p["metrics"]["records_in"] == len(bids) + PARTITIONS
    assert p["metrics"]["late_records_dropped"] == 0
    assert p["metrics"]["bad_records"] == 0
    assert p["metrics"]["watermark_ms"] == SENTINEL_MS - DELAY_MS
    assert [q["id"] for q in list_pipelines(kappa)] == [pid]


def test_session_window_matches_batch_oracle(kappa):
    """SESSION windows per auction with a 500 ms gap. Flink merges windows [t, t + gap) that
    touch, so a bid starts a new session only when it is more than the gap after the last."""
    columns = [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("num_bids", "int"),
               ("total", "int")]
    pid, bids, expected = run_against_oracle(
        kappa, 1005,
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, num_bids BIGINT, total BIGINT",
        ["INSERT INTO results\n"
         "SELECT window_start, window_end, auction, COUNT(*), SUM(price)\n"
         "FROM TABLE(SESSION(TABLE bids PARTITION BY auction, DESCRIPTOR(date_time), INTERVAL '500' MILLISECOND))\n"
         "GROUP BY window_start, window_end, auction"],
        """WITH s AS (SELECT *, epoch_ms(date_time) AS t FROM bids),
                m AS (SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY auction ORDER BY t) <= 500
                                     THEN 0 ELSE 1 END AS brk FROM s),
                g AS (SELECT *, sum(brk) OVER (PARTITION BY auction ORDER BY t
                                               ROWS UNBOUNDED PRECEDING) AS sid FROM m)
           SELECT epoch_ms(min(t)), epoch_ms(max(t) + 500), auction, count(*), sum(price)
           FROM g GROUP BY auction, sid""",
        columns)
    # the gap splits each auction's bids into several sessions
    assert len(expected) > 2 * len({r[2] for r in expected})
    assert get_pipeline(kappa, pid)["metrics"]["late_records_dropped"] == 0


def test_hop_window_matches_batch_oracle(kappa):
    slide, size = 5_000, 15_000
    run_against_oracle(
        kappa, 2002,
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, num_bids BIGINT, max_price BIGINT",
        ["INSERT INTO results\n"
         "SELECT window_start, window_end, auction, COUNT(*), MAX(price)\n"
         "FROM TABLE(HOP(TABLE bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND, INTERVAL '15' SECOND))\n"
         "GROUP BY window_start, window_end, auction"],
        # each bid is in the windows [s, s + size) with s a multiple of slide, s <= t < s + size
        f"""SELECT epoch_ms(ws), epoch_ms(ws + {size}), auction, count(*), max(price)
            FROM (SELECT *, unnest(range((t // {slide}) * {slide} - {size} + {slide},
                                         (t // {slide}) * {slide} + 1, {slide})) AS ws
                  FROM (SELECT *, epoch_ms(date_time) AS t FROM bids))
            WHERE ws <= t AND t < ws + {size}
            GROUP BY ALL""",
        [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("num_bids", "int"),
         ("max_price", "int")])


def test_cumulate_window_matches_batch_oracle(kappa):
    step, size = 5_000, 20_000
    run_against_oracle(
        kappa, 3003,
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, num_bids BIGINT, total BIGINT",
        ["INSERT INTO results\n"
         "SELECT window_start, window_end, auction, COUNT(*), SUM(price)\n"
         "FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '5' SECOND, INTERVAL '20' SECOND))\n"
         "GROUP BY window_start, window_end, auction"],
        # windows [s, s + step), [s, s + 2 step), ... [s, s + size) with s = t rounded down to size;
        # a bid is in those that end after it
        f"""SELECT epoch_ms(ws), epoch_ms(we), auction, count(*), sum(price)
            FROM (SELECT *, unnest(range(ws + {step}, ws + {size} + 1, {step})) AS we
                  FROM (SELECT *, (t // {size}) * {size} AS ws
                        FROM (SELECT *, epoch_ms(date_time) AS t FROM bids)))
            WHERE t < we
            GROUP BY ALL""",
        [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("num_bids", "int"),
         ("total", "int")])


def test_filter_projection_matches_batch_oracle(kappa):
    query = ("SELECT auction, price * 2 AS doubled, UPPER(url) AS url,\n"
             "       CASE WHEN price > 5000 THEN 'high' ELSE 'low' END AS band,\n"
             "       CAST(price AS DOUBLE) / 100 AS dollars\n"
             "FROM bids WHERE price % 7 = 0")
    pid, _, expected = run_against_oracle(
        kappa, 4004,
        "auction BIGINT, doubled BIGINT, url VARCHAR, band VARCHAR, dollars DOUBLE",
        ["INSERT INTO results\n" + query],
        query,
        [("auction", "int"), ("doubled", "int"), ("url", "str"), ("band", "str"), ("dollars", "float")])
    assert {r[3] for r in expected} == {"high", "low"}
    wait_metric(kappa, pid, "records_out", lambda v: v == len(expected))


def test_windowed_aggregation_over_view(kappa):
    run_against_oracle(
        kappa, 5005,
        "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, num_bids BIGINT, max_price BIGINT",
        ["CREATE VIEW cheap AS SELECT auction, price, date_time FROM bids WHERE price < 5000",
         "INSERT INTO results\n"
         "SELECT window_start, window_end, auction, COUNT(*), MAX(price)\n"
         "FROM TABLE(TUMBLE(TABLE cheap, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n"
         "GROUP BY window_start, window_end, auction"],
        """SELECT epoch_ms(ws), epoch_ms(ws + 10000), auction, count(*), max(price)
           FROM (SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids WHERE price < 5000)
           GROUP BY ALL""",
        [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"), ("num_bids", "int"),
         ("max_price", "int")])


def test_late_records_are_dropped_and_counted(kappa):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: PARTITIONS, out: 2})
    name = "late-bids"
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src),
        sink_ddl("results", out, "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, "
                                 "num_bids BIGINT, total BIGINT"),
        f"SET 'pipeline.name' = '{name}'",
        "INSERT INTO results\n"
        "SELECT window_start, window_end, auction, COUNT(*), SUM(price)\n"
        "FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n"
        "GROUP BY window_start, window_end, auction"])))
    assert get_pipeline(kappa, pid)["name"] == name

    # on time: a minute of bids, then one bid per partition at +100 s (watermark: +96 s)
    on_time = gen_bids(6006, n=1200, span_ms=60_000)
    ordered = arrival_order(on_time, 6007)
    advancers = [{"auction": a, "bidder": 1, "price": 100 + a, "url": "advance", "ts": BASE_MS + 100_000}
                 for a in range(1, PARTITIONS + 1)]
    assert {partition_of(b) for b in advancers} == set(range(PARTITIONS))
    assert_none_late(ordered + advancers)
    produce(kappa, src, bids_messages(ordered + advancers))
    wait_metric(kappa, pid, "watermark_ms", lambda v: v is not None and v >= BASE_MS + 90_000, timeout=60)

    # late: into [+10 s, +20 s), which fired once the watermark passed +20 s - 1 ms
    rng = random.Random(6008)
    late = [{"auction": rng.randint(1, 20), "bidder": 7, "price": rng.randint(1, 10_000), "url": "late",
             "ts": BASE_MS + 10_000 + rng.randrange(10_000)} for _ in range(8)]
    produce(kappa, src, bids_messages(late) + sentinels())

    expected = oracle(on_time + advancers, """
        SELECT epoch_ms(ws), epoch_ms(ws + 10000), auction, count(*), sum(price)
        FROM (SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids)
        GROUP BY ALL""")
    # the advancers' window fires only once every partition's sentinel (after its late bids)
    # has been read: then every late bid has been seen
    got = read_rows(kappa, out, expected=len(expected), timeout=60)
    assert_same_rows(got, expected, [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"),
                                     ("num_bids", "int"), ("total", "int")])
    p = wait_metric(kappa, pid, "late_records_dropped", lambda v: v >= len(late))
    assert p["metrics"]["late_records_dropped"] == len(late)
    assert p["state"] == "RUNNING"
    assert pipeline_prom_value(kappa, "kappa_pipeline_late_records_dropped_total", pid, name) == len(late)


# ---------------------------------------------------------------------------------------------
# 2. Bad SQL

def test_bad_sql_is_refused_with_a_position_and_creates_nothing(kappa):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: 1, out: 1})

    # The CREATE TABLEs before the bad INSERT take effect; the INSERT does not.
    status, body = sql_status(kappa, ";\n".join([
        bids_ddl("bids", src),
        sink_ddl("results", out, "auction BIGINT, price BIGINT"),
        "INSERT INTO results SELECT auction, no_such_col FROM bids"]))
    assert status == 400, body
    assert "no_such_col" in body["error"], body
    view = sql(kappa, "CREATE VIEW bid_prices AS SELECT auction, price FROM bids")
    assert len(view["results"]) == 1, view

    # A syntax error: the position of the unexpected token, 1-based, in a multi-line statement.
    status, body = sql_status(kappa, "\n".join([
        "INSERT INTO results",
        "SELECT auction, price",
        "FROM bids",
        "WHERE price > 10 10"]))
    assert status == 400, body
    assert isinstance(body["error"], str) and body["error"], body
    assert (body["line"], body["column"]) == (4, 18), body

    # A window over a time column that has no WATERMARK.
    sql(kappa, bids_ddl("unwatermarked", src, watermark=False))
    status, body = sql_status(kappa, "\n".join([
        "INSERT INTO results",
        "SELECT auction, COUNT(*)",
        "FROM TABLE(TUMBLE(TABLE unwatermarked, DESCRIPTOR(date_time), INTERVAL '10' SECOND))",
        "GROUP BY window_start, window_end, auction"]))
    assert status == 400, body
    assert "watermark" in body["error"].lower(), body

    assert list_pipelines(kappa) == []


# ---------------------------------------------------------------------------------------------
# 3. Records that do not match the columns

GOOD = [{"auction": i, "bidder": 100 + i, "price": 10 * i, "url": f"u{i}", "ts": BASE_MS + 1000 * i}
        for i in range(1, 11)]
BAD = [
    b"this is not json",
    json.dumps({"auction": 99, "bidder": 1, "price": "abc", "url": "u",
                "date_time": "2024-01-01 00:00:05.000"}).encode(),
    b'{"auction": 98, "bidder": 1, "price": ',
]


def _interleaved():
    """The good records with the bad ones among them (after the 2nd, 5th and 8th good one)."""
    msgs = []
    for i, g in enumerate(GOOD):
        msgs.append(bid_json(g))
        if i in (1, 4, 7):
            msgs.append(BAD[i // 3])
    return msgs


def _bad_records_pipeline(kappa, options):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: 1, out: 1})
    produce(kappa, src, [(0, v) for v in _interleaved()])
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src, options=options),
        sink_ddl("results", out, "auction BIGINT, price BIGINT"),
        "INSERT INTO results SELECT auction, price FROM bids"])))
    return pid, out


def _assert_good_ones_out(kappa, out):
    got = read_rows(kappa, out, expected=len(GOOD))
    assert sorted((r["auction"], r["price"]) for r in got) == [(g["auction"], g["price"]) for g in GOOD]


def test_bad_json_records_skipped_with_ignore_parse_errors(kappa):
    pid, out = _bad_records_pipeline(kappa, ",\n        'json.ignore-parse-errors' = 'true'")
    _assert_good_ones_out(kappa, out)
    p = wait_metric(kappa, pid, "bad_records", lambda v: v >= len(BAD))
    assert p["metrics"]["bad_records"] == len(BAD)
    assert p["state"] == "RUNNING"
    assert pipeline_prom_value(kappa, "kappa_pipeline_bad_records_total", pid) == len(BAD)


def test_bad_json_records_go_to_the_dead_letter_topic(kappa):
    dlq = unique("dlq")
    create_topics(kappa, {dlq: 1})
    pid, out = _bad_records_pipeline(kappa, f",\n        'dead-letter.topic' = '{dlq}'")
    _assert_good_ones_out(kappa, out)
    dead = read_topic(kappa, dlq, expected=len(BAD))
    assert sorted(m.value() for m in dead) == sorted(BAD)
    for m in dead:  # the error is in a header
        assert m.headers() and any(v for _, v in m.headers()), m.headers()
    p = wait_metric(kappa, pid, "bad_records", lambda v: v >= len(BAD))
    assert p["metrics"]["bad_records"] == len(BAD)
    assert p["state"] == "RUNNING"


def test_bad_json_record_fails_the_pipeline_by_default(kappa):
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: 1, out: 1})
    wrong_type = BAD[1]  # price "abc"
    produce(kappa, src, [(0, bid_json(g)) for g in GOOD[:5]] + [(0, wrong_type)]
            + [(0, bid_json(g)) for g in GOOD[5:]])
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src),
        sink_ddl("results", out, "auction BIGINT, price BIGINT"),
        "INSERT INTO results SELECT auction, price FROM bids"])))
    p = wait_state(kappa, pid, "FAILED", timeout=30)
    error = p["error"] or ""
    assert "price" in error or "abc" in error, p
    assert p["metrics"]["bad_records"] >= 1, p
    [listed] = [q for q in list_pipelines(kappa) if q["id"] == pid]
    assert listed["state"] == "FAILED" and listed["error"] == p["error"]


# ---------------------------------------------------------------------------------------------
# 4. A source topic that does not exist yet

def test_source_topic_created_after_the_pipeline_started(kappa):
    src, out = unique("later"), unique("out")
    create_topics(kappa, {out: 1})
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src),
        sink_ddl("results", out, "auction BIGINT, price BIGINT"),
        "INSERT INTO results SELECT auction, price FROM bids"])))
    time.sleep(2)
    assert get_pipeline(kappa, pid)["state"] == "RUNNING"
    produce(kappa, src, [(None, bid_json(g)) for g in GOOD])  # the broker auto-creates the topic
    _assert_good_ones_out(kappa, out)
    assert get_pipeline(kappa, pid)["state"] == "RUNNING"


# ---------------------------------------------------------------------------------------------
# 5. Stop, start, and a restart of kappa

def _passthrough(kappa, name):
    src, out = unique("in"), unique("out")
    create_topics(kappa, {src: PARTITIONS, out: 1})
    answer = sql(kappa, ";\n".join([
        "CREATE TABLE src (id BIGINT, payload VARCHAR) WITH ('connector' = 'kafka',\n"
        f"  'topic' = '{src}', 'format' = 'json', 'scan.startup.mode' = 'group-offsets',\n"
        f"  'properties.group.id' = '{unique('pipeline-group')}',\n"
        "  'properties.auto.offset.reset' = 'earliest')",
        "CREATE TABLE dst (id BIGINT, payload VARCHAR)\n"
        f"  WITH ('connector' = 'kafka', 'topic' = '{out}', 'format' = 'json')",
        f"SET 'pipeline.name' = '{name}'",
        "INSERT INTO dst SELECT id, UPPER(payload) FROM src"]))
    return insert_pipeline_id(answer), src, out


def _produce_ids(kappa, topic, ids):
    produce(kappa, topic, [(i % PARTITIONS, json.dumps({"id": i, "payload": f"p{i}"}).encode()) for i in ids])


def _ids(rows):
    for r in rows:
        assert r == {"id": r["id"], "payload": f"P{r['id']}"}, r
    return [r["id"] for r in rows]


def test_pipeline_stop_and_start_resumes_exactly_where_it_stopped(kappa):
    pid, src, out = _passthrough(kappa, "passthrough")
    _produce_ids(kappa, src, range(100))
    assert sorted(_ids(read_rows(kappa, out, expected=100))) == list(range(100))

    api(kappa, "POST", f"/v1/pipelines/{pid}/stop")
    wait_state(kappa, pid, "STOPPED")
    _produce_ids(kappa, src, range(100, 200))
    time.sleep(3)
    assert sorted(_ids(read_rows(kappa, out, expected=100, settle=1))) == list(range(100))
    assert get_pipeline(kappa, pid)["state"] == "STOPPED"

    api(kappa, "POST", f"/v1/pipelines/{pid}/start")
    wait_state(kappa, pid, "RUNNING")
    # offsets were committed at the stop: the rest comes through once, nothing is repeated
    assert sorted(_ids(read_rows(kappa, out, expected=200))) == list(range(200))


def test_pipeline_survives_a_kappa_restart(kappa):
    pid, src, out = _passthrough(kappa, "survivor")
    _produce_ids(kappa, src, range(100))
    assert sorted(_ids(read_rows(kappa, out, expected=100))) == list(range(100))

    assert kappa.stop() == 0
    kappa.start()
    p = wait_state(kappa, pid, "RUNNING")
    assert p["name"] == "survivor"
    assert [q["id"] for q in list_pipelines(kappa)] == [pid]

    _produce_ids(kappa, src, range(100, 200))
    ids = _ids(read_rows(kappa, out, until=lambda ms: len({json.loads(m.value())["id"] for m in ms}) >= 200))
    assert set(ids) == set(range(200))  # at least once
    counts = Counter(ids)
    assert all(counts[i] == 1 for i in range(100, 200)), "records after the restart came out twice"
    # it resumed from the committed offsets, not from the beginning
    assert sum(counts[i] > 1 for i in range(100)) < 100


def test_windowed_pipeline_across_a_kappa_restart_gives_each_window_once_and_whole(kappa):
    """Half the bids, a clean restart of Kappa mid-stream (open windows are lost with the
    process), then the rest: the pipeline resumes from offsets held back to what the open
    windows needed and from the watermark committed with them, so every window is emitted
    exactly once and complete."""
    src, out = unique("bids"), unique("out")
    create_topics(kappa, {src: PARTITIONS, out: 1})
    bids = gen_bids(2024)
    ordered = arrival_order(bids, 2025)
    half = len(ordered) // 2
    produce(kappa, src, bids_messages(ordered[:half]))
    pid = insert_pipeline_id(sql(kappa, ";\n".join([
        bids_ddl("bids", src),
        sink_ddl("results", out, "window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, "
                                 "num_bids BIGINT, total BIGINT"),
        "INSERT INTO results SELECT window_start, window_end, auction, COUNT(*), SUM(price)\n"
        "FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n"
        "GROUP BY window_start, window_end, auction"])))
    # some windows have fired before the restart
    wait_for(lambda: get_pipeline(kappa, pid)["metrics"]["records_out"] > 0, 30, "first windows")
    time.sleep(1.5)  # a commit interval
    assert kappa.stop() == 0
    kappa.start()
    produce(kappa, src, bids_messages(ordered[half:]) + sentinels())
    expected = oracle(bids, """SELECT epoch_ms(ws), epoch_ms(ws + 10000), auction, count(*), sum(price)
                               FROM (SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids)
                               GROUP BY ALL""")
    got = read_rows(kappa, out, expected=len(expected), timeout=60)
    assert_same_rows(got, expected, [("window_start", "ts"), ("window_end", "ts"), ("auction", "int"),
                                     ("num_bids", "int"), ("total", "int")])
    assert get_pipeline(kappa, pid)["state"] == "RUNNING"


def test_idle_partition_stops_holding_the_watermark_back(kappa):
    """Data on one partition of two: without an idle timeout the empty partition holds the
    watermark back and no window fires (as in Flink); with 'scan.watermark.idle-timeout' the
    windows fire."""
    src, out_idle, out_strict = unique("bids"), unique("out"), unique("out")
    create_topics(kappa, {src: 2, out_idle: 1, out_strict: 1})
    bids = gen_bids(77, n=300)
    produce(kappa, src, [(0, bid_json(b)) for b in sorted(bids, key=lambda b: b["ts"])] + [sentinels()[0]])
    cols = "window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT"
    query = ("SELECT window_start, window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(date_time), "
             "INTERVAL '10' SECOND)) GROUP BY window_start, window_end")
    sql(kappa, ";\n".join([
        bids_ddl("idle_bids", src, options=",\n 'scan.watermark.idle-timeout' = '1 s'"),
        bids_ddl("strict_bids", src),
        sink_ddl("idle_out", out_idle, cols), sink_ddl("strict_out", out_strict, cols),
        "INSERT INTO idle_out " + query.format(t="idle_bids"),
        "INSERT INTO strict_out " + query.format(t="strict_bids")]))
    expected = oracle(bids, "SELECT epoch_ms(ws), epoch_ms(ws + 10000), count(*) FROM "
                            "(SELECT *, (epoch_ms(date_time) // 10000) * 10000 AS ws FROM bids) GROUP BY ALL")
    got = read_rows(kappa, out_idle, expected=len(expected), timeout=60)
    assert_same_rows(got, expected, [("window_start", "ts"), ("window_end", "ts"), ("n", "int")])
    assert read_rows(kappa, out_strict, settle=2.0) == []
