"""Reads every message of a Kafka topic from the beginning and prints `key<TAB>value` lines.

The export tests' consumer: confluent-kafka (PyPI, with its own current librdkafka), installed
by `cargo xtask setup` into .tools/venv. Debian's kcat links librdkafka 2.0.2, which cannot
parse the ApiVersions answer of current brokers (tansu 0.6 among them).

usage: kafka_consume.py BROKER TOPIC
"""

import sys

import confluent_kafka as ck


def main() -> int:
    broker, topic = sys.argv[1], sys.argv[2]
    consumer = ck.Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "serveflow-tests",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    meta = consumer.list_topics(topic, timeout=10)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        print(f"no topic {topic}", file=sys.stderr)
        return 1
    partitions = list(meta.topics[topic].partitions)
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in partitions])
    ended = set()
    while len(ended) < len(partitions):
        m = consumer.poll(10)
        if m is None:
            print("timed out before every partition's end", file=sys.stderr)
            return 1
        if m.error():
            if m.error().code() == ck.KafkaError._PARTITION_EOF:
                ended.add(m.partition())
                continue
            print(m.error(), file=sys.stderr)
            return 1
        key = (m.key() or b"").decode()
        print(f"{key}\t{m.value().decode()}")
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
