#!/usr/bin/env python3
"""Query (or wait for) a node's standard gRPC health status, like grpc_health_probe.

A node reports SERVING for "" and "meridian.v1.Kv" only when it is in touch with the
leader and has applied what it knows is committed; NOT_SERVING when it is partitioned
away, catching up, electing or not initialised. "meridian.v1.Cluster" is always
SERVING (status stays reachable).

Usage:
    python3 clients/python/health_check.py --endpoint 127.0.0.1:7001
    python3 clients/python/health_check.py --endpoint 127.0.0.1:7002 \
        --wait-for NOT_SERVING --timeout 20
    python3 clients/python/health_check.py --endpoint A --endpoint B --wait-for SERVING

Prints ``HEALTH endpoint=... service=... status=...`` per endpoint (status UNREACHABLE
when the call fails). Exit code 0 when every endpoint is SERVING (or, with --wait-for,
reported the wanted status before the timeout), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Deadline of one Check call, seconds.
CHECK_TIMEOUT_S = 2.0


def check(stub, service: str) -> str:
    try:
        resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CHECK_TIMEOUT_S)
    except grpc.RpcError as e:
        return "UNREACHABLE" if e.code() != grpc.StatusCode.NOT_FOUND else "SERVICE_UNKNOWN"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def probe(endpoint: str, args: argparse.Namespace, deadline: float) -> bool:
    """Check (or poll) one endpoint; print its line; whether it reached the status."""
    with grpc.insecure_channel(endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        polls = 0
        while True:
            status = check(stub, args.service)
            polls += 1
            done = status == (args.wait_for or "SERVING")
            if done or not args.wait_for or time.monotonic() >= deadline:
                print(f"HEALTH endpoint={endpoint} service={args.service!r} "
                      f"status={status} polls={polls}", flush=True)
                return done
            time.sleep(args.interval)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", required=True, action="append",
                    help="host:port of a node (repeatable)")
    ap.add_argument("--service", default="", help='service name ("" = the node)')
    ap.add_argument("--wait-for", choices=["SERVING", "NOT_SERVING"],
                    help="poll until this status is reported")
    ap.add_argument("--timeout", type=float, default=20.0, help="--wait-for deadline, s")
    ap.add_argument("--interval", type=float, default=0.05, help="poll interval, s")
    args = ap.parse_args()
    deadline = time.monotonic() + args.timeout
    results = [probe(e, args, deadline) for e in args.endpoint]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
