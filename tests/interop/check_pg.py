#!/usr/bin/env python3
"""Compare a PostgreSQL table, as `psql` returns it, with the DuckDB table pipe loaded from it.

    check_pg.py PG_TABLE DUCKDB_FILE DUCK_TABLE [--key id]

PostgreSQL side: `psql` prints each row with row_to_json (session in UTC); intervals are
spelled out as [months, days, microseconds] and floats widened exactly to float8.
DuckDB side: python duckdb through Arrow (so intervals keep months, days and nanoseconds).
Both are canonicalized per PostgreSQL type and compared value by value. Prints JSON with the
row count and the problems; exits 1 on any difference.
"""
import argparse
import datetime as dt
import decimal
import json
import math
import os
import subprocess
import sys

from duck import open_table

decimal.getcontext().prec = 80
UTC = dt.timezone.utc
PG_URL = os.environ.get("PIPE_PG_URL", "postgres://postgres@127.0.0.1:5432/test")


def psql(sql):
    env = dict(os.environ, PGTZ="UTC", PGOPTIONS="-c extra_float_digits=1")
    out = subprocess.run(["psql", PG_URL, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(json.dumps({"rows": 0, "problems": [f"psql: {out.stderr.strip()}"]}))
    return out.stdout


def pg_columns(table):
    schema, name = table.split(".") if "." in table else ("public", table)
    rows = psql(
        "SELECT a.attname, format_type(bt.oid, CASE WHEN t.typtype = 'd' THEN t.typtypmod "
        "ELSE a.atttypmod END), bt.typcategory, bt.typtype "
        "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END "
        f"WHERE a.attrelid = '{schema}.{name}'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum")
    return [tuple(line.split("|")) for line in rows.splitlines() if line]


def select_expr(name, pg_type):
    col = f'"{name}"'
    if pg_type == "interval":
        return (f"CASE WHEN {col} IS NULL THEN NULL ELSE json_build_array("
                f"(extract(year from {col}) * 12 + extract(month from {col}))::int, "
                f"extract(day from {col})::int, (extract(hour from {col}) * 3600000000 + "
                f"extract(minute from {col}) * 60000000 + extract(microseconds from {col}))::int8) "
                f"END AS {col}")
    if pg_type == "real":
        return f"{col}::float8 AS {col}"
    return col


def canon_float(v):
    if v is None:
        return None
    f = float(v)
    return "NaN" if math.isnan(f) else f


def canon_pg(pg_type, category, typtype, v):
    """A PostgreSQL JSON value (numbers as their literal text) in comparable form."""
    if v is None:
        return None
    if category == "A":
        elem = pg_type[:-2]
        return [canon_pg(elem, "", "", x) for x in v]
    if pg_type in ("real", "double precision"):
        return canon_float(v)
    if pg_type.startswith("numeric"):
        return v if v == "NaN" else str(decimal.Decimal(v)) if "(" not in pg_type else decimal.Decimal(v)
    if pg_type in ("smallint", "integer", "bigint"):
        return int(v)
    if pg_type == "bytea":
        return bytes.fromhex(v[2:])
    if pg_type in ("json", "jsonb"):
        return v
    if pg_type == "timestamp with time zone":
        return dt.datetime.fromisoformat(v).astimezone(UTC).isoformat()
    if pg_type == "timestamp without time zone":
        return dt.datetime.fromisoformat(v).isoformat()
    if pg_type == "time without time zone":
        return dt.time.fromisoformat(v).isoformat()
    if pg_type == "interval":
        return [int(x) for x in v]
    return v


def canon_duck(pg_type, category, v):
    if v is None:
        return None
    if category == "A":
        elem = pg_type[:-2]
        return [canon_duck(elem, "", x) for x in v]
    if pg_type in ("real", "double precision"):
        return canon_float(v)
    if pg_type.startswith("numeric"):
        if "(" not in pg_type:
            return v if v == "NaN" else str(decimal.Decimal(v))
        return v
    if pg_type in ("json", "jsonb"):
        return json.loads(v, parse_float=str, parse_int=str)
    if pg_type in ("date", "time without time zone", "timestamp without time zone"):
        return v.isoformat()
    if pg_type == "timestamp with time zone":
        return v.astimezone(UTC).isoformat()
    if pg_type == "interval":
        return [v.months, v.days, v.nanoseconds // 1000]
    if pg_type == "uuid":
        return str(v)
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pg_table")
    ap.add_argument("db")
    ap.add_argument("duck_table")
    ap.add_argument("--key", default="id")
    a = ap.parse_args()

    cols = pg_columns(a.pg_table)
    exprs = ", ".join(select_expr(n, t) for n, t, _, _ in cols)
    lines = psql(f'SELECT row_to_json(q) FROM (SELECT {exprs} FROM {a.pg_table} ORDER BY "{a.key}") q')
    pg_rows = [json.loads(line, parse_float=str, parse_int=str) for line in lines.splitlines() if line]

    con, qualified, _ = open_table(a.db, a.duck_table)
    duck_rows = con.sql(f'SELECT * FROM {qualified} ORDER BY "{a.key}"').to_arrow_table().to_pylist()

    problems = []
    if len(pg_rows) != len(duck_rows):
        problems.append(f"row count: postgres {len(pg_rows)}, duckdb {len(duck_rows)}")
    for p, d in zip(pg_rows, duck_rows):
        for name, pg_type, category, typtype in cols:
            want = canon_pg(pg_type, category, typtype, p[name])
            if pg_type in ("json", "jsonb") and want is not None:
                want = json.loads(json.dumps(want), parse_float=str, parse_int=str)
            got = canon_duck(pg_type, category, d.get(name))
            if got != want:
                problems.append({"key": p[a.key], "column": name, "type": pg_type,
                                 "postgres": repr(want), "duckdb": repr(got)})
    print(json.dumps({"rows": len(duck_rows), "problems": problems[:20]}, default=str))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
