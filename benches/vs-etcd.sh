#!/usr/bin/env bash
# Meridian vs etcd, side by side on this machine (issue #10).
#
# Installs Debian's etcd 3.4 if it is missing, builds meridian and meridian-bench in
# release mode, then runs `meridian-bench compare`: a 3-member etcd and a 3-node
# Meridian on free 127.0.0.1 ports (fsync on for both), the workload matrix interleaved
# point by point, RSS and data-dir size after loading N keys, the scaling curves (value
# size, key count, node count), both clusters stopped by pid. Results go to
# bench-results/: results.md (table + targets), results.json, SVG plots.
#
# Usage: benches/vs-etcd.sh [--quick] [extra meridian-bench compare flags...]
#   --quick   a few minutes: put/get-lin/get-ser/cas at 1 and 64 clients, 2 s points,
#             100k keys loaded, 3 nodes only
# Examples:
#   benches/vs-etcd.sh                                   # the full matrix (long)
#   benches/vs-etcd.sh --quick
#   benches/vs-etcd.sh --duration 5s --load-keys 1000000 --nodes 3,5
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1; then
  echo "etcd not found: installing Debian's etcd-server and etcd-client" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root for apt-get (or install etcd-server yourself)" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

args=()
if [ "${1:-}" = "--quick" ]; then
  shift
  args=(--workloads put,get-lin,get-ser,cas --concurrency 1,64 --duration 2s --warmup 1s
        --value-sizes 100 --load-keys 100000 --nodes 3)
fi

# MERIDIAN_BENCH_NO_BUILD=1 skips the build (any commit reruns the node's build script,
# which embeds the git commit, so a fresh build can take minutes on a busy machine).
if [ -z "${MERIDIAN_BENCH_NO_BUILD:-}" ]; then
  cargo build --release -p meridian -p meridian-bench
fi
echo "load average before: $(cat /proc/loadavg)" >&2
exec target/release/meridian-bench compare --etcd-bin "$(command -v etcd)" \
  --meridian-bin target/release/meridian --out bench-results "${args[@]}" "$@"
