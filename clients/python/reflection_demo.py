#!/usr/bin/env python3
"""Call Meridian with gRPC server reflection only: no .proto files, no generated code.

It asks the node for its services (grpc.reflection.v1alpha, as served by every node),
builds the request and response classes of Kv.Put and Kv.Get from the descriptors the
node returns, and calls them. This is what generic tools (grpcurl, Postman, grpcui) do.

Usage:
    python3 clients/python/reflection_demo.py --endpoint 127.0.0.1:7001 [--key K --value V]

Prints ``SERVICE <name>`` per service, then ``PUT ...`` and ``GET ...`` with the
responses as JSON. Exit code 0 on success.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

#: Budget for the calls while a fresh cluster settles (UNAVAILABLE is retried), seconds.
CALL_BUDGET_S = 20.0
#: Deadline of one attempt, seconds.
ATTEMPT_TIMEOUT_S = 5.0


def unary(channel: grpc.Channel, pool, service: str, method: str):
    """A callable for ``service/method`` and its request class, from reflection alone."""
    m = pool.FindServiceByName(service).methods_by_name[method]
    request_cls = message_factory.GetMessageClass(m.input_type)
    response_cls = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return call, request_cls


def call_with_retry(call, request):
    deadline = time.monotonic() + CALL_BUDGET_S
    delay = 0.05
    while True:
        try:
            return call(request, timeout=ATTEMPT_TIMEOUT_S)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", required=True, help="host:port of any node")
    ap.add_argument("--key", default="reflection/greeting")
    ap.add_argument("--value", default="hello from reflection")
    args = ap.parse_args()

    with grpc.insecure_channel(args.endpoint) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(db.get_services())
        for s in services:
            print("SERVICE", s, flush=True)
        if "meridian.v1.Kv" not in services:
            print("FAILED meridian.v1.Kv is not listed", flush=True)
            return 1
        pool = descriptor_pool.DescriptorPool(db)

        put, PutRequest = unary(channel, pool, "meridian.v1.Kv", "Put")
        req = PutRequest()
        json_format.ParseDict(
            {
                "key": base64.b64encode(args.key.encode()).decode(),
                "value": base64.b64encode(args.value.encode()).decode(),
                "requestId": "reflection-demo-" + str(time.time_ns()),
            },
            req,
        )
        resp = call_with_retry(put, req)
        print("PUT", json.dumps(json_format.MessageToDict(resp), sort_keys=True), flush=True)

        get, GetRequest = unary(channel, pool, "meridian.v1.Kv", "Get")
        req = GetRequest(key=args.key.encode())
        resp = call_with_retry(get, req)
        print("GET", json.dumps(json_format.MessageToDict(resp), sort_keys=True), flush=True)
        if resp.record.value != args.value.encode():
            print("FAILED the value read back differs", flush=True)
            return 1
        print("GET_VALUE", resp.record.value.decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
