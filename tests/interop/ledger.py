#!/usr/bin/env python3
"""Read pipe's SQLite state store with Python's sqlite3 (independent of pipe).

    ledger.py STATE_DB PIPELINE

Prints JSON: {"runs": [{run_id, kind, window, started_at, ended_at, status, rows_read,
rows_written}, ...] oldest first, "state": {key: value}, "lease": {...} or null}.
"""
import json
import sqlite3
import sys
import time

db, pipeline = sys.argv[1], sys.argv[2]


def read():
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        runs = [
            dict(zip(["run_id", "kind", "window_start", "window_end", "started_at", "ended_at",
                      "status", "rows_read", "rows_written", "error"], row))
            for row in con.execute(
                "SELECT run_id, kind, window_start, window_end, started_at, ended_at, status, "
                "rows_read, rows_written, error FROM pipe_runs WHERE pipeline = ? "
                "ORDER BY started_at, run_id", (pipeline,))
        ]
        state = dict(con.execute("SELECT key, value FROM pipe_state WHERE pipeline = ?",
                                 (pipeline,)).fetchall())
        lease = con.execute("SELECT holder, host, pid, expires_at FROM pipe_leases "
                            "WHERE pipeline = ?", (pipeline,)).fetchone()
    finally:
        con.close()
    return {"runs": runs, "state": state,
            "lease": dict(zip(["holder", "host", "pid", "expires_at"], lease)) if lease else None}


# The store may be mid-creation (tables not there yet) or briefly locked: retry for up to 10 s,
# then report an empty store rather than a half-read one.
for attempt in range(100):
    try:
        print(json.dumps(read()))
        break
    except sqlite3.OperationalError as e:
        if attempt == 99:
            if "no such table" in str(e):
                print(json.dumps({"runs": [], "state": {}, "lease": None}))
                break
            raise
        time.sleep(0.1)
