#!/usr/bin/env bash
# Prepares everything the real-PySpark end-to-end tests need, idempotently:
#   * Java >= 17, preferably 17, with a JDK's javac (installs Debian's openjdk-17-jdk-headless with
#     apt-get, after apt-get update, only when no Java 17 or newer, or no javac, is on the machine),
#   * a venv with pyspark==3.5.7 at ${KESS_SPARK_VENV:-<repo>/target/spark-venv},
#   * a SPARK_HOME-style folder at ${KESS_SPARK_HOME:-<repo>/target/spark-home} with symlinks to the
#     pip package's bin, sbin, jars and python, plus a real work/ dir (executor logs go there
#     instead of into the venv),
#   * the kess Spark plugin jar (spark-plugin/build.sh, compiled against that package's jars) at
#     ${KESS_SPARK_PLUGIN_JAR:-<repo>/target/kess-spark-plugin.jar}; rebuilt when a source changed.
# Safe without a terminal (CI=true, no stdin) and fast (well under a second) when already set up.
# Progress goes to stderr; stdout gets exactly these lines, for scripts and the Rust tests:
#   PYTHON=<venv python>
#   SPARK_HOME=<spark home folder>
#   JAVA=<java binary used>
#   PLUGIN_JAR=<kess Spark plugin jar>
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

# The folder with javac and jar next to a java binary (a JDK), or nothing for a bare JRE.
jdk_bin() {
  local d
  d="$(dirname "$(readlink -f "$1")")"
  if [ -x "$d/javac" ] && [ -x "$d/jar" ]; then echo "$d"; return 0; fi
  return 1
}

install_jdk() {
  log "$1; installing openjdk-17-jdk-headless"
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no apt-get here; install a Java 17 JDK and retry (or set JAVA_HOME)"
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq </dev/null >&2
  $SUDO apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless </dev/null >&2
}

if ! JAVA_BIN="$(find_java)"; then
  install_jdk "no Java 17 or newer found"
  JAVA_BIN="$(find_java)" || { log "still no Java 17 after installing openjdk-17-jdk-headless"; exit 1; }
fi
# The plugin jar needs javac: the JDK of the chosen java, else any JDK on the machine (17 first).
any_jdk_bin() {
  local c
  for c in /usr/lib/jvm/*17*/bin /usr/lib/jvm/*/bin; do
    if [ -x "$c/javac" ] && [ -x "$c/jar" ]; then echo "$c"; return 0; fi
  done
  return 1
}
if ! JDK_BIN="$(jdk_bin "$JAVA_BIN")" && ! JDK_BIN="$(any_jdk_bin)"; then
  install_jdk "no javac (a JRE without a JDK)"
  JDK_BIN="$(any_jdk_bin)" || { log "still no javac after installing openjdk-17-jdk-headless"; exit 1; }
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

# ---- the kess Spark plugin ---------------------------------------------------------------
PLUGIN_JAR="$(JDK_BIN="$JDK_BIN" bash "$REPO/spark-plugin/build.sh" "$PKG/jars" \
  "${KESS_SPARK_PLUGIN_JAR:-$TARGET/kess-spark-plugin.jar}")"

echo "PYTHON=$PY"
echo "SPARK_HOME=$SPARK_HOME_DIR"
echo "JAVA=$JAVA_BIN"
echo "PLUGIN_JAR=$PLUGIN_JAR"
