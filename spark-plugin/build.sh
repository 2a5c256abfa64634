#!/usr/bin/env bash
# Builds the kess Spark plugin jar with javac against the jars of an installed Spark (the PySpark
# package the tests use): no Maven, no network. `--release 8` keeps the bytecode loadable by
# every JVM Spark 3.5 and 4.x run on; the Spark members used have the same signatures in 3.5 and 4.x.
#
#   spark-plugin/build.sh SPARK_JARS_DIR [OUT_JAR]
#
# OUT_JAR defaults to <repo>/target/kess-spark-plugin.jar (next to the PySpark venv that
# tests/spark/setup.sh makes). JDK_BIN may name the folder holding javac and jar. Rebuilds only when a source is newer
# than the jar. Prints the jar's path on stdout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
JARS="${1:?usage: build.sh SPARK_JARS_DIR [OUT_JAR]}"
OUT="${2:-$REPO/target/kess-spark-plugin.jar}"
SRC="$HERE/src/main/java"

[ -d "$JARS" ] || { echo "build.sh: $JARS is not a directory of Spark jars" >&2; exit 1; }
# JDK_BIN: the folder with javac and jar (default: from PATH).
JAVAC="${JDK_BIN:+$JDK_BIN/}javac"
JAR="${JDK_BIN:+$JDK_BIN/}jar"
for tool in "$JAVAC" "$JAR"; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "build.sh: $tool not found; install a JDK (Debian: openjdk-17-jdk-headless)" >&2
    exit 1
  }
done

if [ -f "$OUT" ] && [ -z "$(find "$SRC" "$HERE/build.sh" -newer "$OUT" -print -quit)" ]; then
  echo "$OUT"
  exit 0
fi

mkdir -p "$(dirname "$OUT")"
CLASSES="$(mktemp -d "${TMPDIR:-/tmp}/kess-spark-plugin.XXXXXX")"
trap 'rm -rf "$CLASSES"' EXIT
find "$SRC" -name '*.java' | sort >"$CLASSES/sources.txt"
"$JAVAC" --release 8 -Xlint:all,-options,-processing,-path -Werror -encoding UTF-8 \
  -cp "$JARS/*" -d "$CLASSES/out" @"$CLASSES/sources.txt" >&2
# Build next to the target, then rename: a concurrent reader never sees half a jar.
"$JAR" --create --file "$OUT.tmp" -C "$CLASSES/out" . >&2
mv -f "$OUT.tmp" "$OUT"
echo "build.sh: built $OUT" >&2
echo "$OUT"
