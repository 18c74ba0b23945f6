#!/bin/sh
# protoc for build scripts that read $PROTOC (etcd-client's, in meridian-bench): the
# binary shipped inside the protoc-bin-vendored crate, which the node's own build
# already depends on, so nothing is downloaded and no system protoc is needed.
# .cargo/config.toml points PROTOC here.
case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64) arch=aarch_64 ;;
  *) echo "bench/protoc.sh: no vendored protoc for $(uname -m)" >&2; exit 1 ;;
esac
for p in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/protoc-bin-vendored-linux-"$arch"-3.*/bin/protoc; do
  [ -x "$p" ] && exec "$p" "$@"
done
echo "bench/protoc.sh: protoc-bin-vendored-linux-$arch not found in the cargo registry (run cargo fetch)" >&2
exit 1
