#!/usr/bin/env python3
"""Parses alert messages with the official CloudEvents Python SDK, as a
subscriber would: its auto-detecting Kafka binding (`from_kafka_event`, which
reads any `ce_` header as binary mode) and the v1 API's `from_structured`.
Input: JSONL of {"headers": {name: value}, "key": str, "value": str}, as
tests/kafka_service.rs dumps them. Exits non-zero on the first alert the SDK
rejects or reads differently from the JSON body."""
import json
import sys

from cloudevents.core.bindings import kafka as core_kafka
from cloudevents.v1.kafka import KafkaMessage as V1Message
from cloudevents.v1.kafka import from_structured as v1_from_structured


def main(path):
    n = 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            m = json.loads(line)
            headers = {k: v.encode() for k, v in m["headers"].items()}
            key = m["key"].encode() if m["key"] is not None else None
            value = m["value"].encode()
            body = json.loads(value)
            ev = core_kafka.from_kafka_event(core_kafka.KafkaMessage(headers=headers, key=key, value=value))
            attrs = ev.get_attributes()
            for a in ("id", "source", "type", "specversion", "subject"):
                if str(attrs.get(a)) != str(body[a]):
                    sys.exit(f"from_kafka_event: {a} = {attrs.get(a)!r}, body says {body[a]!r}")
            if ev.get_data() != body["data"]:
                sys.exit(f"from_kafka_event: data differs for {body['id']}")
            v1 = v1_from_structured(V1Message(headers=headers, key=key, value=value))
            if v1["id"] != body["id"] or v1["type"] != body["type"] or v1["source"] != body["source"]:
                sys.exit(f"v1 from_structured: attributes differ for {body['id']}")
            if v1.get_data() != body["data"]:
                sys.exit(f"v1 from_structured: data differs for {body['id']}")
            # (v1 from_structured always copies the `content-type` header, the
            # envelope's type in structured mode, into `datacontenttype`.)
            n += 1
    print(f"parsed {n} alerts")


if __name__ == "__main__":
    main(sys.argv[1])
