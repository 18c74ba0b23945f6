"""Generated protobuf/gRPC stubs of the Meridian API, built from proto/ on demand.

The stubs are never committed: they are generated with ``python -m grpc_tools.protoc``
(the grpcio-tools version pinned in requirements.txt) the first time they are needed,
or explicitly with ``generate.sh``. The output directory is content-addressed: its name
is a hash of the .proto files and the grpcio-tools version, so a changed proto or tool
gets fresh stubs, and concurrent processes never see a half-written directory (each
writes to a private temporary directory and renames it into place).

Environment:
- ``MERIDIAN_PROTO_DIR``: the proto root (default: ``<repo>/proto``).
- ``MERIDIAN_PY_BUILD_DIR``: where generated stubs go (default:
  ``clients/python/build/generated``).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

#: The public API protos (raft.proto is the internal node-to-node transport).
PROTO_FILES = ("meridian/v1/kv.proto", "meridian/v1/cluster.proto")

_PACKAGE_DIR = Path(__file__).resolve().parent
_loaded: types.SimpleNamespace | None = None


def proto_dir() -> Path:
    """The proto root: ``$MERIDIAN_PROTO_DIR`` or the repository's ``proto/``."""
    env = os.environ.get("MERIDIAN_PROTO_DIR")
    return Path(env) if env else _PACKAGE_DIR.parents[2] / "proto"


def build_dir() -> Path:
    """Parent of the generated directories: ``$MERIDIAN_PY_BUILD_DIR`` or ``build/generated``."""
    env = os.environ.get("MERIDIAN_PY_BUILD_DIR")
    return Path(env) if env else _PACKAGE_DIR.parent / "build" / "generated"


def _fingerprint(root: Path) -> str:
    import grpc_tools  # noqa: F401  (fails early with a clear ImportError)
    from grpc_tools import grpc_version

    h = hashlib.sha256(grpc_version.VERSION.encode())
    for name in PROTO_FILES:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()[:16]


def generate(out_parent: Path | None = None, root: Path | None = None) -> Path:
    """Generate the stubs (if not already there) and return the directory holding them.

    Runs ``python -m grpc_tools.protoc -I <root> --python_out --pyi_out
    --grpc_python_out`` into a temporary directory, then renames it into place.
    """
    root = root or proto_dir()
    missing = [n for n in PROTO_FILES if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"proto files {missing} not found under {root}; set MERIDIAN_PROTO_DIR"
        )
    out_parent = out_parent or build_dir()
    out = out_parent / _fingerprint(root)
    if (out / "meridian" / "v1" / "kv_pb2.py").is_file():
        return out
    out_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=out_parent))
    try:
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{root}",
            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
            *PROTO_FILES,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
        try:
            tmp.rename(out)
        except OSError:
            # Another process renamed its (identical) output first.
            if not (out / "meridian" / "v1" / "kv_pb2.py").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load() -> types.SimpleNamespace:
    """Import the stubs (generating them first if needed).

    Returns a namespace with ``kv_pb2``, ``kv_pb2_grpc``, ``cluster_pb2`` and
    ``cluster_pb2_grpc``.
    """
    global _loaded
    if _loaded is None:
        out = str(generate())
        if out not in sys.path:
            sys.path.insert(0, out)
        _loaded = types.SimpleNamespace(
            **{
                name: importlib.import_module(f"meridian.v1.{name}")
                for name in ("kv_pb2", "kv_pb2_grpc", "cluster_pb2", "cluster_pb2_grpc")
            }
        )
    return _loaded

