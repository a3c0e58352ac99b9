#!/usr/bin/env bash
# Stop the metastore the tests share (tests/e2e/common/hms.rs starts it on first use).
dir=${PIPE_HMS_DIR:-/tmp/pipe-test-hms}
if [ -f "$dir/pid" ]; then
  kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid" "$dir/port"
fi
