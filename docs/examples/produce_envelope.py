#!/usr/bin/env python3
"""Publish one domain event straight to its Kafka topic, as the ingress would.

Reads the event type's registry entry (topic, key field) and JSON Schema from the ingress
(GET /v1/schemas, GET /v1/schemas/<type>.v<N>, with the caller's token), validates the payload,
wraps it in the switchyard Envelope (protobuf, encoded by hand below: no protoc needed) and
produces it with acks=all and idempotence, keyed by the key field, with the `sy-event-type`
header. Prints the event id once the broker acknowledged the record.

    pip install confluent-kafka jsonschema
    python3 docs/examples/produce_envelope.py --ingress http://127.0.0.1:8080 \
        --token local-domains-token-change-me --bootstrap 127.0.0.1:9092 \
        --type tasks.task_assigned --version 1 \
        --json '{"task_id":"0190e6a4-0000-7000-8000-000000000001","user_id":"0190e6a4-0000-7000-8000-000000000002","assigned_at":"2026-01-01T10:00:00Z"}'
"""

import argparse
import hashlib
import json
import os
import sys
import time
import urllib.request
import uuid
from datetime import datetime, timezone

import jsonschema
from confluent_kafka import Producer

PRODUCER = "examples/python"


def get_json(url, token):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def uuid7():
    """UUIDv7: 48-bit Unix milliseconds, version 7, variant 10, random rest."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


# Protobuf wire format: just what the Envelope needs.
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_varint(number, n):
    return varint(number << 3 | 0) + varint(n)


def timestamp(dt):
    ns = int(dt.timestamp() * 1_000_000) * 1_000
    seconds, nanos = divmod(ns, 1_000_000_000)
    return field_varint(1, seconds) + (field_varint(2, nanos) if nanos else b"")


def envelope(event_id, event_type, version, occurred_at, idempotency_key, payload_json):
    """switchyard.v1.Envelope (proto/proto/switchyard/v1/envelope.proto), payload `json` = 30."""
    return b"".join(
        [
            field_bytes(1, event_id.encode()),
            field_bytes(2, event_type.encode()),
            field_varint(3, version),
            field_bytes(4, timestamp(occurred_at)),
            field_bytes(5, timestamp(datetime.now(timezone.utc))),
            field_bytes(6, PRODUCER.encode()),
            field_bytes(7, idempotency_key.encode()),
            field_bytes(30, payload_json),
        ]
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ingress", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--type", required=True)
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--json", required=True)
    p.add_argument("--topic", help="override the registry's topic (tests)")
    args = p.parse_args()

    schema_id = f"{args.type}.v{args.version}"
    entries = get_json(f"{args.ingress}/v1/schemas", args.token)["schemas"]
    entry = next((e for e in entries if e["id"] == schema_id), None)
    if entry is None:
        sys.exit(f"{schema_id} is not registered")
    schema = get_json(f"{args.ingress}/v1/schemas/{schema_id}", args.token)

    payload = json.loads(args.json)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        for e in errors:
            print(f"{'.'.join(map(str, e.path)) or '$'}: {e.message}", file=sys.stderr)
        sys.exit(2)

    key = str(payload[entry["key"]])
    # Canonical JSON (sorted keys, no spaces), so a retry of the same event keeps its key.
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    idempotency_key = hashlib.sha256(f"{schema_id}\n".encode() + body).hexdigest()[:32]
    event_id = uuid7()
    value = envelope(
        event_id, args.type, args.version, datetime.now(timezone.utc), idempotency_key, body
    )

    producer = Producer(
        {"bootstrap.servers": args.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    acked = {}

    def on_delivery(err, msg):
        acked["err"] = err

    producer.produce(
        args.topic or entry["topic"],
        key=key.encode(),
        value=value,
        headers=[("sy-event-type", args.type.encode())],
        on_delivery=on_delivery,
    )
    producer.flush(30)
    if acked.get("err") is not None or "err" not in acked:
        sys.exit(f"not acknowledged: {acked.get('err')}")
    print(json.dumps({"event_id": event_id, "idempotency_key": idempotency_key, "key": key}))


if __name__ == "__main__":
    main()
