#!/usr/bin/env python3
"""Compare a table loaded from make_types_fixture.py's files with expected.json, reading it
with python duckdb.

    check_types.py DB TABLE EXPECTED_JSON [--flat]

--flat: the table has no nested columns (the CSV fixture). Exits 1 on any difference and
prints JSON with the problems.
"""
import argparse
import datetime as dt
import decimal
import json
import sys

from duck import open_table

UTC = dt.timezone.utc
decimal.getcontext().prec = 60
TYPES = {
    "id": "BIGINT", "i32": "INTEGER", "flag": "BOOLEAN", "price": "DECIMAL(38,10)",
    "name": "VARCHAR", "day": "DATE", "ts": "TIMESTAMP", "tstz": "TIMESTAMP WITH TIME ZONE",
    "tags": "VARCHAR[]", "point": "STRUCT(x DOUBLE, y DOUBLE)",
}


def canon(col, v):
    if v is None:
        return None
    if col == "price":
        return format(v.quantize(decimal.Decimal("1E-10")), "f")
    if col in ("day", "ts"):
        return v.isoformat()
    if col == "tstz":
        return v.astimezone(UTC).isoformat()
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("table")
    ap.add_argument("expected")
    ap.add_argument("--flat", action="store_true")
    a = ap.parse_args()
    expected = json.load(open(a.expected, encoding="utf-8"))
    want_types = dict(TYPES)
    if a.flat:
        for row in expected:
            row.pop("tags")
            row.pop("point")
        want_types.pop("tags")
        want_types.pop("point")

    con, qualified, types = open_table(a.db, a.table)
    cur = con.execute(f"SELECT * FROM {qualified} ORDER BY id")
    names = [d[0] for d in cur.description]
    got = [{n: canon(n, v) for n, v in zip(names, row)} for row in cur.fetchall()]

    problems = []
    if types != want_types:
        problems.append({"types": types, "expected": want_types})
    if len(got) != len(expected):
        problems.append(f"row count {len(got)}, expected {len(expected)}")
    for g, w in zip(got, expected):
        for k in w:
            if g.get(k) != w[k]:
                problems.append({"id": w["id"], "column": k, "got": g.get(k), "expected": w[k]})
    print(json.dumps({"rows": len(got), "problems": problems}, ensure_ascii=False, default=str))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
