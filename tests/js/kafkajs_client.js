// Drives kafkajs against a Kafka bootstrap address given as argv[2]; prints one JSON summary.
// Used by tests/e2e/test_kafkajs.py, which checks the records with another client.
const { Kafka, CompressionTypes, logLevel, ConfigResourceTypes } = require('kafkajs');

async function main() {
  const kafka = new Kafka({ clientId: 'kappa-test', brokers: [process.argv[2]], logLevel: logLevel.ERROR });
  const admin = kafka.admin();
  await admin.connect();
  const created = await admin.createTopics({
    topics: [{ topic: 'js', numPartitions: 6, configEntries: [{ name: 'retention.ms', value: '7200000' }] }],
  });
  const producer = kafka.producer();
  await producer.connect();
  const base = 1_690_000_000_000;
  const n = 10000;
  for (const [compression, start] of [[CompressionTypes.None, 0], [CompressionTypes.GZIP, n / 2]]) {
    for (let b = start; b < start + n / 2; b += 500) {
      const messages = [];
      for (let i = b; i < b + 500; i++) {
        messages.push({ key: `k${i % 41}`, value: `v${i}`, headers: { i: String(i) }, timestamp: String(base + i) });
      }
      await producer.send({ topic: 'js', acks: -1, compression, messages });
    }
  }
  await producer.disconnect();
  const offsets = await admin.fetchTopicOffsets('js');
  const byTime = await admin.fetchTopicOffsetsByTimestamp('js', base + n / 2);
  const configs = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: 'js', configNames: ['retention.ms'] }],
  });
  const metadata = await admin.fetchTopicMetadata({ topics: ['js'] });
  // kafkajs answers false when the broker says TOPIC_ALREADY_EXISTS.
  const createdAgain = await admin.createTopics({ topics: [{ topic: 'js', numPartitions: 1 }] });
  await admin.createTopics({ topics: [{ topic: 'js-tmp', numPartitions: 1 }] });
  await admin.deleteTopics({ topics: ['js-tmp'] });
  const topicsAfterDelete = await admin.listTopics();
  await admin.disconnect();
  console.log(JSON.stringify({
    created,
    offsets,
    byTime,
    retention: configs.resources[0].configEntries.find((c) => c.configName === 'retention.ms').configValue,
    partitions: metadata.topics[0].partitions.length,
    createdAgain,
    topicsAfterDelete,
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
