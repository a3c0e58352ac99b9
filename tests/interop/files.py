#!/usr/bin/env python3
"""Parquet files as other systems land them, written by pyarrow, for `mode = "register"`.

    files.py write DIR FIRST COUNT [--rows N] [--ids] [--extra] [--bad]
        Write COUNT files DIR/region=<eu|us>/part-<n>.parquet (n = FIRST ..), each of N rows
        (default 10): id (int64, unique over all files: n * 1000 + row), region (the file's
        directory), amount (float64), day (date32), note (string, NULL every third row).
        --ids: with Iceberg field ids (1..5 in that order) as Spark/Iceberg writers add them.
        --extra: one more column `score` (int64).
        --bad: `amount` as a string (a file the table cannot take).
        JSON: files (absolute paths), rows.
    files.py props CATALOG_DB TABLE
        JSON: the table's properties, format version and each live file's path and record
        count (pyiceberg).
"""
import argparse
import datetime
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq


def field(name, type_, fid, ids, nullable=True):
    meta = {b"PARQUET:field_id": str(fid).encode()} if ids else None
    return pa.field(name, type_, nullable=nullable, metadata=meta)


def write(args):
    out = []
    total = 0
    for n in range(args.first, args.first + args.count):
        region = "eu" if n % 2 == 0 else "us"
        rows = range(args.rows)
        amount_type = pa.string() if args.bad else pa.float64()
        fields = [
            field("id", pa.int64(), 1, args.ids),
            field("region", pa.string(), 2, args.ids),
            field("amount", amount_type, 3, args.ids),
            field("day", pa.date32(), 4, args.ids),
            field("note", pa.string(), 5, args.ids),
        ]
        columns = [
            [n * 1000 + r for r in rows],
            [region for _ in rows],
            [(str(r * 1.5) if args.bad else r * 1.5) for r in rows],
            [datetime.date(2024, 1, 1) + datetime.timedelta(days=n) for _ in rows],
            [None if r % 3 == 0 else f"n{n}-{r}" for r in rows],
        ]
        if args.extra:
            fields.append(field("score", pa.int64(), 6, args.ids))
            columns.append([r * 7 for r in rows])
        table = pa.table(columns, schema=pa.schema(fields))
        path = os.path.abspath(os.path.join(args.dir, f"region={region}", f"part-{n:04}.parquet"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pq.write_table(table, path)
        out.append(path)
        total += args.rows
    print(json.dumps({"files": out, "rows": total}))


def props(args):
    from pyiceberg.catalog.sql import SqlCatalog

    uri = f"sqlite:///{os.path.abspath(args.db)}"
    table = SqlCatalog("pipe", uri=uri, warehouse="file:///tmp").load_table(args.table)
    files = []
    if table.current_snapshot() is not None:
        files = [
            {"path": t.file.file_path, "rows": t.file.record_count}
            for t in table.scan().plan_files()
        ]
    print(json.dumps({
        "properties": dict(table.properties),
        "format_version": table.metadata.format_version,
        "files": sorted(files, key=lambda f: f["path"]),
    }))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("first", type=int)
    w.add_argument("count", type=int)
    w.add_argument("--rows", type=int, default=10)
    w.add_argument("--ids", action="store_true")
    w.add_argument("--extra", action="store_true")
    w.add_argument("--bad", action="store_true")
    r = sub.add_parser("props")
    r.add_argument("db")
    r.add_argument("table")
    args = p.parse_args()
    {"write": write, "props": props}[args.cmd](args)


if __name__ == "__main__":
    main()
