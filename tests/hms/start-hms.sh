#!/usr/bin/env bash
# Start a real Hive Metastore (Hive 2.3.9, embedded Derby) on 127.0.0.1:PORT, state under DIR.
#   usage: start-hms.sh DIR [PORT]      prints the pid; logs in DIR/hms.log; stop with kill
# Needs Java 17; the jars are fetched once by fetch-jars.sh. One metastore per DIR (Derby
# allows one JVM per database). Start: 3-10 s, ~250 MB RSS.
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd); port=${2:-9083}
jars=${PIPE_HMS_JARS:-/var/tmp/pipe-hms-jars}
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/fetch-jars.sh"
mkdir -p "$dir/conf" "$dir/warehouse"
sed "s#@DIR@#$dir#g" "$here/hive-site.xml.template" > "$dir/conf/hive-site.xml"
cd "$dir"
nohup setsid java -Xmx512m -cp "$dir/conf:$jars:$jars/jars/*" LoopbackMetastore "$port" > "$dir/hms.log" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 240); do
  if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then echo "$pid"; exit 0; fi
  kill -0 "$pid" 2>/dev/null || { echo "hive metastore exited; see $dir/hms.log" >&2; tail -20 "$dir/hms.log" >&2; exit 1; }
  sleep 0.5
done
echo "hive metastore did not open port $port in 120 s; see $dir/hms.log" >&2; kill "$pid"; exit 1
