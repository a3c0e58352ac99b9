#!/usr/bin/env python3
"""Read pipe's SQLite state store with Python's sqlite3 (independent of pipe).

    ledger.py STATE_DB PIPELINE

Prints JSON: {"runs": [{run_id, kind, window, started_at, ended_at, status, rows_read,
rows_written}, ...] oldest first, "state": {key: value}, "lease": {...} or null}.
"""
import json
import sqlite3
import sys

db, pipeline = sys.argv[1], sys.argv[2]
con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
runs = [
    dict(zip(["run_id", "kind", "window_start", "window_end", "started_at", "ended_at", "status",
              "rows_read", "rows_written", "error"], row))
    for row in con.execute(
        "SELECT run_id, kind, window_start, window_end, started_at, ended_at, status, rows_read, "
        "rows_written, error FROM pipe_runs WHERE pipeline = ? ORDER BY started_at, run_id", (pipeline,))
]
state = dict(con.execute("SELECT key, value FROM pipe_state WHERE pipeline = ?", (pipeline,)).fetchall())
lease = con.execute("SELECT holder, host, pid, expires_at FROM pipe_leases WHERE pipeline = ?",
                    (pipeline,)).fetchone()
print(json.dumps({"runs": runs, "state": state,
                  "lease": dict(zip(["holder", "host", "pid", "expires_at"], lease)) if lease else None}))
