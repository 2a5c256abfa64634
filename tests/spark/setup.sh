#!/usr/bin/env bash
# Prepares everything the real-PySpark end-to-end tests need, idempotently:
#   * Java >= 17, preferably 17 (installs Debian's openjdk-17-jre-headless with apt-get, after
#     apt-get update, only when no Java 17 or newer is on the machine),
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

# Spark 3.5 is built for Java 8/11/17; prefer 17, accept newer. Candidates: $JAVA_HOME, java on
# PATH, then /usr/lib/jvm/*.
find_java() {
  local c best="" best_major=0 m
  for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    m="$(java_major "$c")"
    case "$m" in '' | *[!0-9]*) m=0 ;; esac
    if [ "$m" -eq 17 ]; then echo "$c"; return 0; fi
    if [ "$m" -gt 17 ] && [ -z "$best" ]; then best="$c"; best_major="$m"; fi
  done
  if [ -n "$best" ]; then
    log "no Java 17 found; using Java $best_major at $best"
    echo "$best"
    return 0
  fi
  return 1
}

if ! JAVA_BIN="$(find_java)"; then
  log "no Java 17 or newer found; installing openjdk-17-jre-headless"
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get here; install Java 17 and retry (or set JAVA_HOME)"
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null >&2
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless </dev/null >&2
  JAVA_BIN="$(find_java)" || { log "still no Java 17 after installing openjdk-17-jre-headless"; exit 1; }
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
