#!/usr/bin/env python3
"""Edge-case data for every destination, and its independent read-back.

    edge.py make OUTDIR
        Write extremes.parquet (one table of values at every type's edges: decimal(38,10) at
        ±max and 1e-10, int64 at its ends, NaN/±inf/±0.0/subnormal floats, timestamps at
        0001-01-01, 9999-12-31T23:59:59.999999 and before year 1, dates at both ends and BC,
        a 100 KB string, "" vs NULL, empty vs NULL lists, binary) and expected.json, its
        canonical rows.
    edge.py read duckdb DB TABLE | delta PATH | iceberg CATALOG_DB WAREHOUSE TABLE
        The table's canonical rows (sorted by id) as JSON. Temporal values compare as their
        integers (days, microseconds), so values outside Python's datetime range compare too;
        floats by repr (so -0.0, nan and inf are told apart).
    edge.py delta-filters PATH
        For every filterable column, python deltalake's filtered reads at the column's exact
        minimum and maximum (>=, <=, ==): each must return the rows that hold the value, which
        it does only if the file statistics are correct bounds. JSON: the failures.
    edge.py foreign duckdb DB TABLE | delta PATH | iceberg CATALOG_DB WAREHOUSE TABLE -- ROWS_JSON
        Create the table with the destination's own Python writer (python duckdb,
        write_deltalake, pyiceberg) holding ROWS ({id, name, amount} dicts; amount a decimal
        string): a table pipe did not write.
    edge.py files COLUMN delta PATH | iceberg CATALOG_DB WAREHOUSE TABLE
        The table's live data files as its own library lists them (deltalake's add actions,
        pyiceberg's files table), each with its rows and COLUMN's minimum and maximum read
        from the file's data by pyarrow: [{path, rows, min, max}] sorted by min.
    edge.py duckdb-ext KIND PATH
        The table read by DuckDB's own delta or iceberg extension (KIND `delta` with the table
        directory, `iceberg` with a metadata.json): canonical rows, or {"skipped": why} when
        the extension packages are not installed.
"""
import decimal
import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

decimal.getcontext().prec = 60
D = decimal.Decimal
MAX38 = D("9999999999999999999999999999.9999999999")
MAX18 = D("9999999999999999.99")
DAY_MIN, DAY_MAX = -719162, 2932896  # 0001-01-01, 9999-12-31 as days since 1970
US_MIN = -62135596800000000  # 0001-01-01T00:00:00
US_MAX = 253402300799999999  # 9999-12-31T23:59:59.999999
BC_DAY = -2440588  # 4713 BC (proleptic), the Julian day epoch
BC_US = BC_DAY * 86400 * 1000000
LONG = "x" * 100_000 + "\u00fc"

ROWS = [
    # id, dec38, dec18, i64, f64, f32, ts, tstz, day, s, b, tags
    (1, MAX38, MAX18, 2**63 - 1, float("nan"), float("nan"), US_MAX, US_MAX, DAY_MAX, LONG,
     b"\x00\xff", []),
    (2, -MAX38, -MAX18, -(2**63), float("inf"), -0.0, US_MIN, US_MIN, DAY_MIN, "", b"", None),
    (3, D("0.0000000001"), D("0.01"), 0, float("-inf"), 3.4028234663852886e38, -1, -1, -1,
     None, None, ["a", None]),
    (4, D("12345678901234567890.1234567890"), D("-0.01"), -1, -0.0, 1.0, BC_US, BC_US, BC_DAY,
     "Zürich \U0001f986", b"\x01", ["ü"]),
    (5, D("0"), D("0"), 1, 0.0, 0.0, 0, 0, 0, "NULL", b"NULL", []),
    (6, None, None, None, 5e-324, None, None, None, None, "a,\"b\"\n", None, None),
    (7, D("-0.0000000001"), D("123.45"), 42, 1.7976931348623157e308, -1.5, 1, 1, 1, " ", b" ",
     [""]),
]
NAMES = ["id", "dec38", "dec18", "i64", "f64", "f32", "ts", "tstz", "day", "s", "b", "tags"]


