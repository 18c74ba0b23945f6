"""MeridianClient: a small synchronous client for the Meridian KV API.

What it does for you, like the Rust client (src/client):

- **Endpoints.** One gRPC channel per endpoint, created lazily and reused by every call
  (HTTP/2 keepalive on). The client sticks to the endpoint that last answered.
- **Leader redirect.** Any node accepts any request (followers forward), but when a
  node cannot forward it answers UNAVAILABLE with the leader's address in the
  ``x-meridian-leader`` trailer and in the ErrorInfo metadata (``leader_addr``). The
  client goes there at once, without backing off, unless that endpoint already failed
  during this call (a stale hint): then it backs off first. A hinted address that is
  not in the endpoint list is added to it.
- **Retries.** UNAVAILABLE and DEADLINE_EXCEEDED are retried with exponential backoff
  and full jitter (``uniform(0, min(cap, base * 2**n))``), bounded by ``max_attempts``
  and by ``total_timeout_s`` (each attempt also has ``attempt_timeout_s``). Without a
  hint the next attempt goes to the next endpoint.
- **Exactly-once writes.** Put, Delete and Txn get a random 128-bit ``request_id``
  (unless you give one) that every attempt reuses, so a retry of a write that was
  already applied returns the original response (``duplicate = True``) instead of
  applying it twice.
- **Errors.** Anything else (and the last retryable error once the budget is spent)
  raises :class:`~meridian_client.errors.MeridianError` with the decoded ErrorInfo.

A version mismatch of a conditional write is *not* an error: the response has
``succeeded = False`` and ``current`` holds the current record.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Callable, Iterable, Sequence

import grpc

from . import stubs
from .errors import MeridianError, decode_error

#: Default deadline of one attempt, seconds.
DEFAULT_ATTEMPT_TIMEOUT_S = 5.0
#: Default budget of one call, retries and backoff included, seconds.
DEFAULT_TOTAL_TIMEOUT_S = 30.0
#: Default bound on the attempts of one call.
DEFAULT_MAX_ATTEMPTS = 12
#: First backoff ceiling, seconds (doubles per retry up to the cap).
DEFAULT_BACKOFF_BASE_S = 0.05
#: Largest backoff, seconds.
DEFAULT_BACKOFF_CAP_S = 1.0
#: gRPC channel options: keepalive pings, message size limit (16 MiB), and no built-in
#: transparent retries (this client decides what is safe to retry).
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.enable_retries", 0),
)

_COMPARE_OPS = {"=": 1, "==": 1, "!=": 2, ">": 3, "<": 4}


def _bytes(v: bytes | str) -> bytes:
    return v.encode() if isinstance(v, str) else bytes(v)


def normalize_endpoint(endpoint: str) -> str:
    """``http://host:port`` or ``host:port`` -> ``host:port``."""
    e = endpoint.strip()
    for scheme in ("http://", "https://"):
        if e.startswith(scheme):
            e = e[len(scheme):]
    return e.rstrip("/")


def new_request_id() -> str:
    """A random 128-bit request id (hex), unique for all practical purposes."""
    return "py-" + uuid.uuid4().hex


