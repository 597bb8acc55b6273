"""kafkajs (npm) against `kappa dev`: admin and producer. The records it wrote are read back
with librdkafka to check keys, values, headers and timestamps."""
import json
import subprocess

from conftest import ROOT
from test_confluent_kafka import read_all


def test_kafkajs_admin_and_producer(kappa):
    r = subprocess.run(["node", str(ROOT / "tests/js/kafkajs_client.js"), kappa.bootstrap],
                       capture_output=True, text=True, timeout=120, cwd=ROOT / "tests/js")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["created"] is True
    assert out["partitions"] == 6
    assert out["retention"] == "7200000"
    assert out["createdAgain"] is False
    assert "js-tmp" not in out["topicsAfterDelete"]
    ends = {o["partition"]: int(o["high"]) for o in out["offsets"]}
    assert sum(ends.values()) == 10_000

    got = read_all(kappa, "js", 6, expected=10_000)
    assert len(got) == 10_000
    first_at_or_after = {}
    for m in got:
        i = int(dict(m.headers())["i"])
        assert m.key() == f"k{i % 41}".encode() and m.value() == f"v{i}".encode()
        assert m.timestamp()[1] == 1_690_000_000_000 + i
        if i >= 5000:
            p = m.partition()
            first_at_or_after[p] = min(first_at_or_after.get(p, m.offset()), m.offset())
    # ListOffsets by timestamp as kafkajs saw it: the first record at or after base + 5000
    for o in out["byTime"]:
        assert int(o["offset"]) == first_at_or_after[o["partition"]]
