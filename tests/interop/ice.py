#!/usr/bin/env python3
"""Read (or write) an Iceberg table with pyiceberg's SqlCatalog: the independent reader of
pipe's Iceberg destination.

    ice.py read CATALOG_DB WAREHOUSE TABLE [--order COL] [--snapshot ID]
        JSON: rows (dicts, values as canonical strings), schema (id, name, type, required),
        snapshots (id, parent, operation, summary), current snapshot, live data files,
        partition spec, row checksum.
    ice.py write CATALOG_DB WAREHOUSE TABLE MODE ROWS_JSON [--partition COL]
        Create the table if missing (from the rows' pyarrow schema) and append / overwrite /
        upsert (on `id`) the rows with pyiceberg itself. JSON: the new snapshot id.
    ice.py static METADATA_JSON
        Like `read`, for a table given by its metadata file (no catalog).
    ice.py compare CATALOG_DB WAREHOUSE TABLE PARQUET
        Compare the table with a Parquet file (both sorted by `id`), column by column.

CATALOG_DB is the SQLite file; the catalog is named `pipe` like pipe's default.
"""
import argparse
import hashlib
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog

from canon import canon, differences


def catalog(db, warehouse):
    """A SQL catalog (a SQLite file or a database URL, and the warehouse), or a catalog given as
    a JSON object of pyiceberg catalog properties whose `type` picks it: `rest` (the default;
    `{"uri": ..., "token": ...}`), `hive` (`{"type": "hive", "uri": "thrift://..."}`) or `sql`
    (with object-store settings such as `s3.endpoint`); the warehouse argument is then ignored
    unless the object names none."""
    if db.startswith("{"):
        props = json.loads(db)
        kind = props.pop("type", "rest")
        if kind == "hive":
            from pyiceberg.catalog.hive import HiveCatalog
            return HiveCatalog("hive", **props)
        if kind == "sql":
            props.setdefault("warehouse", warehouse)
            if props["uri"].startswith("sqlite:///"):
                path = props["uri"][len("sqlite:///"):]
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            return SqlCatalog("pipe", **props)
        from pyiceberg.catalog.rest import RestCatalog
        return RestCatalog("rest", **props)
    if "://" not in db:
        os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    uri = db if "://" in db else f"sqlite:///{os.path.abspath(db)}"
    wh = warehouse if "://" in warehouse else f"file://{os.path.abspath(warehouse)}"
    return SqlCatalog("pipe", uri=uri, warehouse=wh)


def read(args):
    describe(catalog(args.db, args.warehouse).load_table(args.table), args)


def static(args):
    from pyiceberg.table import StaticTable

    describe(StaticTable.from_metadata(args.metadata), args)


def describe(table, args):
    scan = table.scan(snapshot_id=args.snapshot) if args.snapshot else table.scan()
    arrow = scan.to_arrow()
    if args.order and arrow.num_rows:
        arrow = arrow.sort_by([(c, "ascending") for c in args.order.split(",")])
    rows = [{k: canon(v) for k, v in r.items()} for r in arrow.to_pylist()]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    meta = table.metadata
    snaps = [
        {
            "id": s.snapshot_id,
            "parent": s.parent_snapshot_id,
            "operation": s.summary.operation.value if s.summary else None,
            "summary": dict(s.summary.additional_properties) if s.summary else {},
            "schema_id": s.schema_id,
            "sequence": s.sequence_number,
        }
        for s in sorted(meta.snapshots, key=lambda s: (s.sequence_number, s.timestamp_ms))
    ]
    files = []
    if table.current_snapshot() is not None:
        files = sorted(t.file.file_path for t in table.scan().plan_files())
    out = {
        "rows": rows,
        "count": len(rows),
        "checksum": digest,
        "schema": [
            {"id": f.field_id, "name": f.name, "type": str(f.field_type), "required": f.required}
            for f in table.schema().fields
        ],
        "schema_id": table.schema().schema_id,
        "snapshots": snaps,
        "current": meta.current_snapshot_id,
        "files": files,
        "spec": str(table.spec()),
        "sort_order": str(table.sort_order()),
        "format_version": meta.format_version,
    }
    print(json.dumps(out, default=str))


def write(args):
    cat = catalog(args.db, args.warehouse)
    data = pa.Table.from_pylist(json.loads(args.rows))
    ns = args.table.rsplit(".", 1)[0]
    cat.create_namespace_if_not_exists(ns)
    if not cat.table_exists(args.table):
        table = cat.create_table(args.table, schema=data.schema)
        if args.partition:
            with table.update_spec() as spec:
                spec.add_identity(args.partition)
    table = cat.load_table(args.table)
    data = data.cast(table.schema().as_arrow())
    if args.mode == "append":
        table.append(data)
    elif args.mode == "overwrite":
        table.overwrite(data)
    elif args.mode == "upsert":
        table.upsert(data, join_cols=["id"])
    else:
        raise SystemExit(f"unknown mode {args.mode}")
    print(json.dumps({"snapshot": cat.load_table(args.table).metadata.current_snapshot_id}))


def compare(args):
    table = catalog(args.db, args.warehouse).load_table(args.table)
    got = table.scan().to_arrow().sort_by("id")
    want = pq.read_table(args.parquet).sort_by("id")
    problems = differences(got, want, "iceberg")
    types = {f.name: str(f.field_type) for f in table.schema().fields}
    print(json.dumps({"problems": problems, "types": types}))
    sys.exit(1 if problems else 0)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("read")
    r.add_argument("db")
    r.add_argument("warehouse")
    r.add_argument("table")
    r.add_argument("--order")
    r.add_argument("--snapshot", type=int)
    w = sub.add_parser("write")
    w.add_argument("db")
    w.add_argument("warehouse")
    w.add_argument("table")
    w.add_argument("mode")
    w.add_argument("rows")
    w.add_argument("--partition")
    c = sub.add_parser("compare")
    c.add_argument("db")
    c.add_argument("warehouse")
    c.add_argument("table")
    c.add_argument("parquet")
    s = sub.add_parser("static")
    s.add_argument("metadata")
    s.add_argument("--order", default="id")
    s.add_argument("--snapshot", type=int)
    args = p.parse_args()
    {"read": read, "write": write, "compare": compare, "static": static}[args.cmd](args)


if __name__ == "__main__":
    main()
