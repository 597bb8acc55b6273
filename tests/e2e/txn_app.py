"""A consume-transform-produce application with Kafka transactions, written as a user writes
one with confluent-kafka (librdkafka). Shared by tests/e2e/test_transactions.py, which runs it
in the test process, and tests/e2e/txn_crash_client.py, which runs it in a process of its own
while the broker is killed under it."""
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition


def consume_batch(consumer, max_records, timeout=1.0):
    """Up to `max_records` records (errors raised, end-of-partition events skipped)."""
    out = []
    for m in consumer.consume(num_messages=max_records, timeout=timeout):
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        out.append(m)
    return out


def committed_or_beginning(consumer, partitions, timeout=30):
    """The group's committed offset of each partition, OFFSET_BEGINNING where it has none."""
    return [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            for tp in consumer.committed(partitions, timeout=timeout)]


def rewind_to_committed(consumer, timeout=30):
    """After an abort: every assigned partition goes back to the group's committed offset, so
    the aborted transaction's input is processed again."""
    for tp in committed_or_beginning(consumer, consumer.assignment(), timeout):
        consumer.seek(tp)


def transact(producer, consumer, msgs, out_topic, transform, commit, on_event=lambda event: None,
             timeout=30):
    """One transaction: `transform(m)` -> (key, value, partition or None) of every consumed
    message goes to `out_topic`, and the consumer's positions become the group's offsets, both
    committed when `commit`, else aborted (and the consumer rewound). `on_event` is told
    "commit-call" / "abort-call" just before the call and "committed" / "aborted" once it has
    returned. Returns the positions sent with the transaction."""
    producer.begin_transaction()
    for m in msgs:
        key, value, partition = transform(m)
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(out_topic, key=key, value=value, **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), timeout)
    if commit:
        on_event("commit-call")
        producer.commit_transaction(timeout)
        on_event("committed")
    else:
        # the records reach the broker before the abort (librdkafka would otherwise drop the
        # ones still in its queue, and an abort would write nothing to abort)
        assert producer.flush(timeout) == 0, "the transaction's records were not delivered"
        on_event("abort-call")
        producer.abort_transaction(timeout)
        on_event("aborted")
        rewind_to_committed(consumer, timeout)
    return positions
