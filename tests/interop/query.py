#!/usr/bin/env python3
"""Run one SQL query on a DuckDB file with python duckdb (read-only) and print the rows as
JSON (values rendered with str(), NULL as null).

    query.py DB "SELECT ..."
"""
import json
import sys

import duckdb

con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SET TimeZone = 'UTC'")
rows = con.execute(sys.argv[2]).fetchall()
print(json.dumps([[None if v is None else str(v) for v in row] for row in rows], ensure_ascii=False))
