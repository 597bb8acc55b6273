"""`kappa sql` and `kappa pipeline` against a running `kappa dev`, with the formats and
connector options that the oracle tests do not use: CSV and raw values, message keys from
`key.fields`, `latest-offset` start and Kafka metadata columns."""
import json
import subprocess
import time

from conftest import KAPPA_BIN
from test_sql import create_topics, produce, read_topic, unique, wait_for


def kappa_cli(kappa, *args, input=None, check=True):
    r = subprocess.run([KAPPA_BIN, *args, "--server", f"http://127.0.0.1:{kappa.http_port}"],
                       input=input, capture_output=True, text=True, timeout=60)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_sql_script_with_csv_source_keyed_json_sink_and_pipeline_commands(kappa, tmp_path):
    src, out = unique("csv"), unique("keyed")
    create_topics(kappa, {src: 2, out: 1})
    produce(kappa, src, [(None, f"{i},item-{i},{i * 10}".encode()) for i in range(20)])
    script = tmp_path / "pipeline.sql"
    script.write_text(f"""
        CREATE TABLE items (id BIGINT, name STRING, price INT,
                            part INT METADATA FROM 'partition', off BIGINT METADATA FROM 'offset')
          WITH ('connector' = 'kafka', 'topic' = '{src}', 'format' = 'csv',
                'scan.startup.mode' = 'earliest-offset');
        CREATE TABLE priced (id BIGINT, label STRING, price_x2 BIGINT, part INT)
          WITH ('connector' = 'kafka', 'topic' = '{out}', 'format' = 'json',
                'key.format' = 'json', 'key.fields' = 'id', 'value.fields-include' = 'EXCEPT_KEY');
        SET 'pipeline.name' = 'csv-to-json';
        INSERT INTO priced SELECT id, CONCAT(name, '!'), price * 2, part FROM items WHERE id % 2 = 0;
    """)
    r = kappa_cli(kappa, "sql", "-f", str(script))
    assert "Submitted pipeline" in r.stdout, r.stdout
    msgs = read_topic(kappa, out, expected=10)
    got = sorted(((json.loads(m.key()), json.loads(m.value())) for m in msgs), key=lambda kv: kv[0]["id"])
    assert [k for k, _ in got] == [{"id": i} for i in range(0, 20, 2)]
    for key, value in got:
        i = key["id"]
        assert value["label"] == f"item-{i}!" and value["price_x2"] == i * 20
        assert value["part"] in (0, 1)
        assert "id" not in value  # EXCEPT_KEY: the key's fields are only in the key

    listed = kappa_cli(kappa, "pipeline", "list").stdout
    line = next(l for l in listed.splitlines() if "csv-to-json" in l)
    pid = line.split()[0]
    assert "RUNNING" in line, listed
    described = json.loads(kappa_cli(kappa, "pipeline", "describe", pid).stdout)
    assert described["name"] == "csv-to-json" and described["metrics"]["records_in"] == 20
    assert "STOPPED" in kappa_cli(kappa, "pipeline", "stop", pid).stdout
    kappa_cli(kappa, "pipeline", "delete", pid)
    assert pid not in kappa_cli(kappa, "pipeline", "list").stdout


def test_sql_errors_show_line_and_column_and_exit_non_zero(kappa):
    r = kappa_cli(kappa, "sql", "-e", "CREATE TABLE t (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json');\nSELEC a FROM t;", check=False)
    assert r.returncode != 0
    assert "line 2, column 1" in r.stderr, r.stderr
    # the statement before the bad one took effect
    assert "t" in kappa_cli(kappa, "sql", "-e", "SHOW TABLES;").stdout.split()
    r = kappa_cli(kappa, "sql", "-e", "CREATE TABLE u (a BIGINT) WITH ('connector' = 'kafka', 'format' = 'json');", check=False)
    assert r.returncode != 0 and "missing option 'topic'" in r.stderr, r.stderr


def test_raw_format_and_latest_offset_start(kappa):
    src, out = unique("raw"), unique("rawout")
    create_topics(kappa, {src: 1, out: 1})
    produce(kappa, src, [(None, b"before the pipeline")])
    kappa_cli(kappa, "sql", "-e", f"""
        CREATE TABLE lines (line STRING) WITH ('connector' = 'kafka', 'topic' = '{src}',
          'format' = 'raw', 'scan.startup.mode' = 'latest-offset');
        CREATE TABLE shout (line STRING) WITH ('connector' = 'kafka', 'topic' = '{out}', 'format' = 'raw');
        INSERT INTO shout SELECT UPPER(line) FROM lines;""")
    # latest-offset: only what arrives after the pipeline has started
    time.sleep(3)
    produce(kappa, src, [(None, b"hello"), (None, b"streaming sql")])
    msgs = read_topic(kappa, out, expected=2)
    assert sorted(m.value() for m in msgs) == [b"HELLO", b"STREAMING SQL"]