def schema():
    return pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        ("dec38", pa.decimal128(38, 10)), ("dec18", pa.decimal128(18, 2)), ("i64", pa.int64()),
        ("f64", pa.float64()), ("f32", pa.float32()), ("ts", pa.timestamp("us")),
        ("tstz", pa.timestamp("us", tz="UTC")), ("day", pa.date32()), ("s", pa.string()),
        ("b", pa.binary()), ("tags", pa.list_(pa.string())),
    ])


def table():
    cols = list(zip(*ROWS))
    s = schema()
    arrays = []
    for i, field in enumerate(s):
        values = list(cols[i])
        if pa.types.is_timestamp(field.type):
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        elif pa.types.is_date32(field.type):
            arrays.append(pa.array(values, pa.int32()).cast(field.type))
        elif pa.types.is_decimal(field.type):
            step = D(1).scaleb(-field.type.scale)
            arrays.append(pa.array([None if v is None else v.quantize(step) for v in values],
                                   field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=s)


def scalar(v):
    if v is None:
        return None
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, D):
        # Exact digits, without an exponent or trailing zeros past the point.
        text = format(v, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [scalar(x) for x in v]
    return v


def canonical(t):
    """Rows of `t` (any reader's Arrow table) as comparable JSON values, sorted by id."""
    t = t.sort_by([("id", "ascending")])
    out = {}
    for name in t.column_names:
        col = t.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64())
        elif pa.types.is_date(col.type):
            col = col.cast(pa.date32()).cast(pa.int32())
        elif pa.types.is_time(col.type):
            col = col.cast(pa.time64("us")).cast(pa.int64())
        elif pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        elif pa.types.is_large_binary(col.type) or pa.types.is_binary_view(col.type):
            col = col.cast(pa.binary())
        elif pa.types.is_float32(col.type):
            # Compare float32 values as float32 repr, whatever width a reader returns.
            col = col.cast(pa.float64())
        elif pa.types.is_large_list(col.type):
            col = col.cast(pa.list_(pa.string()))
        out[name] = [scalar(v) for v in col.to_pylist()]
    return [{k: out[k][i] for k in out} for i in range(t.num_rows)]


