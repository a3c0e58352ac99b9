#!/usr/bin/env python3
"""Parquet → Iceberg benchmark: pipe against pyiceberg 0.12 and DuckDB, in one script.

    iceberg_bench.py PIPE_BINARY [--rows 1000000 5000000] [--merge-rows 500000]
                     [--work /var/tmp/pipe-bench] [--repeat 1]

For each row count, the generated orders (cached as Parquet) are loaded
  - by python duckdb into its own table (CREATE TABLE AS SELECT * FROM read_parquet): the
    reference rate;
  - by pipe (release build) into a fresh Iceberg table of a SQLite catalog (append);
  - by pyiceberg's own `Table.append` of the same Arrow data into a fresh table;
each a separate process whose peak RSS is measured (wait4 rusage). For the largest count,
--merge-rows changed orders (60% updates of existing keys, 40% new keys) are then merged
into both 5M tables: `pipe` mode = "merge" against pyiceberg's `Table.upsert`. Both Iceberg
tables are read back with pyiceberg and must have the same count and checksum.
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import run  # noqa: E402  (one process, timed, peak RSS from wait4)

TO_PARQUET = """
import sys, pyarrow as pa, pyarrow.csv as pc, pyarrow.parquet as pq
types = {"o_orderkey": pa.int64(), "o_custkey": pa.int64(), "o_orderstatus": pa.string(),
         "o_totalprice": pa.decimal128(15, 2), "o_orderdate": pa.date32(),
         "o_orderpriority": pa.string(), "o_clerk": pa.string(), "o_shippriority": pa.int64(),
         "o_comment": pa.string(), "o_updated_at": pa.timestamp("us", tz="UTC")}
t = pc.read_csv(sys.argv[1], convert_options=pc.ConvertOptions(column_types=types))
pq.write_table(t, sys.argv[2], row_group_size=1 << 17)
"""

DUCKDB = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute(f"CREATE TABLE orders AS SELECT * FROM read_parquet('{sys.argv[1]}')")
con.close()
"""

PYICEBERG = """
import sys, pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
mode, parquet, db, wh = sys.argv[1:5]
cat = SqlCatalog("pipe", uri=f"sqlite:///{db}", warehouse=f"file://{wh}")
data = pq.read_table(parquet)
cat.create_namespace_if_not_exists("sales")
if mode == "append":
    table = cat.create_table("sales.orders", schema=data.schema)
    table.append(data)
else:
    table = cat.load_table("sales.orders")
    table.upsert(data.cast(table.schema().as_arrow()), join_cols=["o_orderkey"])
"""

CHECK = """
import sys, duckdb
from pyiceberg.catalog.sql import SqlCatalog
db, wh = sys.argv[1:3]
t = SqlCatalog("pipe", uri=f"sqlite:///{db}", warehouse=f"file://{wh}").load_table("sales.orders")
orders = t.scan().to_arrow()
print(duckdb.sql("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
  "o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment, o_updated_at)) "
  "FROM orders").fetchall()[0])
"""


def fresh(*paths):
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def parquet_of(py, work, rows, extra=()):
    name = f"orders_{rows}" + ("_update" if extra else "")
    pq_path = os.path.join(work, name + ".parquet")
    if os.path.exists(pq_path):
        return pq_path
    csv_path = os.path.join(work, name + ".csv")
    if not os.path.exists(csv_path):
        subprocess.run([py, os.path.join(HERE, "gen_orders.py"), csv_path + ".tmp", str(rows), *extra], check=True)
        os.rename(csv_path + ".tmp", csv_path)
    subprocess.run([py, "-c", TO_PARQUET, csv_path, pq_path + ".tmp"], check=True)
    os.rename(pq_path + ".tmp", pq_path)
    return pq_path


def median(results):
    secs = sorted(r[0] for r in results)[len(results) // 2]
    return secs, max(r[1] for r in results)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--merge-rows", type=int, default=500_000)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    ap.add_argument("--repeat", type=int, default=1, help="runs per load; the median is printed")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    print(f"{'load':<34}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}")

    def show(name, rows, secs, rss):
        print(f"{name:<34}{rows:>10}{secs:>10.2f}{rows / secs:>12,.0f}{rss:>9.0f} MiB", flush=True)

    pipe_dir = os.path.join(work, "ice_pipe")
    py_dir = os.path.join(work, "ice_py")
    for rows in a.rows:
        parquet = parquet_of(py, work, rows)
        db = os.path.join(work, "ice_ref.duckdb")
        timings = []
        for _ in range(a.repeat):
            fresh(db)
            timings.append(run([py, "-c", DUCKDB, parquet, db]))
        duck_s, duck_rss = median(timings)
        show("duckdb read_parquet (reference)", rows, duck_s, duck_rss)

        timings = []
        for _ in range(a.repeat):
            fresh(pipe_dir)
            os.makedirs(pipe_dir)
            env = dict(os.environ, BENCH_PARQUET=parquet, BENCH_DIR=pipe_dir)
            toml = os.path.join(HERE, "iceberg_append.toml")
            timings.append(run([a.pipe, "run", toml, "--no-progress"], env))
        pipe_s, pipe_rss = median(timings)
        show("pipe append → iceberg", rows, pipe_s, pipe_rss)

        timings = []
        for _ in range(a.repeat):
            fresh(py_dir)
            os.makedirs(os.path.join(py_dir, "wh"))
            cmd = [py, "-c", PYICEBERG, "append", parquet, os.path.join(py_dir, "catalog.db"), os.path.join(py_dir, "wh")]
            timings.append(run(cmd))
        pyi_s, pyi_rss = median(timings)
        show("pyiceberg append", rows, pyi_s, pyi_rss)
        print(f"  pipe append speed / duckdb: {duck_s / pipe_s:.2f}x   / pyiceberg: {pyi_s / pipe_s:.2f}x")

    rows = a.rows[-1]
    update = parquet_of(py, work, a.merge_rows, ("--update-of", str(rows)))
    env = dict(os.environ, BENCH_PARQUET=update, BENCH_DIR=pipe_dir)
    merge_s, merge_rss = run([a.pipe, "run", os.path.join(HERE, "iceberg_merge.toml"), "--no-progress"], env)
    show(f"pipe merge into {rows // 1_000_000}M", a.merge_rows, merge_s, merge_rss)
    cmd = [py, "-c", PYICEBERG, "upsert", update, os.path.join(py_dir, "catalog.db"), os.path.join(py_dir, "wh")]
    up_s, up_rss = run(cmd)
    show(f"pyiceberg upsert into {rows // 1_000_000}M", a.merge_rows, up_s, up_rss)
    print(f"  pipe merge speed / pyiceberg upsert: {up_s / merge_s:.2f}x")
    checks = set()
    for d in (pipe_dir, py_dir):
        out = subprocess.run([py, "-c", CHECK, os.path.join(d, "catalog.db"), os.path.join(d, "wh")],
                             capture_output=True, text=True, check=True).stdout.strip()
        checks.add(out)
    if len(checks) != 1:
        sys.exit(f"the merged tables differ: {checks}")
    print(f"  both merged tables: (count, checksum) = {checks.pop()}")


if __name__ == "__main__":
    main()
