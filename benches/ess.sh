#!/usr/bin/env bash
# kess against Spark's own Java External Shuffle Service, side by side on this machine:
#   1. `kess bench-ess`: the same generated shuffle files (Spark's layout) fetched by the same
#      Rust Spark-protocol client from kess and from the Java service at several concurrencies,
#      plus the sendfile loopback limit and kess's gRPC path; throughput, latency, server CPU/GB
#      and peak RSS, with ratios.
#   2. A real shuffle-heavy PySpark job (local-cluster) against each service: reduce-stage time.
#
#   bash benches/ess.sh [kess bench-ess flags…]     e.g. --total-bytes 512MiB --concurrency 64
# Environment: KESS_BENCH_SKIP_JOB=1 skips part 2; KESS_BENCH_JOB_ROWS sets the job's size;
# KESS_LOCAL_TCP_CONGESTION=same gives kess's connections (all from this host), in both parts,
# and the sendfile reference the node's default congestion control instead of kess's default
# for local peers, reno (the Java service always keeps the node's default).
# KESS_BENCH_POD_NETWORK=1 (root) puts part 1's client in a network namespace wired to the host
# by a bridge of veths, as flannel wires pods (veth MTU KESS_BENCH_POD_MTU, 1500 by default); the
# servers listen on the host's end, 10.213.40.1, so every byte crosses the veth.
# Every figure is printed as one `bench …` line for scripts; the tables are for people.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
SETUP="$(bash tests/spark/setup.sh)"
PYTHON="$(sed -n 's/^PYTHON=//p' <<<"$SETUP")"
SPARK_HOME="$(sed -n 's/^SPARK_HOME=//p' <<<"$SETUP")"
cargo build --release --locked --quiet
KESS="$REPO/target/release/kess"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kess-ess-bench.XXXXXX")"
JAVA_PORT="$(free_port)"
POD_NETNS="kess-bench-$$"
cleanup() {
  bash tests/spark/java_ess.sh stop "$JAVA_PORT" >/dev/null 2>&1 || true
  if [ -n "${KESS_BENCH_POD_NETWORK:-}" ]; then
    ip link del "kbb$$" 2>/dev/null || true
    ip netns del "$POD_NETNS" 2>/dev/null || true
  fi
  [ -n "${KESS_PID:-}" ] && kill "$KESS_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "versions: $("$KESS" --version), pyspark $("$PYTHON" -c 'import pyspark; print(pyspark.__version__)'), $(java -version 2>&1 | head -n1)"

SERVER_IP=127.0.0.1
NETWORK_FLAGS=()
if [ -n "${KESS_BENCH_POD_NETWORK:-}" ]; then
  SERVER_IP=10.213.40.1
  MTU="${KESS_BENCH_POD_MTU:-1500}"
  ip netns add "$POD_NETNS"
  ip -n "$POD_NETNS" link set lo up
  ip link add "kbb$$" type bridge
  ip link add "kbv$$" mtu "$MTU" type veth peer name eth0 mtu "$MTU" netns "$POD_NETNS"
  ip link set "kbv$$" master "kbb$$" up
  ip addr add "$SERVER_IP/24" dev "kbb$$"
  ip link set "kbb$$" up
  ip -n "$POD_NETNS" addr add 10.213.40.2/24 dev eth0
  ip -n "$POD_NETNS" link set eth0 up
  NETWORK_FLAGS=(--server-ip "$SERVER_IP" --client-netns "$POD_NETNS")
  echo "pod network: client in $POD_NETNS (10.213.40.2), servers on $SERVER_IP, veth MTU $MTU"
fi

# Spark's daemon default heap (SPARK_DAEMON_MEMORY=1g); everything else is the service's default.
SPARK_DAEMON_MEMORY=1g bash tests/spark/java_ess.sh start "$JAVA_PORT" "$WORK/java-local"
JAVA_PID="$(bash tests/spark/java_ess.sh status "$JAVA_PORT" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')"

"$KESS" bench-ess --java-addr "$SERVER_IP:$JAVA_PORT" --java-pid "$JAVA_PID" --work-dir "$WORK" \
  "${NETWORK_FLAGS[@]}" "$@"
bash tests/spark/java_ess.sh stop "$JAVA_PORT" >/dev/null 2>&1

[ -n "${KESS_BENCH_SKIP_JOB:-}" ] && exit 0
KESS_PORT="$(free_port)"
KESS_LOG=warn "$KESS" daemon --data-dir "$WORK/kess-data" --spark-addr "127.0.0.1:$KESS_PORT" \
  --grpc-addr "127.0.0.1:$(free_port)" --http-addr "127.0.0.1:$(free_port)" \
  --spark-allowed-roots "$WORK" --min-free-bytes 0 >"$WORK/kess.log" 2>&1 &
KESS_PID=$!
SPARK_DAEMON_MEMORY=1g bash tests/spark/java_ess.sh start "$JAVA_PORT" "$WORK/java-local"
SPARK_HOME="$SPARK_HOME" "$PYTHON" benches/spark_job.py --work "$WORK" \
  --service "kess=$KESS_PORT" --service "java=$JAVA_PORT"
