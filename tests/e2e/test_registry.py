"""Schema registry against Confluent's own Python client: SchemaRegistryClient and the Avro,
JSON Schema and Protobuf serializers producing to and consuming from Kappa topics, schema
evolution under compatibility rules, the REST API's error codes, restarts and kill -9."""
import json
import subprocess
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import (Schema, SchemaReference, SchemaRegistryClient,
                                             SchemaRegistryError)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import KAPPA_BIN

CT = "application/vnd.schemaregistry.v1+json"


def rest(k, method, path, body=None, raw=None):
    """(status, parsed JSON) of one REST call; errors are answers too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(k.registry_url + path, data=data, method=method,
                                 headers={"Content-Type": CT})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.headers["Content-Type"].startswith(CT)
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text)


def produce_and_consume(k, topic, serializer, deserializer, values):
    producer = Producer({"bootstrap.servers": k.bootstrap})
    for i, v in enumerate(values):
        ctx = SerializationContext(topic, MessageField.VALUE)
        producer.produce(topic, key=str(i).encode(), value=serializer(v, ctx))
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": k.bootstrap, "group.id": "g-" + uuid.uuid4().hex,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out = []
    try:
        while len(out) < len(values):
            m = consumer.poll(10)
            assert m is not None, f"only {len(out)} of {len(values)} records came back"
            assert m.error() is None, m.error()
            raw = m.value()
            assert raw[0] == 0, "Confluent wire format: magic byte 0"
            out.append(deserializer(raw, SerializationContext(topic, MessageField.VALUE)))
    finally:
        consumer.close()
    return out


@pytest.fixture
def reg(kappa):
    kappa.wait_registry()
    return kappa


def client(k):
    return SchemaRegistryClient({"url": k.registry_url})


USER_V1 = json.dumps({
    "type": "record", "name": "User", "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "int"},
               {"name": "tags", "type": {"type": "array", "items": "string"}},
               {"name": "plan", "type": {"type": "enum", "name": "Plan", "symbols": ["FREE", "PRO"]}},
               {"name": "email", "type": ["null", "string"], "default": None}]})
USER_V2 = json.dumps({
    "type": "record", "name": "User", "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "long"},  # int -> long: a promotion readers accept
               {"name": "tags", "type": {"type": "array", "items": "string"}},
               {"name": "plan", "type": {"type": "enum", "name": "Plan", "symbols": ["FREE", "PRO"]}},
               {"name": "email", "type": ["null", "string"], "default": None},
               {"name": "country", "type": "string", "default": "NL"}]})
USER_BAD = json.dumps({
    "type": "record", "name": "User", "namespace": "com.example",
    "fields": [{"name": "name", "type": "string"},
               {"name": "age", "type": "long"},
               {"name": "tags", "type": {"type": "array", "items": "string"}},
               {"name": "plan", "type": {"type": "enum", "name": "Plan", "symbols": ["FREE", "PRO"]}},
               {"name": "email", "type": ["null", "string"], "default": None},
               {"name": "country", "type": "string", "default": "NL"},
               {"name": "phone", "type": "string"}]})  # new field, no default


def test_avro_serializer_round_trip_and_evolution(reg):
    sr = client(reg)
    topic = "users"
    users = [{"name": f"u{i}", "age": 20 + i, "tags": ["a", str(i)], "plan": "PRO" if i % 2 else "FREE",
              "email": None if i % 3 else f"u{i}@example.com"} for i in range(50)]
    ser = AvroSerializer(sr, USER_V1)
    got = produce_and_consume(reg, topic, ser, AvroDeserializer(sr), users)
    assert got == users

    # the serializer registered the schema under the topic's value subject
    latest = sr.get_latest_version(f"{topic}-value")
    assert latest.version == 1
    v1_id = latest.schema_id
    assert json.loads(sr.get_schema(v1_id).schema_str) == json.loads(USER_V1)

    # a backward-compatible change is accepted as version 2 with a new id
    ser2 = AvroSerializer(sr, USER_V2)
    newer = [{"name": "n", "age": 2**40, "tags": [], "plan": "FREE", "email": None, "country": "BE"}]
    got2 = produce_and_consume(reg, "users2", ser2, AvroDeserializer(sr), newer)
    assert got2 == newer
    assert sr.register_schema(f"{topic}-value", Schema(USER_V2, "AVRO")) != v1_id
    assert sr.get_versions(f"{topic}-value") == [1, 2]

    # old records read with the new schema as reader: defaults filled in, int widened to long
    reader = AvroDeserializer(sr, schema_str=USER_V2)
    again = produce_and_consume(reg, topic, AvroSerializer(sr, USER_V1), reader, users[:3])
    assert [u["country"] for u in again] == ["NL"] * 3
    assert [u["age"] for u in again] == [20, 21, 22]

    # an incompatible change is refused with 409 and the reason
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema(f"{topic}-value", Schema(USER_BAD, "AVRO"))
    assert err.value.http_status_code == 409
    assert err.value.error_code == 409
    assert "phone" in err.value.error_message
    assert sr.get_versions(f"{topic}-value") == [1, 2]


ORDER_JSON_V1 = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"id": {"type": "integer"}, "item": {"type": "string"},
                   "qty": {"type": "integer", "minimum": 1}},
    "required": ["id", "item"], "additionalProperties": False})
ORDER_JSON_V2 = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"id": {"type": "integer"}, "item": {"type": "string"},
                   "qty": {"type": "integer", "minimum": 1}, "note": {"type": "string"}},
    "required": ["id", "item"], "additionalProperties": False})
ORDER_JSON_BAD = json.dumps({
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"id": {"type": "string"}, "item": {"type": "string"}},
    "required": ["id", "item"], "additionalProperties": False})


def test_json_schema_serializer_round_trip_and_evolution(reg):
    sr = client(reg)
    orders = [{"id": i, "item": f"item-{i}", "qty": i + 1} for i in range(40)]
    got = produce_and_consume(reg, "orders", JSONSerializer(ORDER_JSON_V1, sr),
                              JSONDeserializer(ORDER_JSON_V1, schema_registry_client=sr), orders)
    assert got == orders
    # the serializer validates against the schema: a bad record is refused client-side
    with pytest.raises(Exception):
        JSONSerializer(ORDER_JSON_V1, sr)({"id": "x", "item": 1},
                                          SerializationContext("orders", MessageField.VALUE))
    # closed content model: adding an optional property is backward compatible
    v2 = sr.register_schema("orders-value", Schema(ORDER_JSON_V2, "JSON"))
    assert sr.get_latest_version("orders-value").schema_id == v2
    assert sr.get_schema(v2).schema_type == "JSON"
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema("orders-value", Schema(ORDER_JSON_BAD, "JSON"))
    assert err.value.http_status_code == 409


def protobuf_message_class():
    """A message type built at run time (no protoc): Order importing google.protobuf.Timestamp
    (a well-known type the serializer does not register) and shop/money.proto (registered
    as a reference under its own subject)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
    pool = descriptor_pool.DescriptorPool()
    ts_file = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_file)
    pool.Add(ts_file)
    T = descriptor_pb2.FieldDescriptorProto
    money = descriptor_pb2.FileDescriptorProto(name="shop/money.proto", package="shop.common", syntax="proto3")
    mm = money.message_type.add(name="Money")
    mm.field.add(name="currency", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    mm.field.add(name="units", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    pool.Add(money)
    f = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3")
    f.dependency.append("google/protobuf/timestamp.proto")
    f.dependency.append("shop/money.proto")
    m = f.message_type.add(name="Order")
    m.field.add(name="id", number=1, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    m.field.add(name="item", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    m.field.add(name="tags", number=3, type=T.TYPE_STRING, label=T.LABEL_REPEATED)
    m.field.add(name="created", number=4, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                type_name=".google.protobuf.Timestamp")
    m.field.add(name="price", number=5, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                type_name=".shop.common.Money")
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def test_protobuf_serializer_round_trip_with_import(reg):
    sr = client(reg)
    Order = protobuf_message_class()
    ser = ProtobufSerializer(Order, sr, {"use.deprecated.format": False})
    de = ProtobufDeserializer(Order, {"use.deprecated.format": False})
    orders = []
    for i in range(30):
        o = Order(id=i, item=f"item-{i}", tags=["x"] * (i % 3))
        o.created.seconds = 1_700_000_000 + i
        o.price.currency = "EUR"
        o.price.units = i * 100
        orders.append(o)
    got = produce_and_consume(reg, "pb-orders", ser, de, orders)
    assert got == orders
    latest = sr.get_latest_version("pb-orders-value")
    assert latest.schema.schema_type == "PROTOBUF"
    text = latest.schema.schema_str
    assert "message Order" in text and "google.protobuf.Timestamp" in text
    # the imported file is a reference to the subject the serializer registered it under
    assert [(r.name, r.subject, r.version) for r in latest.schema.references] == [
        ("shop/money.proto", "shop/money.proto", 1)]
    status, refs = rest(reg, "GET", "/subjects/shop%2Fmoney.proto/versions/1/referencedby")
    assert (status, refs) == (200, [latest.schema_id])
    # the descriptor the serializer registered comes back in the serialized format too
    status, body = rest(reg, "GET", f"/schemas/ids/{latest.schema_id}?format=serialized")
    assert status == 200 and body["schemaType"] == "PROTOBUF"
    from google.protobuf import descriptor_pb2
    import base64
    fd = descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(body["schema"]))
    assert [f.name for f in fd.message_type[0].field] == ["id", "item", "tags", "created", "price"]


def test_protobuf_evolution_rules(reg):
    sr = client(reg)
    v1 = 'syntax = "proto3";\npackage shop;\nmessage Item { int64 id = 1; string name = 2; }\n'
    v2 = 'syntax = "proto3";\npackage shop;\nmessage Item { int64 id = 1; string name = 2; double price = 3; }\n'
    bad = 'syntax = "proto3";\npackage shop;\nmessage Item { string id = 1; string name = 2; double price = 3; }\n'
    id1 = sr.register_schema("items-value", Schema(v1, "PROTOBUF"))
    id2 = sr.register_schema("items-value", Schema(v2, "PROTOBUF"))
    assert id1 != id2
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema("items-value", Schema(bad, "PROTOBUF"))
    assert err.value.http_status_code == 409
    with pytest.raises(SchemaRegistryError) as err:
        sr.register_schema("items-value", Schema("syntax = \"proto3\"; message {", "PROTOBUF"))
    assert err.value.error_code == 42201


def test_ids_are_global_and_registration_idempotent(reg):
    sr = client(reg)
    s = Schema(json.dumps({"type": "record", "name": "K", "fields": [{"name": "a", "type": "int"}]}), "AVRO")
    a = sr.register_schema("one-value", s)
    # the same schema, written differently, under another subject: the same id
    s2 = Schema(json.dumps({"type": "record", "name": "K", "fields": [{"name": "a", "type": "int"}]}, indent=4), "AVRO")
    b = sr.register_schema("two-value", s2)
    assert a == b
    status, body = rest(reg, "POST", "/subjects/one-value/versions", {"schema": s2.schema_str})
    assert status == 200 and body["id"] == a
    assert sr.get_versions("one-value") == [1]
    status, subjects = rest(reg, "GET", f"/schemas/ids/{a}/subjects")
    assert sorted(subjects) == ["one-value", "two-value"]
    status, versions = rest(reg, "GET", f"/schemas/ids/{a}/versions")
    assert sorted(versions, key=lambda v: v["subject"]) == [
        {"subject": "one-value", "version": 1}, {"subject": "two-value", "version": 1}]
    found = sr.lookup_schema("two-value", s)
    assert found.schema_id == a and found.version == 1
    status, body = rest(reg, "GET", "/schemas/types")
    assert sorted(body) == ["AVRO", "JSON", "PROTOBUF"]
    # listings page with offset and limit
    assert rest(reg, "GET", "/subjects?offset=1&limit=1")[1] == ["two-value"]
    status, listed = rest(reg, "GET", "/schemas?limit=1")
    assert status == 200 and [(s["subject"], s["id"]) for s in listed] == [("one-value", a)]
    assert rest(reg, "GET", "/subjects?limit=x")[0] == 400


def test_rest_errors_have_confluent_codes(reg):
    ok = {"schema": json.dumps({"type": "string"})}
    assert rest(reg, "POST", "/subjects/s/versions", ok)[0] == 200
    cases = [
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/s/versions/7", None, 404, 40402),
        ("GET", "/subjects/s/versions/zero", None, 422, 42202),
        ("GET", "/subjects/s/versions/0", None, 422, 42202),
        ("GET", "/schemas/ids/999", None, 404, 40403),
        ("POST", "/subjects/s", {"schema": json.dumps({"type": "int"})}, 404, 40403),
        ("POST", "/subjects/nope", ok, 404, 40401),
        ("POST", "/subjects/s/versions", {"schema": "{\"type\": \"recrod\"}"}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": "not json"}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": "{}", "schemaType": "XML"}, 422, 42201),
        ("POST", "/subjects/s/versions", {"schema": "{\"type\": 5}", "schemaType": "JSON"}, 422, 42201),
        ("PUT", "/config", {"compatibility": "SIDEWAYS"}, 422, 42203),
        ("PUT", "/mode", {"mode": "WRITEONLY"}, 422, 42204),
        ("GET", "/config/s", None, 404, 40408),
        ("GET", "/mode/s", None, 404, 40409),
        ("DELETE", "/subjects/s?permanent=true", None, 404, 40405),
        ("DELETE", "/subjects/s/versions/1?permanent=true", None, 404, 40407),
    ]
    for method, path, body, status, code in cases:
        got_status, got = rest(reg, method, path, body)
        assert (got_status, got.get("error_code")) == (status, code), (method, path, got)
        assert got["message"]
    # malformed and oversized bodies get a JSON error, never a 500
    for raw in [b"{", b"[1,2", b"\xff\xfe", b"null", b"42"]:
        status, got = rest(reg, "POST", "/subjects/s/versions", raw=raw)
        assert status in (400, 422) and got["error_code"] in (400, 422, 42201), (raw, got)
    status, got = rest(reg, "POST", "/subjects/s/versions",
                       raw=json.dumps({"schema": "x" * (17 * 1024 * 1024)}).encode())
    assert status == 413 and got["error_code"] == 413
    status, got = rest(reg, "GET", "/no/such/route")
    assert status == 404
    # the registry still serves after all that
    assert rest(reg, "GET", "/subjects")[1] == ["s"]
    # and counts what it answered, by route template, on kappa's /metrics
    metrics = reg.http("/metrics")
    assert 'kappa_registry_requests_total{method="GET",route="/subjects/{subject}/versions",status="404"} 1' in metrics
    assert 'kappa_registry_requests_total{method="POST",route="/subjects/{subject}/versions",status="413"} 1' in metrics
    assert "kappa_registry_subjects 1" in metrics and "kappa_registry_schemas 1" in metrics
    assert metrics.rstrip().endswith("# EOF")


def test_delete_soft_then_permanent(reg):
    sr = client(reg)
    s1 = Schema(json.dumps({"type": "record", "name": "D", "fields": [{"name": "a", "type": "int"}]}), "AVRO")
    s2 = Schema(json.dumps({"type": "record", "name": "D", "fields": [
        {"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]}), "AVRO")
    id1 = sr.register_schema("d", s1)
    sr.register_schema("d", s2)
    assert rest(reg, "DELETE", "/subjects/d/versions/1") == (200, 1)
    assert rest(reg, "GET", "/subjects/d/versions") == (200, [2])
    assert rest(reg, "GET", "/subjects/d/versions?deleted=true") == (200, [1, 2])
    assert rest(reg, "GET", "/subjects/d/versions/1")[1]["error_code"] == 40402
    assert rest(reg, "GET", "/subjects/d/versions/1?deleted=true")[1]["id"] == id1
    assert rest(reg, "DELETE", "/subjects/d/versions/1")[1]["error_code"] == 40406
    assert rest(reg, "DELETE", "/subjects/d/versions/1?permanent=true") == (200, 1)
    assert rest(reg, "GET", "/subjects/d/versions?deleted=true") == (200, [2])
    assert rest(reg, "DELETE", "/subjects/d") == (200, [2])
    assert rest(reg, "GET", "/subjects")[1] == []
    assert rest(reg, "GET", "/subjects?deleted=true")[1] == ["d"]
    assert rest(reg, "DELETE", "/subjects/d")[1]["error_code"] == 40404
    assert rest(reg, "DELETE", "/subjects/d?permanent=true") == (200, [2])
    assert rest(reg, "GET", "/subjects?deleted=true")[1] == []
    assert rest(reg, "GET", f"/schemas/ids/{id1}")[1]["error_code"] == 40403


def test_config_levels_and_transitive_checks(reg):
    def rec(*fields):
        return json.dumps({"type": "record", "name": "T", "fields": [
            {"name": n, "type": "string", **({"default": d} if d is not None else {})} for n, d in fields]})
    assert rest(reg, "GET", "/config") == (200, {"compatibilityLevel": "BACKWARD"})
    assert rest(reg, "PUT", "/config/t", {"compatibility": "BACKWARD_TRANSITIVE"}) == (
        200, {"compatibility": "BACKWARD_TRANSITIVE"})
    assert rest(reg, "GET", "/config/t")[1] == {"compatibilityLevel": "BACKWARD_TRANSITIVE"}
    assert rest(reg, "GET", "/config/u?defaultToGlobal=true")[1] == {"compatibilityLevel": "BACKWARD"}
    # v1 {a}; v2 {} (dropping a field is backward compatible);
    # v3 {a without default}: compatible with v2 only if a has a default... it has none: refused
    # against v2 already. v3' {a with default}: compatible with v2, and with v1 too.
    assert rest(reg, "POST", "/subjects/t/versions", {"schema": rec(("a", None))})[0] == 200
    assert rest(reg, "POST", "/subjects/t/versions", {"schema": rec(("b", "x"))})[0] == 200
    # {b, c} with c lacking a default cannot read v2's data ({b}) nor v1's: 409
    status, body = rest(reg, "POST", "/subjects/t/versions", {"schema": rec(("b", "x"), ("c", None))})
    assert status == 409
    # {a} without default: reads v1 data but not v2's. BACKWARD alone (latest only) would
    # refuse it too; with transitive the check names both versions' verdicts correctly.
    status, body = rest(reg, "POST", "/compatibility/subjects/t/versions?verbose=true",
                        {"schema": rec(("a", None))})
    assert status == 200 and body["is_compatible"] is False
    assert any("version 2" in m for m in body["messages"])
    assert not any("version 1" in m for m in body["messages"])
    status, body = rest(reg, "POST", "/compatibility/subjects/t/versions/1?verbose=true",
                        {"schema": rec(("a", None))})
    assert body == {"is_compatible": True, "messages": []}
    # FORWARD: the old schema must read the new one's data
    assert rest(reg, "PUT", "/config/f", {"compatibility": "FORWARD"})[0] == 200
    assert rest(reg, "POST", "/subjects/f/versions", {"schema": rec(("a", None))})[0] == 200
    assert rest(reg, "POST", "/subjects/f/versions", {"schema": rec(("a", None), ("b", None))})[0] == 200
    assert rest(reg, "POST", "/subjects/f/versions", {"schema": rec(("b", None))})[0] == 409
    assert rest(reg, "DELETE", "/config/t") == (200, {"compatibilityLevel": "BACKWARD_TRANSITIVE"})
    assert rest(reg, "GET", "/config/t")[1]["error_code"] == 40408
    # NONE accepts anything of the same type
    assert rest(reg, "PUT", "/config", {"compatibility": "NONE"})[0] == 200
    assert rest(reg, "POST", "/subjects/t/versions", {"schema": json.dumps({"type": "int"})})[0] == 200


def test_references_and_referencedby(reg):
    address = json.dumps({"type": "record", "name": "Address", "namespace": "geo",
                          "fields": [{"name": "city", "type": "string"}]})
    person = json.dumps({"type": "record", "name": "Person",
                         "fields": [{"name": "home", "type": "geo.Address"}]})
    status, a = rest(reg, "POST", "/subjects/address/versions", {"schema": address})
    assert status == 200
    ref = [{"name": "geo.Address", "subject": "address", "version": 1}]
    status, body = rest(reg, "POST", "/subjects/person/versions", {"schema": person})
    assert status == 422 and body["error_code"] == 42201  # geo.Address unknown without the reference
    status, p = rest(reg, "POST", "/subjects/person/versions", {"schema": person, "references": ref})
    assert status == 200
    status, body = rest(reg, "GET", f"/schemas/ids/{p['id']}")
    assert body["references"] == ref
    assert rest(reg, "GET", "/subjects/address/versions/1/referencedby") == (200, [p["id"]])
    status, body = rest(reg, "DELETE", "/subjects/address")
    assert status == 422 and body["error_code"] == 42206
    # a reference to a version that does not exist
    status, body = rest(reg, "POST", "/subjects/p2/versions", {
        "schema": person, "references": [{"name": "geo.Address", "subject": "address", "version": 9}]})
    assert status == 422 and body["error_code"] == 42201


def test_import_mode_keeps_ids_and_readonly_refuses(reg):
    assert rest(reg, "PUT", "/mode", {"mode": "IMPORT"}) == (200, {"mode": "IMPORT"})
    schema = json.dumps({"type": "record", "name": "Imp", "fields": [{"name": "x", "type": "int"}]})
    status, body = rest(reg, "POST", "/subjects/imp/versions", {"schema": schema, "id": 1000, "version": 5})
    assert status == 200 and body["id"] == 1000
    assert rest(reg, "GET", "/subjects/imp/versions") == (200, [5])
    other = json.dumps({"type": "string"})
    status, body = rest(reg, "POST", "/subjects/imp2/versions", {"schema": other, "id": 1000, "version": 1})
    assert status == 422 and body["error_code"] == 42205
    assert rest(reg, "PUT", "/mode", {"mode": "READWRITE"})[0] == 200
    # ids continue after the imported ones
    status, body = rest(reg, "POST", "/subjects/next/versions", {"schema": other})
    assert body["id"] == 1001
    # IMPORT on a non-empty registry needs force
    assert rest(reg, "PUT", "/mode", {"mode": "IMPORT"})[1]["error_code"] == 42205
    assert rest(reg, "PUT", "/mode/next", {"mode": "READONLY"})[0] == 200
    status, body = rest(reg, "POST", "/subjects/next/versions", {"schema": json.dumps({"type": "int"})})
    assert status == 422 and body["error_code"] == 42205
    assert rest(reg, "GET", "/mode/next") == (200, {"mode": "READONLY"})
    assert rest(reg, "DELETE", "/mode/next") == (200, {"mode": "READONLY"})
    assert rest(reg, "GET", "/mode/next?defaultToGlobal=true") == (200, {"mode": "READWRITE"})


def test_schemas_survive_restart_and_kill(kappa_factory):
    k = kappa_factory().start().wait_registry()
    sr = client(k)
    ids = {}
    for i in range(5):
        s = Schema(json.dumps({"type": "record", "name": f"R{i}", "fields": [{"name": "f", "type": "int"}]}), "AVRO")
        ids[f"subj{i}"] = sr.register_schema(f"subj{i}", s)
    assert rest(k, "PUT", "/config/subj0", {"compatibility": "FULL"})[0] == 200
    assert rest(k, "DELETE", "/subjects/subj4")[0] == 200
    k.kill()
    k2 = kappa_factory().start().wait_registry()
    for subject, id_ in list(ids.items())[:4]:
        status, body = rest(k2, "GET", f"/subjects/{subject}/versions/latest")
        assert status == 200 and body["id"] == id_
    assert rest(k2, "GET", "/subjects")[1] == ["subj0", "subj1", "subj2", "subj3"]
    assert rest(k2, "GET", "/config/subj0")[1] == {"compatibilityLevel": "FULL"}
    # a new schema gets a new id, never one already handed out
    status, body = rest(k2, "POST", "/subjects/new/versions", {"schema": json.dumps({"type": "long"})})
    assert body["id"] == max(ids.values()) + 1
    k2.stop()
    k3 = kappa_factory().start().wait_registry()
    # stored as Confluent stores it: Avro's own rendering, a bare primitive name
    assert rest(k3, "GET", f"/schemas/ids/{body['id']}")[1]["schema"] == '"long"'


def kappa_cli(k, *args):
    return subprocess.run([KAPPA_BIN, "schema", *args, "--registry-url", k.registry_url],
                          capture_output=True, text=True, timeout=60)


def test_cli_register_check_get(reg, tmp_path):
    v1 = tmp_path / "user.avsc"
    v1.write_text(USER_V1)
    r = kappa_cli(reg, "register", "--subject", "cli-value", str(v1))
    assert r.returncode == 0, r.stderr
    assert "version 1" in r.stdout
    good = tmp_path / "user2.avsc"
    good.write_text(USER_V2)
    r = kappa_cli(reg, "check", "--subject", "cli-value", str(good))
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.avsc"
    bad.write_text(USER_BAD)
    r = kappa_cli(reg, "check", "--subject", "cli-value", str(bad))
    assert r.returncode == 1
    assert "phone" in r.stderr
    r = kappa_cli(reg, "config", "--subject", "cli-value", "--set", "none")
    assert r.returncode == 0 and r.stdout.strip() == "NONE"
    r = kappa_cli(reg, "check", "--subject", "cli-value", str(bad))
    assert r.returncode == 0
    r = kappa_cli(reg, "list")
    assert r.stdout.split() == ["cli-value"]
    r = kappa_cli(reg, "get", "--subject", "cli-value")
    assert json.loads(r.stdout)["version"] == 1
    broken = tmp_path / "broken.avsc"
    broken.write_text("{\"type\": \"record\"")
    r = kappa_cli(reg, "check", "--subject", "cli-value", str(broken))
    assert r.returncode == 1 and "not valid JSON" in r.stderr


def test_equivalent_schemas_and_normalize(reg):
    a = '{"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}'
    b = '{"required": ["x"], "properties": {"x": {"type": "integer"}}, "type": "object"}'
    # the same schema written in another key order is found as the version already there
    status, first = rest(reg, "POST", "/subjects/plain/versions", {"schema": a, "schemaType": "JSON"})
    assert status == 200
    status, second = rest(reg, "POST", "/subjects/plain/versions", {"schema": b, "schemaType": "JSON"})
    assert status == 200 and second["id"] == first["id"] and second["version"] == 1
    status, found = rest(reg, "POST", "/subjects/plain", {"schema": b, "schemaType": "JSON"})
    assert status == 200 and found["version"] == 1
    # stored as written without normalize; in the normalized form (sorted keys) with it
    assert rest(reg, "GET", "/subjects/plain/versions/1")[1]["schema"].startswith('{"type"')
    status, n1 = rest(reg, "POST", "/subjects/norm/versions?normalize=true", {"schema": b, "schemaType": "JSON"})
    assert status == 200
    stored = rest(reg, "GET", "/subjects/norm/versions/1")[1]["schema"]
    assert stored.startswith('{"properties"') and json.loads(stored) == json.loads(a)
    # normalize as a subject setting applies without the query parameter
    assert rest(reg, "PUT", "/config/norm2", {"normalize": True}) == (200, {"normalize": True})
    assert rest(reg, "GET", "/config/norm2")[1] == {"normalize": True}
    status, n2 = rest(reg, "POST", "/subjects/norm2/versions", {"schema": a, "schemaType": "JSON"})
    assert n2["id"] == n1["id"]


def test_read_only_registry_still_answers_registered_schemas(reg):
    sr = client(reg)
    s = Schema(json.dumps({"type": "record", "name": "Ro", "fields": [{"name": "a", "type": "int"}]}), "AVRO")
    sid = sr.register_schema("ro-value", s)
    assert rest(reg, "PUT", "/mode", {"mode": "READONLY"})[0] == 200
    # a producer that auto-registers an existing schema gets its id (Confluent's behaviour)
    assert client(reg).register_schema("ro-value", s) == sid
    other = Schema(json.dumps({"type": "record", "name": "Ro2", "fields": []}), "AVRO")
    with pytest.raises(SchemaRegistryError) as err:
        client(reg).register_schema("ro-value", other)
    assert err.value.error_code == 42205
    # Java's client checks compatibility on a path with a trailing slash
    status, body = rest(reg, "POST", "/compatibility/subjects/ro-value/versions/", {"schema": s.schema_str})
    assert (status, body) == (200, {"is_compatible": True})
    # rules and metadata are refused, not dropped
    status, body = rest(reg, "PUT", "/mode", {"mode": "READWRITE"})
    status, body = rest(reg, "POST", "/subjects/rules/versions", {
        "schema": s.schema_str, "ruleSet": {"domainRules": [{"name": "r", "kind": "CONDITION", "type": "CEL"}]}})
    assert status == 422 and body["error_code"] == 42210
    assert rest(reg, "DELETE", "/mode")[0] == 405


def test_registry_topic_from_config_and_refused_when_partitioned(kappa_factory, tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic
    k = kappa_factory().start().wait_registry()
    admin = AdminClient({"bootstrap.servers": k.bootstrap})
    for f in admin.create_topics([NewTopic("schemas-3p", 3, 1)]).values():
        f.result(30)
    k.stop()
    config = tmp_path / "kappa.toml"
    config.write_text('[registry]\ntopic = "schemas-3p"\n')
    bad = kappa_factory(["--config", str(config)])
    with pytest.raises(RuntimeError) as err:
        bad.start()
        bad.proc.wait(60)
        raise RuntimeError(bad.log())
    assert "schemas-3p has 3 partitions; it must have exactly 1" in str(err.value)
    # a topic of its own from the TOML file, created compacted on first start
    config.write_text('[registry]\ntopic = "team-schemas"\n')
    ok = kappa_factory(["--config", str(config)]).start().wait_registry()
    assert rest(ok, "POST", "/subjects/x/versions", {"schema": '"int"'})[0] == 200
    admin = AdminClient({"bootstrap.servers": ok.bootstrap})
    from confluent_kafka.admin import ConfigResource
    res = ConfigResource(ConfigResource.Type.TOPIC, "team-schemas")
    configs = list(admin.describe_configs([res]).values())[0].result(30)
    assert configs["cleanup.policy"].value == "compact"
