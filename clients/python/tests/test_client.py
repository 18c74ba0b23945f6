"""Unit tests of MeridianClient against in-process fake nodes (no cluster needed).

The fakes answer exactly like Meridian nodes do: UNAVAILABLE with a NOT_LEADER
ErrorInfo and the ``x-meridian-leader`` trailer, INVALID_ARGUMENT with an ErrorInfo,
and so on, so redirect, retry, request-id reuse and error decoding are checked
deterministically. Run: ``python3 -m unittest discover -s clients/python/tests``.
"""

from __future__ import annotations

import collections
import sys
import unittest
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meridian_client import LEADER_METADATA, MeridianClient, MeridianError, stubs  # noqa: E402

pb = stubs.load()


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
              grpc.Status):
    pass


def meridian_status(code: grpc.StatusCode, message: str, reason: str, leader: str | None = None):
    """A status shaped like src/server/status.rs builds it."""
    meta = {"leader_id": "9", "leader_addr": leader} if leader else {}
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="meridian", metadata=meta))
    proto = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[detail])
    trailers = tuple(rpc_status.to_status(proto).trailing_metadata)
    if leader:
        trailers += ((LEADER_METADATA, leader),)
    return _Status(code, message, trailers)


class FakeNode(pb.kv_pb2_grpc.KvServicer):
    """Answers Put from a script of statuses (None = success), then succeeds."""

    def __init__(self, script=()):
        self.script = list(script)
        self.request_ids: list[str] = []

    def Put(self, request, context):
        self.request_ids.append(request.request_id)
        if self.script:
            status = self.script.pop(0)
            if status is not None:
                context.abort_with_status(status)
        return pb.kv_pb2.PutResponse(
            succeeded=True, record=pb.kv_pb2.Record(key=request.key, value=request.value, version=1)
        )


class Cluster:
    """Fake nodes on 127.0.0.1 ephemeral ports."""

    def __init__(self):
        self.servers = []

    def serve(self, node: FakeNode) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb.kv_pb2_grpc.add_KvServicer_to_server(node, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.servers.append(server)
        return f"127.0.0.1:{port}"

    def stop(self):
        for s in self.servers:
            s.stop(grace=None)


def closed_port() -> str:
    """An address nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.cluster = Cluster()
        self.sleeps: list[float] = []

    def tearDown(self):
        self.cluster.stop()

    def client(self, endpoints, **kw) -> MeridianClient:
        c = MeridianClient(endpoints, seed=1, sleep=self.sleeps.append, **kw)
        self.addCleanup(c.close)
        return c

    def test_leader_hint_is_followed_at_once_without_backoff(self):
        leader = FakeNode()
        leader_addr = self.cluster.serve(leader)
        follower = FakeNode([meridian_status(
            grpc.StatusCode.UNAVAILABLE, "not the leader", "NOT_LEADER", leader_addr)])
        follower_addr = self.cluster.serve(follower)
        c = self.client([follower_addr])
        resp = c.put("k", "v")
        self.assertTrue(resp.succeeded)
        self.assertEqual(c.stats["redirects"], 1)
        self.assertEqual(self.sleeps, [], "a fresh hint is followed without backoff")
        self.assertEqual(c.current_endpoint, leader_addr, "the client sticks to the leader")
        self.assertEqual(c.endpoints, [follower_addr, leader_addr], "hinted leader was added")
        self.assertEqual(follower.request_ids, leader.request_ids, "same request_id on redirect")

    def test_write_retries_reuse_one_request_id(self):
        unavailable = meridian_status(grpc.StatusCode.UNAVAILABLE, "no quorum", "UNAVAILABLE")
        timeout = meridian_status(grpc.StatusCode.DEADLINE_EXCEEDED, "timed out", "DEADLINE_EXCEEDED")
        node = FakeNode([unavailable, timeout])
        c = self.client([self.cluster.serve(node)])
        self.assertTrue(c.put("k", "v").succeeded)
        self.assertEqual(len(node.request_ids), 3)
        self.assertEqual(len(set(node.request_ids)), 1, node.request_ids)
        self.assertTrue(node.request_ids[0].startswith("py-"))
        self.assertEqual(len(self.sleeps), 2, "each retry without a hint backs off")
        self.assertTrue(all(0 <= s <= c.backoff_cap_s for s in self.sleeps), self.sleeps)

    def test_given_request_id_is_sent_unchanged(self):
        node = FakeNode()
        c = self.client([self.cluster.serve(node)])
        c.put("k", "v", request_id="mine-1")
        self.assertEqual(node.request_ids, ["mine-1"])

    def test_invalid_argument_is_not_retried_and_its_details_are_decoded(self):
        bad = meridian_status(grpc.StatusCode.INVALID_ARGUMENT, "put: key must not be empty",
                              "INVALID_ARGUMENT")
        node = FakeNode([bad])
        c = self.client([self.cluster.serve(node)])
        with self.assertRaises(MeridianError) as caught:
            c.put("", "v")
        e = caught.exception
        self.assertEqual(e.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual((e.reason, e.domain), ("INVALID_ARGUMENT", "meridian"))
        self.assertEqual(e.message, "put: key must not be empty")
        self.assertEqual(e.attempts, 1)
        self.assertFalse(e.retryable)
        self.assertEqual(len(node.request_ids), 1)

    def test_dead_endpoint_fails_over_to_the_next(self):
        node = FakeNode()
        live = self.cluster.serve(node)
        c = self.client([closed_port(), live])
        self.assertTrue(c.put("k", "v").succeeded)
        self.assertEqual(c.current_endpoint, live)
        self.assertEqual(len(self.sleeps), 1)

    def test_stale_hint_to_a_failed_endpoint_backs_off_and_attempts_are_bounded(self):
        dead = closed_port()
        hint = meridian_status(grpc.StatusCode.UNAVAILABLE, "not the leader", "NOT_LEADER", dead)
        follower = FakeNode([hint] * 10)
        c = self.client([self.cluster.serve(follower)], max_attempts=4)
        with self.assertRaises(MeridianError) as caught:
            c.put("k", "v")
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(caught.exception.attempts, 4)
        self.assertEqual(c.stats["redirects"], 1, "the dead hint is followed only once")
        self.assertGreaterEqual(len(self.sleeps), 2)

    def test_error_without_details_still_decodes(self):
        c = self.client([closed_port()], max_attempts=2)
        with self.assertRaises(MeridianError) as caught:
            c.put("k", "v")
        e = caught.exception
        self.assertEqual(e.code, grpc.StatusCode.UNAVAILABLE)
        self.assertIsNone(e.reason)
        self.assertEqual(e.attempts, 2)


if __name__ == "__main__":
    unittest.main()