class MeridianClient:
    """A Meridian client over a list of node endpoints (``host:port``)."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        self._endpoints = [normalize_endpoint(e) for e in endpoints if e.strip()]
        if not self._endpoints:
            raise ValueError("at least one endpoint is required")
        if max_attempts < 1 or attempt_timeout_s <= 0 or total_timeout_s <= 0:
            raise ValueError("max_attempts, attempt_timeout_s and total_timeout_s must be > 0")
        self.attempt_timeout_s = attempt_timeout_s
        self.total_timeout_s = total_timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._current = 0
        self._channels: dict[str, grpc.Channel] = {}
        self.pb = stubs.load()
        #: Counters: attempts, retries (attempts after the first), redirects (hints followed).
        self.stats = {"calls": 0, "attempts": 0, "retries": 0, "redirects": 0}

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Close every channel."""
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> "MeridianClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def endpoints(self) -> list[str]:
        """The endpoint list (hinted leaders are appended)."""
        return list(self._endpoints)

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next call goes to first."""
        return self._endpoints[self._current]

    def channel(self, endpoint: str) -> grpc.Channel:
        """The cached channel to ``endpoint``."""
        endpoint = normalize_endpoint(endpoint)
        ch = self._channels.get(endpoint)
        if ch is None:
            ch = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
        return ch

    # -- the retry loop ----------------------------------------------------------------

    def _backoff(self, retry: int, deadline: float) -> None:
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** retry))
        delay = min(self._rng.uniform(0, ceiling), max(0.0, deadline - time.monotonic()))
        if delay > 0:
            self._sleep(delay)

    def _follow(self, endpoint: str) -> None:
        endpoint = normalize_endpoint(endpoint)
        if endpoint not in self._endpoints:
            self._endpoints.append(endpoint)
        self._current = self._endpoints.index(endpoint)

    def call(self, service: str, method: str, request, *, metadata=None):
        """Call ``service.method`` (stub attribute names, e.g. ``"Kv", "Put"``) with
        redirects and retries; return the response or raise MeridianError."""
        self.stats["calls"] += 1
        deadline = time.monotonic() + self.total_timeout_s
        failed: set[str] = set()
        last: MeridianError | None = None
        backoffs = 0
        attempt = 0
        while attempt < self.max_attempts:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt += 1
            self.stats["attempts"] += 1
            if attempt > 1:
                self.stats["retries"] += 1
            endpoint = self.current_endpoint
            stub_class = getattr(self.pb, f"{service.lower()}_pb2_grpc")
            stub = getattr(stub_class, f"{service}Stub")(self.channel(endpoint))
            try:
                return getattr(stub, method)(
                    request, timeout=min(self.attempt_timeout_s, remaining), metadata=metadata
                )
            except grpc.RpcError as rpc_error:
                last = decode_error(rpc_error, endpoint)
                last.attempts = attempt
                if not last.retryable:
                    raise last from None
                failed.add(endpoint)
                hint = last.leader_addr and normalize_endpoint(last.leader_addr)
                if hint and hint != endpoint and hint not in failed:
                    self.stats["redirects"] += 1
                    self._follow(hint)
                    continue
                if hint:
                    self._follow(hint)
                else:
                    self._current = (self._current + 1) % len(self._endpoints)
                self._backoff(backoffs, deadline)
                backoffs += 1
        if last is None:
            last = MeridianError(grpc.StatusCode.DEADLINE_EXCEEDED, "call budget exhausted")
        last.attempts = attempt
        raise last

    # -- Kv ------------------------------------------------------------------------------

    def get(self, key: bytes | str, *, consistency: str = "linearizable"):
        """Read one key; returns GetResponse (``found``, ``record``, ``header``)."""
        levels = {
            "linearizable": self.pb.kv_pb2.CONSISTENCY_LINEARIZABLE,
            "serializable": self.pb.kv_pb2.CONSISTENCY_SERIALIZABLE,
        }
        req = self.pb.kv_pb2.GetRequest(key=_bytes(key), consistency=levels[consistency])
        return self.call("Kv", "Get", req)

    def put(
        self,
        key: bytes | str,
        value: bytes | str,
        *,
        expected_version: int | None = None,
        request_id: str | None = None,
    ):
        """Write one key; ``expected_version``: None unconditional, 0 create only, N CAS.
        Returns PutResponse (``succeeded``, ``record``, ``current``, ``duplicate``)."""
        req = self.pb.kv_pb2.PutRequest(
            key=_bytes(key), value=_bytes(value), request_id=request_id or new_request_id()
        )
        if expected_version is not None:
            req.expected_version = expected_version
        return self.call("Kv", "Put", req, metadata=(("x-request-id", req.request_id),))

    def cas(self, key: bytes | str, expected_version: int, value: bytes | str, **kw):
        """Compare-and-swap: put only if the key is at ``expected_version`` (0: absent)."""
        return self.put(key, value, expected_version=expected_version, **kw)

    def delete(
        self,
        key: bytes | str,
        *,
        expected_version: int | None = None,
        request_id: str | None = None,
    ):
        """Delete one key (optionally only at a version); returns DeleteResponse."""
        req = self.pb.kv_pb2.DeleteRequest(key=_bytes(key), request_id=request_id or new_request_id())
        if expected_version is not None:
            req.expected_version = expected_version
        return self.call("Kv", "Delete", req, metadata=(("x-request-id", req.request_id),))

    def range(
        self,
        *,
        prefix: bytes | str = b"",
        start: bytes | str = b"",
        end: bytes | str = b"",
        page_limit: int = 0,
    ) -> list:
        """Every record with ``prefix`` (or in ``[start, end)``), following page tokens."""
        records, token = [], b""
        while True:
            req = self.pb.kv_pb2.RangeRequest(
                prefix=_bytes(prefix), start=_bytes(start), end=_bytes(end),
                limit=page_limit, page_token=token,
            )
            resp = self.call("Kv", "Range", req)
            records.extend(resp.records)
            if not resp.next_page_token:
                return records
            token = resp.next_page_token

    def txn(
        self,
        compares: Iterable = (),
        success: Iterable = (),
        failure: Iterable = (),
        *,
        request_id: str | None = None,
    ):
        """Atomic multi-key compare-and-swap (build the parts with :meth:`compare`,
        :meth:`op_put`, :meth:`op_delete`, :meth:`op_get`)."""
        req = self.pb.kv_pb2.TxnRequest(
            compares=list(compares), success=list(success), failure=list(failure),
            request_id=request_id or new_request_id(),
        )
        return self.call("Kv", "Txn", req, metadata=(("x-request-id", req.request_id),))

    def compare(self, key: bytes | str, target: str, op: str, operand):
        """A Txn compare: ``target`` is "version", "value" or "exists"; ``op`` one of
        = != > <; ``operand`` an int, bytes/str or bool accordingly."""
        kv = self.pb.kv_pb2
        c = kv.Compare(key=_bytes(key), op=_COMPARE_OPS[op])
        if target == "version":
            c.target, c.version = kv.COMPARE_TARGET_VERSION, int(operand)
        elif target == "value":
            c.target, c.value = kv.COMPARE_TARGET_VALUE, _bytes(operand)
        elif target == "exists":
            c.target, c.exists = kv.COMPARE_TARGET_EXISTS, bool(operand)
        else:
            raise ValueError(f"unknown compare target {target!r}")
        return c

    def op_put(self, key: bytes | str, value: bytes | str):
        """A Txn put op."""
        kv = self.pb.kv_pb2
        return kv.TxnOp(put=kv.TxnPut(key=_bytes(key), value=_bytes(value)))

    def op_delete(self, key: bytes | str):
        """A Txn delete op."""
        kv = self.pb.kv_pb2
        return kv.TxnOp(delete=kv.TxnDelete(key=_bytes(key)))

    def op_get(self, key: bytes | str):
        """A Txn get op."""
        kv = self.pb.kv_pb2
        return kv.TxnOp(get=kv.TxnGet(key=_bytes(key)))

    # -- Cluster ----------------------------------------------------------------------

    def status(self, endpoint: str | None = None):
        """Cluster.Status of one node (default: the current endpoint), no retries."""
        stub = self.pb.cluster_pb2_grpc.ClusterStub(self.channel(endpoint or self.current_endpoint))
        try:
            return stub.Status(self.pb.cluster_pb2.StatusRequest(), timeout=self.attempt_timeout_s)
        except grpc.RpcError as e:
            raise decode_error(e, endpoint) from None
