// @kafkajs/confluent-schema-registry (npm) against Kappa's schema registry, with kafkajs
// producing to and consuming from Kappa topics. argv: bootstrap registryUrl.
// Registers Avro, JSON Schema and Protobuf schemas, encodes records, produces them, reads them
// back and decodes them with a second SchemaRegistry instance (empty cache, so every schema is
// fetched by id from the registry), evolves the Avro schema (compatible v2, refused v3) and
// looks ids up by schema. Prints one JSON summary on the last line; used by
// tests/e2e/test_registry_js.py, which asserts on it.
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const AVRO_TOPIC = 'js-sr-avro';
const JSON_TOPIC = 'js-sr-json';
const PROTO_TOPIC = 'js-sr-proto';
const subject = (topic) => `${topic}-value`;

const userFields = [
  { name: 'name', type: 'string' },
  { name: 'age', type: 'int' },
  { name: 'score', type: 'double' },
  { name: 'tags', type: { type: 'array', items: 'string' } },
  { name: 'plan', type: { type: 'enum', name: 'Plan', symbols: ['FREE', 'PRO'] } },
  { name: 'email', type: ['null', 'string'], default: null },
  {
    name: 'address',
    type: { type: 'record', name: 'Address', fields: [{ name: 'city', type: 'string' }, { name: 'zip', type: 'string' }] },
  },
];
const avroSchema = (fields) => JSON.stringify({ type: 'record', name: 'User', namespace: 'com.example.js', fields });
const USER_V1 = avroSchema(userFields);
// v2: a new field with a default, backward compatible
const USER_V2 = avroSchema([...userFields, { name: 'country', type: 'string', default: 'NL' }]);
// v3: on top of v2 a new field without a default, not backward compatible
const USER_V3 = avroSchema([
  ...userFields,
  { name: 'country', type: 'string', default: 'NL' },
  { name: 'phone', type: 'string' },
]);

const ORDER_JSON = JSON.stringify({
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Order',
  type: 'object',
  properties: {
    id: { type: 'integer' },
    item: { type: 'string' },
    qty: { type: 'integer', minimum: 1 },
    price: { type: 'number' },
    gift: { type: 'boolean' },
    lines: { type: 'array', items: { type: 'object', properties: { sku: { type: 'string' } }, required: ['sku'] } },
  },
  required: ['id', 'item'],
  additionalProperties: false,
});

const ORDER_PROTO = `syntax = "proto3";
package kappa.js;

message Order {
  int64 id = 1;
  string item = 2;
  repeated string tags = 3;
  double price = 4;
  Status status = 5;
  Money total = 6;
  enum Status {
    NEW = 0;
    PAID = 1;
    SHIPPED = 2;
  }
}

message Money {
  string currency = 1;
  int64 units = 2;
}
`;

const users = Array.from({ length: 20 }, (_, i) => ({
  name: `u${i}`,
  age: 20 + i,
  score: i + 0.5,
  tags: ['a', String(i)],
  plan: i % 2 ? 'PRO' : 'FREE',
  email: i % 3 ? null : `u${i}@example.com`,
  address: { city: `c${i % 4}`, zip: String(1000 + i) },
}));
const usersV2 = [
  { ...users[0], name: 'v2-a', country: 'BE' },
  { ...users[1], name: 'v2-b', country: 'DE' },
];
const orders = Array.from({ length: 15 }, (_, i) => ({
  id: i,
  item: `item-${i}`,
  qty: i + 1,
  price: 9.99 + i,
  gift: i % 2 === 0,
  lines: [{ sku: `s${i}` }],
}));
// every field set to a non-default value; ints as numbers, enums by number (what verify wants)
const protoOrders = Array.from({ length: 15 }, (_, i) => ({
  id: 1_000_000_000_000 + i,
  item: `p-${i}`,
  tags: ['x', `t${i}`],
  price: 1.25 + i,
  status: 1 + (i % 2),
  total: { currency: i % 2 ? 'EUR' : 'USD', units: 100 + i },
}));

const plain = (v) => JSON.parse(JSON.stringify(v));

// The error of a registry call that is expected to fail, as plain data.
async function failure(promise) {
  try {
    const value = await promise;
    return { failed: false, value };
  } catch (e) {
    return { failed: true, name: e.name, status: e.status ?? null, message: String(e.message) };
  }
}