def make(outdir):
    os.makedirs(outdir, exist_ok=True)
    t = table()
    pq.write_table(t, os.path.join(outdir, "extremes.parquet"), row_group_size=3)
    with open(os.path.join(outdir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(canonical(t), f)


def arrow_of(result):
    """A DuckDB result as an Arrow table (the method's name changed in DuckDB 2)."""
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        if hasattr(result, name):
            return getattr(result, name)()
    raise SystemExit("this duckdb cannot return Arrow")


def read(kind, args):
    if kind == "duckdb":
        import duckdb
        con = duckdb.connect(args[0], read_only=True)
        return arrow_of(con.sql(f"SELECT * FROM {args[1]}"))
    if kind == "delta":
        from deltalake import DeltaTable
        return DeltaTable(args[0]).to_pyarrow_table()
    if kind == "files":
        from filesdest import dataset, data_files
        # no data file (no run yet, or a replace that emptied it): no rows
        if not os.path.isdir(args[0]) or not data_files(args[0]):
            return pa.table({"id": pa.array([], pa.int64())})
        return dataset(args[0], "parquet").to_table()
    if kind == "iceberg":
        from ice import catalog
        db, wh, name = args
        return catalog(db, wh).load_table(name).scan().to_arrow()
    raise SystemExit(f"unknown reader {kind}")


def delta_filters(path):
    """Filtered reads at each column's exact bounds must return the rows holding them: every
    column through delta-rs' own engine (DataFusion, `QueryBuilder`), which skips files by
    their statistics; the columns with bounds also through python deltalake's pyarrow reader
    (`to_pyarrow_table(filters=…)`), which skips every file whose statistics lack a bound of
    the filtered column (NULL in its fragment expression), even in tables deltalake writes
    itself. The expected counts come from DuckDB over the same rows."""
    import duckdb
    from deltalake import DeltaTable, QueryBuilder
    dt = DeltaTable(path)
    full = dt.to_pyarrow_table()
    ref = duckdb.connect()
    ref.register("t", full)
    engine = QueryBuilder().register("t", dt)
    failures = []
    for name, sql_type in [("dec38", "Decimal128(38, 10)"), ("dec18", "Decimal128(18, 2)"),
                           ("i64", "Int64"), ("ts", "Timestamp(Microsecond, None)"),
                           ("tstz", 'Timestamp(Microsecond, Some("UTC"))'), ("day", "Date32"),
                           ("s", "Utf8"), ("f64", "Float64"), ("f32", "Float32")]:
        col = full.column(name)
        ints = col
        if pa.types.is_timestamp(col.type):
            ints = col.cast(pa.int64())
        elif pa.types.is_date(col.type):
            ints = col.cast(pa.int32())
        valid = pc.drop_null(ints)
        if pa.types.is_floating(col.type):
            valid = valid.filter(pc.invert(pc.is_nan(valid)))
        for bound in (pc.min(valid).as_py(), pc.max(valid).as_py()):
            if isinstance(bound, float):
                literal = f"arrow_cast('{bound!r}', '{sql_type}')"
            elif isinstance(bound, D):
                literal = f"arrow_cast('{format(bound, 'f')}', '{sql_type}')"
            elif isinstance(bound, str):
                literal = "'" + bound.replace("'", "''") + "'"
            elif sql_type == "Int64":
                literal = str(bound)
            else:
                literal = f"arrow_cast({bound}, '{sql_type}')"
            for op in (">=", "<=", "="):
                sql = f"SELECT count(*) FROM t WHERE {name} {op} {literal}"
                want = ref.execute(_duck(sql, name, col, bound, op)).fetchone()[0]
                got = _count(engine.execute(sql).read_all())
                if got != want:
                    failures.append({"reader": "datafusion", "column": name, "op": op,
                                     "value": str(bound)[:60], "got": got, "want": want})
    stats = _stats(path)
    for name in ["dec38", "dec18", "i64", "s", "ts", "tstz", "day", "f64", "f32"]:
        if name not in stats["minValues"]:
            continue
        col = full.column(name)
        valid = pc.drop_null(col)
        if pa.types.is_floating(col.type):
            valid = valid.filter(pc.is_finite(valid))
        for op, value in ((">=", pc.max(valid).as_py()), ("<=", pc.min(valid).as_py())):
            want = full.filter(_compare(col, op, value)).num_rows
            got = dt.to_pyarrow_table(filters=[(name, op, value)]).num_rows
            if got != want:
                failures.append({"reader": "pyarrow", "column": name, "op": op,
                                 "value": str(value)[:60], "got": got, "want": want})
    return failures


def _duck(sql, name, col, bound, op):
    """`sql` for DuckDB: the same comparison on the same value."""
    if pa.types.is_timestamp(col.type):
        value = f"make_timestamp({bound}::BIGINT)"
        if col.type.tz:
            value = f"({value} AT TIME ZONE 'UTC')"
    elif pa.types.is_date(col.type):
        value = f"(DATE '1970-01-01' + {bound}::INTEGER)"
    elif isinstance(bound, float):
        value = f"'{bound!r}'::{'FLOAT' if pa.types.is_float32(col.type) else 'DOUBLE'}"
    elif isinstance(bound, D):
        value = f"'{format(bound, 'f')}'::DECIMAL({col.type.precision},{col.type.scale})"
    elif isinstance(bound, str):
        value = "'" + bound.replace("'", "''") + "'"
    else:
        value = str(bound)
    return f'SELECT count(*) FROM t WHERE "{name}" {op} {value}'


def _count(table):
    return pa.table(table).column(0)[0].as_py()


def _stats(path):
    """The merged bounds of the table's add actions (one file in these tests)."""
    import glob as g
    out = {"minValues": {}, "maxValues": {}}
    for f in sorted(g.glob(os.path.join(path, "_delta_log", "*.json"))):
        for line in open(f, encoding="utf-8"):
            d = json.loads(line)
            if "add" in d and d["add"].get("stats"):
                st = json.loads(d["add"]["stats"])
                out["minValues"].update(st.get("minValues", {}))
                out["maxValues"].update(st.get("maxValues", {}))
    return out


def _compare(col, op, value):
    scalar_value = pa.scalar(value, col.type)
    return {">=": pc.greater_equal, "<=": pc.less_equal, "==": pc.equal}[op](col, scalar_value)


def duckdb_ext(kind, path):
    """Read with DuckDB's delta/iceberg extensions, loaded from their PyPI packages."""
    import duckdb
    try:
        import importlib.util
        files = {}
        for pkg in ("duckdb_ext_avro", "duckdb_ext_iceberg", "duckdb_ext_delta"):
            spec = importlib.util.find_spec(pkg)
            if spec is None:
                return {"skipped": f"{pkg} is not installed"}
            found = glob.glob(os.path.join(os.path.dirname(spec.origin), "**",
                                           "*.duckdb_extension"), recursive=True)
            files[pkg] = found[0] if found else None
        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        if kind == "delta":
            con.execute(f"LOAD '{files['duckdb_ext_delta']}'")
            t = arrow_of(con.execute(f"SELECT * FROM delta_scan('{path}')"))
        else:
            con.execute(f"LOAD '{files['duckdb_ext_avro']}'")
            con.execute(f"LOAD '{files['duckdb_ext_iceberg']}'")
            t = arrow_of(con.execute(f"SELECT * FROM iceberg_scan('{path}')"))
    except ImportError as e:
        return {"skipped": str(e)}
    return canonical(t)


def foreign(kind, args, rows):
    data = pa.table({
        "id": pa.array([r["id"] for r in rows], pa.int64()),
        "name": pa.array([r["name"] for r in rows], pa.string()),
        "amount": pa.array([None if r["amount"] is None else D(r["amount"]) for r in rows],
                           pa.decimal128(10, 2)),
    })
    if kind == "duckdb":
        import duckdb
        os.makedirs(os.path.dirname(os.path.abspath(args[0])), exist_ok=True)
        # DuckDB 2.x writes storage version 69 by default, which pipe's embedded DuckDB
        # (the 1.5 line) cannot open; a user sharing a file pins the storage version
        con = duckdb.connect()
        con.execute(f"ATTACH '{args[0]}' AS f (STORAGE_VERSION 'v1.4.0')")
        con.register("data", data)
        con.execute(f"CREATE TABLE f.{args[1]} AS SELECT * FROM data")
        con.close()
    elif kind == "delta":
        from deltalake import write_deltalake
        write_deltalake(args[0], data)
    elif kind == "iceberg":
        from ice import catalog
        db, wh, name = args
        if not db.startswith("{"):
            os.makedirs(wh, exist_ok=True)
        cat = catalog(db, wh)
        cat.create_namespace_if_not_exists(name.rsplit(".", 1)[0])
        cat.create_table(name, schema=data.schema).append(data)
    else:
        raise SystemExit(f"unknown writer {kind}")


def files(column, kind, args):
    if kind == "delta":
        from deltalake import DeltaTable
        dt = DeltaTable(args[0])
        actions = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
        paths = [os.path.join(args[0], p) for p in actions["path"]]
    elif kind == "iceberg":
        from ice import catalog
        db, wh, name = args
        listed = catalog(db, wh).load_table(name).inspect.files().to_pydict()
        paths = [p.removeprefix("file://") for p in listed["file_path"]]
    elif kind == "files":
        paths = [os.path.join(d, f) for d, dirs, names in os.walk(args[0])
                 for f in names if f.endswith(".parquet") and "/_pipe" not in d]
    else:
        raise SystemExit(f"no file listing for {kind}")
    out = []
    for path in paths:
        values = pq.read_table(path, columns=[column]).column(0)
        meta = pq.ParquetFile(path).metadata
        # the columns written with a dictionary (in any row group)
        dictionary = sorted({meta.row_group(g).column(c).path_in_schema
                             for g in range(meta.num_row_groups) for c in range(meta.num_columns)
                             if meta.row_group(g).column(c).has_dictionary_page})
        out.append({"path": path, "rows": len(values), "dictionary": dictionary,
                    "min": scalar(pc.min(values).as_py()), "max": scalar(pc.max(values).as_py())})
    return sorted(out, key=lambda f: (f["min"] is None, f["min"]))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make":
        make(args[0])
        print("{}")
    elif cmd == "read":
        print(json.dumps(canonical(read(args[0], args[1:]))))
    elif cmd == "delta-filters":
        print(json.dumps(delta_filters(args[0])))
    elif cmd == "foreign":
        split = args.index("--")
        foreign(args[0], args[1:split], json.loads(args[split + 1]))
        print("{}")
    elif cmd == "files":
        print(json.dumps(files(args[0], args[1], args[2:])))
    elif cmd == "duckdb-ext":
        print(json.dumps(duckdb_ext(args[0], args[1])))
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
