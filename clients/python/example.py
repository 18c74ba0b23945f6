#!/usr/bin/env python3
"""Meridian from Python: put, get, compare-and-swap (with a conflict), a transaction,
and a bad request whose error details are printed.

Usage:
    python3 clients/python/example.py --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
    MERIDIAN_ENDPOINTS=127.0.0.1:7001 python3 clients/python/example.py

With ``--pause-for-kill`` the script stops after the first phase, prints
``READY_FOR_KILL`` and waits for a line on stdin (the integration test kills the leader
then), and in the second phase writes and reads through the surviving nodes: the client
fails over and follows leader hints by itself.

Every result is printed as one line ``<STEP> key=value ...`` so a test can check it.
Exit code 0 when every step behaved as expected, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meridian_client import MeridianClient, MeridianError  # noqa: E402


def show(step: str, **fields) -> None:
    print(step, " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)


def check(cond: bool, what: str) -> None:
    if not cond:
        show("FAILED", what=repr(what))
        sys.exit(1)


def text(b: bytes) -> str:
    return b.decode(errors="replace")


def basics(c: MeridianClient, prefix: str) -> None:
    key = f"{prefix}greeting"
    put = c.put(key, "hello")
    check(put.succeeded and put.record.version == 1, f"put creates version 1: {put}")
    show("PUT", key=key, version=put.record.version, revision=put.record.revision)

    got = c.get(key)
    check(got.found and got.record.value == b"hello", f"get reads the put: {got}")
    show("GET", key=key, value=repr(text(got.record.value)), version=got.record.version,
         served_by=got.header.node_id)

    cas = c.cas(key, 1, "hello, world")
    check(cas.succeeded and cas.record.version == 2, f"cas at version 1 succeeds: {cas}")
    show("CAS_OK", key=key, version=cas.record.version)

    stale = c.cas(key, 1, "stale")
    check(not stale.succeeded, f"cas at a stale version must not succeed: {stale}")
    check(stale.current.version == 2, f"the conflict returns the current record: {stale}")
    show("CAS_CONFLICT", key=key, expected=1, current_version=stale.current.version,
         current_value=repr(text(stale.current.value)))


def transaction(c: MeridianClient, prefix: str) -> None:
    alice, bob = f"{prefix}account/alice", f"{prefix}account/bob"
    c.put(alice, "100")
    c.put(bob, "50")
    t = c.txn(
        compares=[c.compare(alice, "version", "=", 1)],
        success=[c.op_put(alice, "70"), c.op_put(bob, "80")],
        failure=[c.op_get(alice)],
    )
    check(t.succeeded and len(t.results) == 2, f"txn takes the success branch: {t}")
    show("TXN", succeeded=t.succeeded, alice=text(t.results[0].record.value),
         bob=text(t.results[1].record.value), revision=t.header.revision)
    again = c.txn(
        compares=[c.compare(alice, "version", "=", 1)],
        success=[c.op_put(alice, "0")],
        failure=[c.op_get(alice)],
    )
    check(not again.succeeded and again.results[0].record.value == b"70",
          f"a txn whose compare fails runs the failure branch: {again}")
    show("TXN_ELSE", succeeded=again.succeeded, alice=text(again.results[0].record.value))


def bad_request(c: MeridianClient) -> None:
    try:
        c.put("", "no key")
    except MeridianError as e:
        check(e.code.name == "INVALID_ARGUMENT", f"empty key is INVALID_ARGUMENT: {e}")
        check(e.reason == "INVALID_ARGUMENT" and e.domain == "meridian", f"ErrorInfo: {e!r}")
        show("ERROR_DETAILS", code=e.code.name, reason=e.reason, domain=e.domain,
             metadata=e.metadata, attempts=e.attempts, message=repr(e.message))
        return
    check(False, "a put with an empty key must fail")


def after_failover(c: MeridianClient, prefix: str) -> None:
    key = f"{prefix}after-failover"
    put = c.put(key, "still here")
    check(put.succeeded, f"put after the leader was killed: {put}")
    got = c.get(key)
    check(got.found and got.record.value == b"still here", f"get after failover: {got}")
    cas = c.cas(key, put.record.version, "updated")
    check(cas.succeeded, f"cas after failover: {cas}")
    before = c.get(f"{prefix}greeting")
    check(before.record.value == b"hello, world", f"phase-1 data survived: {before}")
    show("FAILOVER_OK", key=key, version=cas.record.version, served_by=got.header.node_id,
         term=got.header.term, endpoint=c.current_endpoint, **c.stats)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", default=os.environ.get("MERIDIAN_ENDPOINTS",
                    "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"),
                    help="comma-separated host:port list (env MERIDIAN_ENDPOINTS)")
    ap.add_argument("--prefix", default="example/", help="prefix of every key written")
    ap.add_argument("--pause-for-kill", action="store_true",
                    help="print READY_FOR_KILL after phase 1, wait for a stdin line, then "
                         "run phase 2 (failover)")
    args = ap.parse_args()
    with MeridianClient(args.endpoints, seed=7) as c:
        show("ENDPOINTS", list=",".join(c.endpoints))
        basics(c, args.prefix)
        transaction(c, args.prefix)
        bad_request(c)
        if args.pause_for_kill:
            show("READY_FOR_KILL", endpoint=c.current_endpoint)
            if not sys.stdin.readline():
                show("FAILED", what="stdin closed before the go-ahead")
                return 1
            after_failover(c, args.prefix)
    show("DONE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
