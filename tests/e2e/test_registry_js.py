"""Schema registry against a second, independent client: the npm package
@kafkajs/confluent-schema-registry, with kafkajs producing and consuming. Avro, JSON Schema and
Protobuf records encoded with ids from Kappa's registry go through Kappa topics and are decoded
by a client that fetches each schema by id; Avro evolution (compatible v2, refused v3) and
lookup of an id by schema. The node script (tests/js/registry_roundtrip.js) prints a summary."""
import json
import subprocess

from conftest import ROOT

AVRO, JSON_T, PROTO = "js-sr-avro", "js-sr-json", "js-sr-proto"


def test_kafkajs_schema_registry_round_trip(kappa):
    kappa.wait_registry()
    r = subprocess.run(["node", str(ROOT / "tests/js/registry_roundtrip.js"), kappa.bootstrap,
                        kappa.registry_url],
                       capture_output=True, text=True, timeout=120, cwd=ROOT / "tests/js")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ids = out["ids"]

    # every schema got its own id; registering v1 again answers the same id
    assert len({ids["avroV1"], ids["avroV2"], ids["json"], ids["proto"]}) == 4
    assert out["avroV1Again"] == ids["avroV1"]

    # records came back in Confluent's wire format (magic 0, the registered id) and decode to
    # exactly what was sent, with schemas fetched by id from the registry
    assert out["magicAndIds"] == {
        AVRO: [f"0:{ids['avroV1']}", f"0:{ids['avroV2']}"],
        JSON_T: [f"0:{ids['json']}"],
        PROTO: [f"0:{ids['proto']}"],
    }
    for fmt, n in (("avro", 22), ("json", 15), ("proto", 15)):
        assert len(out[fmt]["sent"]) == n
        assert out[fmt]["decoded"] == out[fmt]["sent"], fmt
    assert [u.get("country") for u in out["avro"]["decoded"][-2:]] == ["BE", "DE"]

    # evolution: v2 (new field with a default) is the subject's latest, version 2
    assert out["latestAfterV2"] == ids["avroV2"]
    assert out["versionIds"] == {"1": ids["avroV1"], "2": ids["avroV2"]}
    assert out["fetchedV2Fields"][-1] == "country"
    # v1 records read with v2 as reader schema get the default
    assert out["readerV2"]["decoded"] == [dict(u, country="NL") for u in out["readerV2"]["sent"]]
    # v3 (new field without a default) is refused with 409 and Confluent's message
    v3 = out["v3"]
    assert v3["failed"] is True
    assert v3["status"] == 409
    assert "Schema being registered is incompatible with an earlier schema" in v3["message"]
    assert "js-sr-avro-value" in v3["message"] and "phone" in v3["message"]
    assert out["latestAfterV3"] == ids["avroV2"]

    # lookup by schema finds the ids registered above; a never-registered schema is not found
    assert out["lookup"] == {"avroV1": ids["avroV1"], "avroV2": ids["avroV2"],
                             "json": ids["json"], "proto": ids["proto"]}
    assert out["lookupRefused"]["failed"] is True
    assert out["lookupRefused"]["name"] == "ConfluentSchemaRegistryError"
    assert "Schema not found" in out["lookupRefused"]["message"]