async function main() {
  const [bootstrap, registryUrl] = process.argv.slice(2);
  const registry = new SchemaRegistry({ host: registryUrl, clientId: 'kappa-test' });
  const out = {};

  // --- register (each subject's first registration also PUTs its compatibility level) ---
  const avroV1 = await registry.register({ type: SchemaType.AVRO, schema: USER_V1 }, { subject: subject(AVRO_TOPIC) });
  const jsonV1 = await registry.register({ type: SchemaType.JSON, schema: ORDER_JSON }, { subject: subject(JSON_TOPIC) });
  const protoV1 = await registry.register(
    { type: SchemaType.PROTOBUF, schema: ORDER_PROTO },
    { subject: subject(PROTO_TOPIC) },
  );
  out.ids = { avroV1: avroV1.id, json: jsonV1.id, proto: protoV1.id };
  // registering the very same schema again answers the same id
  out.avroV1Again = (await registry.register({ type: SchemaType.AVRO, schema: USER_V1 }, { subject: subject(AVRO_TOPIC) })).id;

  // --- evolution ---
  const avroV2 = await registry.register({ type: SchemaType.AVRO, schema: USER_V2 }, { subject: subject(AVRO_TOPIC) });
  out.ids.avroV2 = avroV2.id;
  out.latestAfterV2 = await registry.getLatestSchemaId(subject(AVRO_TOPIC));
  out.v3 = await failure(registry.register({ type: SchemaType.AVRO, schema: USER_V3 }, { subject: subject(AVRO_TOPIC) }));
  out.latestAfterV3 = await registry.getLatestSchemaId(subject(AVRO_TOPIC));
  out.versionIds = {
    1: await registry.getRegistryId(subject(AVRO_TOPIC), 1),
    2: await registry.getRegistryId(subject(AVRO_TOPIC), 2),
  };

  // --- lookup by schema ---
  out.lookup = {
    avroV1: await registry.getRegistryIdBySchema(subject(AVRO_TOPIC), { type: SchemaType.AVRO, schema: USER_V1 }),
    avroV2: await registry.getRegistryIdBySchema(subject(AVRO_TOPIC), { type: SchemaType.AVRO, schema: USER_V2 }),
    json: await registry.getRegistryIdBySchema(subject(JSON_TOPIC), { type: SchemaType.JSON, schema: ORDER_JSON }),
    proto: await registry.getRegistryIdBySchema(subject(PROTO_TOPIC), { type: SchemaType.PROTOBUF, schema: ORDER_PROTO }),
  };
  out.lookupRefused = await failure(
    registry.getRegistryIdBySchema(subject(AVRO_TOPIC), { type: SchemaType.AVRO, schema: USER_V3 }),
  );

  // --- encode and produce ---
  const kafka = new Kafka({ clientId: 'kappa-sr-test', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    waitForLeaders: true,
    topics: [AVRO_TOPIC, JSON_TOPIC, PROTO_TOPIC].map((topic) => ({ topic, numPartitions: 1 })),
  });
  await admin.disconnect();

  const producer = kafka.producer();
  await producer.connect();
  const send = async (topic, encoded) => producer.send({
    topic,
    acks: -1,
    messages: encoded.map((value, i) => ({ key: String(i), value })),
  });
  const avroEncoded = [
    ...(await Promise.all(users.map((u) => registry.encode(avroV1.id, u)))),
    ...(await Promise.all(usersV2.map((u) => registry.encode(avroV2.id, u)))),
  ];
  await send(AVRO_TOPIC, avroEncoded);
  await send(JSON_TOPIC, await Promise.all(orders.map((o) => registry.encode(jsonV1.id, o))));
  await send(PROTO_TOPIC, await Promise.all(protoOrders.map((o) => registry.encode(protoV1.id, o))));
  await producer.disconnect();

  // --- consume ---
  const expected = { [AVRO_TOPIC]: avroEncoded.length, [JSON_TOPIC]: orders.length, [PROTO_TOPIC]: protoOrders.length };
  const total = Object.values(expected).reduce((a, b) => a + b, 0);
  const raw = { [AVRO_TOPIC]: [], [JSON_TOPIC]: [], [PROTO_TOPIC]: [] };
  let count = 0;
  let done;
  const allIn = new Promise((resolve) => { done = resolve; });
  const consumer = kafka.consumer({ groupId: 'g-js-sr', sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: Object.keys(expected), fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ topic, message }) => {
      raw[topic].push(message.value);
      count += 1;
      if (count >= total) done();
    },
  });
  const timeout = new Promise((_, reject) => setTimeout(
    () => reject(new Error(`only ${count} of ${total} records came back`)), 60000,
  ).unref());
  await Promise.race([allIn, timeout]);
  await consumer.disconnect();

  // --- decode with a fresh client: its cache is empty, so each id is fetched from the registry ---
  const reader = new SchemaRegistry({ host: registryUrl, clientId: 'kappa-test-reader' });
  out.magicAndIds = Object.fromEntries(Object.entries(raw).map(([t, bufs]) => [
    t, [...new Set(bufs.map((b) => `${b[0]}:${b.readInt32BE(1)}`))],
  ]));
  const avroDecoded = [];
  for (const b of raw[AVRO_TOPIC]) avroDecoded.push(plain(await reader.decode(b)));
  const jsonDecoded = [];
  for (const b of raw[JSON_TOPIC]) jsonDecoded.push(await reader.decode(b));
  const protoDecoded = [];
  for (const b of raw[PROTO_TOPIC]) {
    const m = await reader.decode(b);
    protoDecoded.push(m.$type.toObject(m, { longs: Number, defaults: true }));
  }
  // v1 records read with v2 as the reader schema: the new field takes its default
  const withReader = [];
  for (const b of raw[AVRO_TOPIC].slice(0, 3)) {
    withReader.push(plain(await reader.decode(b, { [SchemaType.AVRO]: { readerSchema: USER_V2 } })));
  }
  // the schema as fetched by id
  const fetchedV2 = await reader.getSchema(avroV2.id);

  out.avro = { sent: plain([...users, ...usersV2]), decoded: avroDecoded };
  out.json = { sent: orders, decoded: jsonDecoded };
  out.proto = { sent: protoOrders, decoded: protoDecoded };
  out.readerV2 = { sent: plain(users.slice(0, 3)), decoded: withReader };
  out.fetchedV2Fields = fetchedV2.fields.map((f) => f.name);
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
