#!/usr/bin/env python3
"""Independent check of the orders table with python `duckdb`.

    check_orders.py DB TABLE --load a.csv [--merge b.csv ...] [--replace c.csv]

Builds the expected table from the CSV files with Python's csv/decimal/datetime modules
(merge: upsert on o_orderkey, last row wins; replace: only that file's rows), reads the table
with python duckdb, and compares every row and column. Prints JSON with the row count and a
SHA-256 over the canonical rows of each side; exits 1 on any difference.
"""
import argparse
import csv
import datetime as dt
import decimal
import hashlib
import json
import sys

from duck import open_table

UTC = dt.timezone.utc
TYPES = {
    "o_orderkey": "BIGINT", "o_custkey": "BIGINT", "o_orderstatus": "VARCHAR",
    "o_totalprice": "DECIMAL(15,2)", "o_orderdate": "DATE", "o_orderpriority": "VARCHAR",
    "o_clerk": "VARCHAR", "o_shippriority": "BIGINT", "o_comment": "VARCHAR",
    "o_updated_at": "TIMESTAMP WITH TIME ZONE",
}


def canon_csv(r):
    ts = dt.datetime.fromisoformat(r["o_updated_at"].replace("Z", "+00:00")).astimezone(UTC)
    return (
        int(r["o_orderkey"]), int(r["o_custkey"]), r["o_orderstatus"],
        str(decimal.Decimal(r["o_totalprice"]).quantize(decimal.Decimal("0.01"))),
        dt.date.fromisoformat(r["o_orderdate"]).isoformat(), r["o_orderpriority"], r["o_clerk"],
        int(r["o_shippriority"]), r["o_comment"], ts.isoformat(),
    )


def canon_db(row):
    (key, cust, status, price, date, prio, clerk, ship, comment, ts) = row
    return (
        key, cust, status, str(price.quantize(decimal.Decimal("0.01"))), date.isoformat(), prio,
        clerk, ship, comment, ts.astimezone(UTC).isoformat(),
    )


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [canon_csv(r) for r in csv.DictReader(f)]


def digest(rows):
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, ensure_ascii=False).encode())
    return h.hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("table")
    ap.add_argument("--load", action="append", default=[], help="append/first load")
    ap.add_argument("--merge", action="append", default=[])
    ap.add_argument("--replace")
    ap.add_argument("--pipeline", default="orders")
    a = ap.parse_args()

    expected = {}
    for path in a.load:
        for r in read_csv(path):
            expected[r[0]] = r
    for path in a.merge:
        for r in read_csv(path):
            expected[r[0]] = r
    if a.replace:
        expected = {r[0]: r for r in read_csv(a.replace)}
    want = [expected[k] for k in sorted(expected)]

    con, qualified, types = open_table(a.db, a.table)
    got = [canon_db(r) for r in con.execute(f"SELECT * FROM {qualified} ORDER BY o_orderkey").fetchall()]
    runs = con.execute("SELECT count(*) FROM _pipe.runs WHERE pipeline = ?", [a.pipeline]).fetchone()[0]

    problems = []
    if types != TYPES:
        problems.append(f"column types differ: {types}")
    if len(got) != len(want):
        problems.append(f"row count: table {len(got)}, expected {len(want)}")
    diffs = [(g, w) for g, w in zip(got, want) if g != w]
    if diffs:
        problems.append(f"{len(diffs)} rows differ, first: table {diffs[0][0]} expected {diffs[0][1]}")
    out = {"rows": len(got), "checksum": digest(got), "expected_checksum": digest(want),
           "ledger_runs": runs, "problems": problems}
    print(json.dumps(out))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
