// Three kafkajs consumers in one group read a topic; a fourth joins and leaves meanwhile.
// Offsets are committed after each batch, before the next rebalance can happen.
// Prints "partition,offset,value" per record; argv: bootstrap topic expectedCount.
const { Kafka, logLevel } = require('kafkajs');

async function main() {
  const [bootstrap, topic, expected] = process.argv.slice(2);
  const kafka = new Kafka({ clientId: 'kappa-group-test', brokers: [bootstrap], logLevel: logLevel.ERROR });
  const seen = [];
  const members = [];
  const start = async () => {
    const consumer = kafka.consumer({ groupId: 'g-js', sessionTimeout: 6000, heartbeatInterval: 500 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
        for (const m of batch.messages) {
          seen.push(`${batch.partition},${m.offset},${m.value.toString()}`);
          resolveOffset(m.offset);
        }
        const last = batch.messages[batch.messages.length - 1];
        if (last) {
          await consumer.commitOffsets([{ topic, partition: batch.partition, offset: String(Number(last.offset) + 1) }]);
        }
        await heartbeat();
      },
    });
    members.push(consumer);
    return consumer;
  };
  await start();
  await start();
  const leaver = await start();
  await new Promise((r) => setTimeout(r, 1500));
  await leaver.disconnect();
  const deadline = Date.now() + 90000;
  while (seen.length < Number(expected) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
  }
  await new Promise((r) => setTimeout(r, 1000));
  for (const m of members) {
    if (m !== leaver) await m.disconnect();
  }
  console.log(seen.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
