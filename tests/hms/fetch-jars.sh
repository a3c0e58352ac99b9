#!/usr/bin/env bash
# Fetch the Hive Metastore 2.3.9 jars (they ship inside the PyPI source package of pyspark
# 3.5.7, under deps/jars) into $PIPE_HMS_JARS (default /var/tmp/pipe-hms-jars), once, and
# compile the loopback launcher. ~400 MB unpacked; about a minute the first time.
set -euo pipefail
jars=${PIPE_HMS_JARS:-/var/tmp/pipe-hms-jars}
here=$(cd "$(dirname "$0")" && pwd)
command -v javac >/dev/null || { echo "javac is missing: install Java 17 (Debian: openjdk-17-jdk-headless)" >&2; exit 1; }
if [ ! -f "$jars/jars/hive-metastore-2.3.9.jar" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" pyspark==3.5.7
  mkdir -p "$jars"
  tar -xzf "$tmp"/pyspark-3.5.7.tar.gz -C "$tmp" pyspark-3.5.7/deps/jars
  rm -rf "$jars/jars"
  mv "$tmp"/pyspark-3.5.7/deps/jars "$jars/jars"
  rm -rf "$tmp"
fi
if [ ! -f "$jars/LoopbackMetastore.class" ] || [ "$here/LoopbackMetastore.java" -nt "$jars/LoopbackMetastore.class" ]; then
  javac -nowarn -cp "$jars/jars/*" -d "$jars" "$here/LoopbackMetastore.java"
fi
