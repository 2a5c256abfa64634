#!/usr/bin/env bash
# Prepares everything the real-PySpark end-to-end tests need, idempotently:
#   * Java >= 17 (installs Debian's openjdk-17-jre-headless with apt-get only if java is missing),
#   * a venv with pyspark==3.5.7 at ${KESS_SPARK_VENV:-<repo>/target/spark-venv},
#   * a SPARK_HOME-style folder at ${KESS_SPARK_HOME:-<repo>/target/spark-home} with symlinks to the
#     pip package's bin, sbin, jars and python, plus a real work/ dir (executor logs go there
#     instead of into the venv).
# Safe without a terminal (CI=true, no stdin) and fast (well under a second) when already set up.
# Progress goes to stderr; stdout gets exactly these lines, for scripts and the Rust tests:
#   PYTHON=<venv python>
#   SPARK_HOME=<spark home folder>
#   JAVA=<java binary used>
set -euo pipefail

PYSPARK_VERSION=3.5.7
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="$REPO/target"
VENV="${KESS_SPARK_VENV:-$TARGET/spark-venv}"
SPARK_HOME_DIR="${KESS_SPARK_HOME:-$TARGET/spark-home}"

log() { echo "setup.sh: $*" >&2; }

mkdir -p "$TARGET"
# Serialise concurrent callers (several test binaries, a bench and a developer at once).
exec 9>"$TARGET/.spark-setup.lock"
flock 9

# ---- Java ---------------------------------------------------------------------------------
java_major() {
  # `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` or `java version "1.8.0_392"`.
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
  case "$v" in
    1.*) echo "${v#1.}" | cut -d. -f1 ;;
    "") echo 0 ;;
    *) echo "$v" | cut -d. -f1 | cut -d- -f1 ;;
  esac
}

JAVA_BIN=""
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
  JAVA_BIN="$JAVA_HOME/bin/java"
elif command -v java >/dev/null 2>&1; then
  JAVA_BIN="$(command -v java)"
fi
if [ -z "$JAVA_BIN" ]; then
  log "java not found; installing openjdk-17-jre-headless"
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get here; install Java 17 or newer and retry"
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null >&2
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless </dev/null >&2
  JAVA_BIN="$(command -v java || true)"
  if [ -z "$JAVA_BIN" ]; then
    JAVA_BIN="$(ls /usr/lib/jvm/*17*/bin/java 2>/dev/null | head -n1 || true)"
  fi
  [ -n "$JAVA_BIN" ] || { log "java still missing after installing openjdk-17-jre-headless"; exit 1; }
fi
MAJOR="$(java_major "$JAVA_BIN")"
if [ "$MAJOR" -lt 17 ]; then
  log "$JAVA_BIN is Java $MAJOR; Spark $PYSPARK_VERSION here needs Java 17 or newer (set JAVA_HOME)"
  exit 1
fi

# ---- venv with pyspark --------------------------------------------------------------------
PY="$VENV/bin/python"
have_pyspark() {
  [ -x "$PY" ] && "$PY" - "$PYSPARK_VERSION" <<'EOF' >/dev/null 2>&1
import sys, importlib.metadata as m
sys.exit(0 if m.version("pyspark") == sys.argv[1] else 1)
EOF
}
if ! have_pyspark; then
  BASE_PY="${KESS_SPARK_BASE_PYTHON:-}"
  if [ -z "$BASE_PY" ]; then
    for c in python3.11 python3 python; do
      if command -v "$c" >/dev/null 2>&1; then BASE_PY="$(command -v "$c")"; break; fi
    done
  fi
  [ -n "$BASE_PY" ] || { log "no python3 found"; exit 1; }
  if [ ! -x "$PY" ]; then
    log "creating venv $VENV with $BASE_PY"
    "$BASE_PY" -m venv "$VENV" >&2
  fi
  log "installing pyspark==$PYSPARK_VERSION into $VENV (about 320 MB, under a minute)"
  "$PY" -m pip install --no-input --disable-pip-version-check -q "pyspark==$PYSPARK_VERSION" </dev/null >&2
  have_pyspark || { log "pyspark $PYSPARK_VERSION still not importable from $PY"; exit 1; }
fi

# ---- SPARK_HOME folder --------------------------------------------------------------------
PKG="$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
mkdir -p "$SPARK_HOME_DIR/work"
for d in bin sbin jars python; do
  [ -e "$PKG/$d" ] || { log "$PKG/$d is missing from the pyspark package"; exit 1; }
  if [ "$(readlink "$SPARK_HOME_DIR/$d" 2>/dev/null || true)" != "$PKG/$d" ]; then
    rm -rf "${SPARK_HOME_DIR:?}/$d"
    ln -s "$PKG/$d" "$SPARK_HOME_DIR/$d"
  fi
done

echo "PYTHON=$PY"
echo "SPARK_HOME=$SPARK_HOME_DIR"
echo "JAVA=$JAVA_BIN"
