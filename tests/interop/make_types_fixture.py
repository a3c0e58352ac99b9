#!/usr/bin/env python3
"""Write one table of edge-case values in every format pipe reads, with pyarrow.

    make_types_fixture.py OUTDIR

Writes types.parquet, types.arrow (IPC file), types.arrows (IPC stream), types.ndjson,
types.csv (no nested columns; NULL spelled `NULL`) and expected.json: the canonical values
check_types.py compares a loaded table with.
"""
import datetime as dt
import decimal
import json
import os
import sys

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

decimal.getcontext().prec = 60
D = decimal.Decimal
UTC = dt.timezone.utc
ROWS = {
    "id": [1, 2, 3, 4],
    "i32": [-2147483648, 2147483647, None, 0],
    "flag": [True, False, None, True],
    "price": [D("1234567890123456789012345678.0123456789"), D("-0.0000000001"), None, D("0E-10")],
    "name": ["Zürich", "東京 🦆 ünïcödé", None, ""],
    "day": [dt.date(1970, 1, 1), dt.date(9999, 12, 31), None, dt.date(2024, 2, 29)],
    "ts": [dt.datetime(1970, 1, 1), dt.datetime(2024, 2, 29, 23, 59, 59, 123456), None,
           dt.datetime(1900, 1, 1, 0, 0, 1)],
    "tstz": [dt.datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=UTC),
             dt.datetime(1970, 1, 1, tzinfo=UTC), None,
             dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)],
    "tags": [["a", "b"], [], None, ["ü", None]],
    "point": [{"x": 1.5, "y": -2.0}, {"x": 0.0, "y": 1e300}, None, {"x": None, "y": 3.25}],
}
SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    ("i32", pa.int32()), ("flag", pa.bool_()), ("price", pa.decimal128(38, 10)),
    ("name", pa.string()), ("day", pa.date32()), ("ts", pa.timestamp("us")),
    ("tstz", pa.timestamp("us", tz="UTC")), ("tags", pa.list_(pa.string())),
    ("point", pa.struct([("x", pa.float64()), ("y", pa.float64())])),
])


def canon(col, v):
    """The value as check_types.py renders what it reads back."""
    if v is None:
        return None
    if col == "price":
        return format(v.quantize(D("1E-10")), "f")
    if col in ("day", "ts"):
        return v.isoformat()
    if col == "tstz":
        return v.astimezone(UTC).isoformat()
    return v


def json_line(i):
    parts = []
    for name in SCHEMA.names:
        v = ROWS[name][i]
        if v is None:
            text = "null"
        elif name == "price":
            text = format(v, "f")  # a JSON number literal, digits exact
        elif name in ("day", "ts"):
            text = json.dumps(v.isoformat())
        elif name == "tstz":
            text = json.dumps(v.isoformat().replace("+00:00", "Z"))
        else:
            text = json.dumps(v, ensure_ascii=False)
        parts.append(f"{json.dumps(name)}: {text}")
    return "{" + ", ".join(parts) + "}"


def csv_field(name, v):
    if v is None:
        return "NULL"
    if name == "flag":
        return "true" if v else "false"
    if name == "price":
        return format(v, "f")
    if name in ("day", "ts"):
        return v.isoformat()
    if name == "tstz":
        return v.isoformat().replace("+00:00", "Z")
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') or s == "" else s


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    table = pa.table({n: ROWS[n] for n in SCHEMA.names}, schema=SCHEMA)
    pq.write_table(table, os.path.join(out, "types.parquet"), row_group_size=2)
    with ipc.new_file(os.path.join(out, "types.arrow"), SCHEMA) as w:
        w.write_table(table, max_chunksize=3)
    with ipc.new_stream(os.path.join(out, "types.arrows"), SCHEMA) as w:
        w.write_table(table, max_chunksize=3)
    with open(os.path.join(out, "types.ndjson"), "w", encoding="utf-8") as f:
        for i in range(len(ROWS["id"])):
            f.write(json_line(i) + "\n")
    flat = [n for n in SCHEMA.names if n not in ("tags", "point")]
    with open(os.path.join(out, "types.csv"), "w", encoding="utf-8") as f:
        f.write(",".join(flat) + "\n")
        for i in range(len(ROWS["id"])):
            f.write(",".join(csv_field(n, ROWS[n][i]) for n in flat) + "\n")
    expected = [{n: canon(n, ROWS[n][i]) for n in SCHEMA.names} for i in range(len(ROWS["id"]))]
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
