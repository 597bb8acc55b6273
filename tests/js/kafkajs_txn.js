// kafkajs transactions against the bootstrap address given as argv[2]: a transactional producer
// commits a transaction (with offsets for group js-txn-group), aborts one (with other offsets),
// commits another; a read_committed kafkajs consumer then reads topic js-txn. Topics js-txn
// (3 partitions) and js-txn-in (1) exist already. Prints one JSON line:
// {"seen": [values read], "groupOffset": "js-txn-group's offset of js-txn-in/0"}.
// Used by tests/e2e/test_transactions.py, which checks the topic with librdkafka too.
const { Kafka, logLevel } = require('kafkajs');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const messages = (prefix) => [...Array(9).keys()].map((i) => ({ partition: i % 3, value: `${prefix}-${i}` }));
const offsets = (offset) => ({
  consumerGroupId: 'js-txn-group',
  topics: [{ topic: 'js-txn-in', partitions: [{ partition: 0, offset }] }],
});

async function main() {
  const kafka = new Kafka({ clientId: 'kappa-txn-test', brokers: [process.argv[2]], logLevel: logLevel.ERROR });
  const producer = kafka.producer({ idempotent: true, transactionalId: 'js-txn-app', maxInFlightRequests: 1 });
  await producer.connect();

  const first = await producer.transaction();
  await first.send({ topic: 'js-txn', acks: -1, messages: messages('c1') });
  await first.sendOffsets(offsets('7'));
  await first.commit();

  const aborted = await producer.transaction();
  await aborted.send({ topic: 'js-txn', acks: -1, messages: messages('a') });
  await aborted.sendOffsets(offsets('9'));
  await aborted.abort();

  // Committed records after the aborted ones on every partition: once the consumer has these,
  // it has gone past the aborted ones.
  const second = await producer.transaction();
  await second.send({ topic: 'js-txn', acks: -1, messages: messages('c2') });
  await second.commit();
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'js-txn-reader', readUncommitted: false, sessionTimeout: 6000, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topic: 'js-txn', fromBeginning: true });
  const seen = [];
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value.toString()); } });
  const last = messages('c2').map((m) => m.value);
  const deadline = Date.now() + 60000;
  while (Date.now() < deadline && !last.every((v) => seen.includes(v))) {
    await sleep(200);
  }
  await consumer.disconnect();

  // kafkajs's OffsetFetch does not ask for stable offsets: wait (bounded) for the commit's.
  const admin = kafka.admin();
  await admin.connect();
  let groupOffset = null;
  const until = Date.now() + 10000;
  for (;;) {
    const [topic] = await admin.fetchOffsets({ groupId: 'js-txn-group', topics: ['js-txn-in'] });
    groupOffset = topic.partitions.find((p) => p.partition === 0).offset;
    if (groupOffset === '7' || Date.now() > until) break;
    await sleep(200);
  }
  await admin.disconnect();
  console.log(JSON.stringify({ seen, groupOffset }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
