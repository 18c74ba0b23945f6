"""Python client of Meridian, a strongly consistent key-value store.

>>> from meridian_client import MeridianClient
>>> with MeridianClient(["127.0.0.1:7001", "127.0.0.1:7002"]) as c:
...     c.put("greeting", "hello").record.version
1

The protobuf/gRPC stubs are generated from proto/ on first use (see ``stubs``).
"""

from .client import MeridianClient, new_request_id, normalize_endpoint
from .errors import LEADER_METADATA, MeridianError, decode_error, error_info

__all__ = [
    "LEADER_METADATA",
    "MeridianClient",
    "MeridianError",
    "decode_error",
    "error_info",
    "new_request_id",
    "normalize_endpoint",
]
