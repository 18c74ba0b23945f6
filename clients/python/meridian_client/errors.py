"""Meridian errors as Python exceptions, decoded from the gRPC status and its details.

Every Meridian error carries standard error details (``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer) with a ``google.rpc.ErrorInfo``: a stable
``reason`` (NOT_LEADER, INVALID_ARGUMENT, NOT_INITIALIZED, UNAVAILABLE,
DEADLINE_EXCEEDED, CLOCK_OFFSET, ...), the domain ``meridian`` and metadata such as
``leader_id`` / ``leader_addr``. UNAVAILABLE also carries the leader's address in the
``x-meridian-leader`` trailer. :func:`decode_error` turns a ``grpc.RpcError`` into a
:class:`MeridianError` with all of that as attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

#: Trailer carrying the leader's API address (host:port) on UNAVAILABLE.
LEADER_METADATA = "x-meridian-leader"
#: The ErrorInfo domain of every Meridian error.
ERROR_DOMAIN = "meridian"
#: Codes after which a call may be retried (writes only with the same request_id).
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(eq=False)
class MeridianError(Exception):
    """A failed Meridian call: the gRPC code and message plus the decoded details."""

    code: grpc.StatusCode
    message: str
    #: ErrorInfo.reason (None when the status carried no details, e.g. connection refused).
    reason: str | None = None
    #: ErrorInfo.domain ("meridian" for errors produced by a node).
    domain: str | None = None
    #: ErrorInfo.metadata (leader_id, leader_addr, ...).
    metadata: dict[str, str] = field(default_factory=dict)
    #: Leader API address hinted by the node (trailer or ErrorInfo), if any.
    leader_addr: str | None = None
    #: Endpoint the failing attempt went to.
    endpoint: str | None = None
    #: Attempts made before giving up (1 for a non-retryable error).
    attempts: int = 1

    def __post_init__(self) -> None:
        super().__init__(str(self))

    @property
    def retryable(self) -> bool:
        """Whether retrying may succeed (UNAVAILABLE, DEADLINE_EXCEEDED)."""
        return self.code in RETRYABLE_CODES

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message}"]
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.leader_addr:
            parts.append(f"leader={self.leader_addr}")
        return " ".join(parts)


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo in the status details of a failed call, if any."""
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]
    except (ValueError, AttributeError):
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def _trailer(err: grpc.RpcError, key: str) -> str | None:
    trailing = getattr(err, "trailing_metadata", None)
    for k, v in (trailing() if callable(trailing) else None) or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


def decode_error(err: grpc.RpcError, endpoint: str | None = None) -> MeridianError:
    """Decode code, message, ErrorInfo and leader hint of a failed call."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    message = err.details() if callable(getattr(err, "details", None)) else str(err)
    info = error_info(err)
    metadata = dict(info.metadata) if info else {}
    leader = _trailer(err, LEADER_METADATA) or metadata.get("leader_addr") or None
    return MeridianError(
        code=code,
        message=message or "",
        reason=info.reason if info else None,
        domain=info.domain if info else None,
        metadata=metadata,
        leader_addr=leader,
        endpoint=endpoint,
    )
