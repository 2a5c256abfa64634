#!/usr/bin/env bash
# Starts and stops Spark's own Java External Shuffle Service (from the pip pyspark jars), the
# reference the kess Spark tests and benchmarks are compared against.
#
#   java_ess.sh start  PORT LOCALDIR [SECRET]   start it (waits until PORT accepts connections)
#   java_ess.sh stop   PORT                     SIGTERM, then SIGKILL after 15 s
#   java_ess.sh kill9  PORT                     SIGKILL, as a crash would (the recovery DB stays)
#   java_ess.sh status PORT                     exit 0 if running
#
# LOCALDIR becomes the service's spark.local.dir, where its recovery DB (registeredExecutors.ldb)
# lives; reuse the same LOCALDIR on a restart to keep registrations. With SECRET the service runs
# with spark.authenticate=true and that secret (SASL).
# Per-port state lives in ${KESS_JAVA_ESS_DIR:-<repo>/target/java-ess}/<PORT>/: conf/ (the
# generated SPARK_CONF_DIR), ess.pid and ess.log (appended across restarts).
# Extra JVM options can be passed in SPARK_DAEMON_JAVA_OPTS, memory in SPARK_DAEMON_MEMORY (512m).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BASE="${KESS_JAVA_ESS_DIR:-$REPO/target/java-ess}"

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 2 ] || usage
CMD="$1"
PORT="$2"
case "$PORT" in '' | *[!0-9]*) echo "java_ess.sh: bad port '$PORT'" >&2; exit 2 ;; esac
DIR="$BASE/$PORT"
PIDFILE="$DIR/ess.pid"
LOG="$DIR/ess.log"

running_pid() {
  local pid
  [ -f "$PIDFILE" ] || return 1
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be our java process.
  grep -q "ExternalShuffleService" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

wait_gone() {
  local pid="$1" secs="$2" i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt $((secs * 10)) ]; do
    sleep 0.1
    i=$((i + 1))
  done
  ! kill -0 "$pid" 2>/dev/null
}

case "$CMD" in
  start)
    [ $# -ge 3 ] || usage
    LOCALDIR="$3"
    SECRET="${4:-}"
    if pid="$(running_pid)"; then
      echo "java_ess.sh: already running on port $PORT (pid $pid)" >&2
      exit 1
    fi
    if port_open; then
      echo "java_ess.sh: port $PORT is already in use by something else" >&2
      exit 1
    fi
    SETUP_OUT="$("$HERE/setup.sh")"
    SPARK_HOME="$(sed -n 's/^SPARK_HOME=//p' <<<"$SETUP_OUT")"
    JAVA="$(sed -n 's/^JAVA=//p' <<<"$SETUP_OUT")"
    # Its own java.io.tmpdir: leveldbjni extracts a native library there on every start and a
    # killed JVM never deletes it.
    rm -rf "$DIR/tmp"
    mkdir -p "$DIR/conf" "$DIR/tmp" "$LOCALDIR"
    LOCALDIR="$(cd "$LOCALDIR" && pwd)"
    {
      echo "spark.shuffle.service.enabled true"
      echo "spark.shuffle.service.port $PORT"
      echo "spark.local.dir $LOCALDIR"
      if [ -n "$SECRET" ]; then
        echo "spark.authenticate true"
        echo "spark.authenticate.secret $SECRET"
      fi
    } >"$DIR/conf/spark-defaults.conf"
    chmod 600 "$DIR/conf/spark-defaults.conf"
    echo "==== $(date '+%F %T') start port=$PORT localdir=$LOCALDIR auth=$([ -n "$SECRET" ] && echo on || echo off)" >>"$LOG"
    # setsid: its own session, so the caller's Ctrl-C or process-group kill does not reach it.
    SPARK_HOME="$SPARK_HOME" SPARK_CONF_DIR="$DIR/conf" JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$JAVA")")")" \
      SPARK_DAEMON_MEMORY="${SPARK_DAEMON_MEMORY:-512m}" SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" \
      SPARK_DAEMON_JAVA_OPTS="${SPARK_DAEMON_JAVA_OPTS:-} -Djava.io.tmpdir=$DIR/tmp" \
      setsid "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.ExternalShuffleService \
      </dev/null >>"$LOG" 2>&1 &
    launcher=$!
    # spark-class execs java at the end, so the launched pid becomes the JVM's pid.
    echo "$launcher" >"$PIDFILE"
    for _ in $(seq 1 600); do
      if port_open; then
        echo "java_ess.sh: Java ESS listening on port $PORT (pid $launcher, log $LOG)" >&2
        exit 0
      fi
      if ! kill -0 "$launcher" 2>/dev/null; then
        echo "java_ess.sh: the Java ESS exited during startup; last log lines:" >&2
        tail -n 40 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
      fi
      sleep 0.1
    done
    echo "java_ess.sh: the Java ESS did not listen on port $PORT within 60 s; log $LOG" >&2
    kill -9 "$launcher" 2>/dev/null || true
    exit 1
    ;;
  stop | kill9)
    if ! pid="$(running_pid)"; then
      echo "java_ess.sh: not running on port $PORT" >&2
      rm -f "$PIDFILE"
      exit 0
    fi
    if [ "$CMD" = kill9 ]; then
      kill -9 "$pid"
      wait_gone "$pid" 10 || { echo "java_ess.sh: pid $pid survived SIGKILL" >&2; exit 1; }
    else
      kill "$pid"
      if ! wait_gone "$pid" 15; then
        echo "java_ess.sh: pid $pid ignored SIGTERM for 15 s; sending SIGKILL" >&2
        kill -9 "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || true
      fi
    fi
    echo "==== $(date '+%F %T') $CMD pid=$pid" >>"$LOG"
    rm -f "$PIDFILE"
    # The port must be free before anyone restarts on it.
    for _ in $(seq 1 100); do port_open || break; sleep 0.1; done
    echo "java_ess.sh: stopped ($CMD) the Java ESS on port $PORT" >&2
    ;;
  status)
    if pid="$(running_pid)"; then
      echo "running pid=$pid port=$PORT log=$LOG"
    else
      echo "stopped port=$PORT"
      exit 1
    fi
    ;;
  *) usage ;;
esac
