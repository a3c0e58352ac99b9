#!/usr/bin/env python3
"""Parquet → Delta benchmark: pipe against python deltalake (delta-rs) in one script.

    delta_bench.py PIPE_BINARY [--rows 1000000 5000000] [--merge-rows 500000]
                   [--work /var/tmp/pipe-bench] [--repeat 3]

For each row count, the generated orders (cached as Parquet, shared with iceberg_bench.py)
are loaded
  - by pipe (release build) into a fresh Delta table (append);
  - by python deltalake's `write_deltalake` of the same data read into Arrow (the reference;
    zstd level 3 like pipe's default, so both write the same Parquet);
each a separate process whose peak RSS is measured (wait4 rusage). For the largest count,
--merge-rows changed orders (60% updates of existing keys, 40% new keys) are then merged
into both tables: pipe mode = "merge" against deltalake's `DeltaTable.merge` (update all
when matched, insert all when not). Both merged tables are read back with deltalake and must
have the same count and checksum.
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import run  # noqa: E402  (one process, timed, peak RSS from wait4)
from iceberg_bench import fresh, median, parquet_of  # noqa: E402

# The same Parquet codec as pipe's default (zstd level 3): equal work per row written.
DELTALAKE = """
import sys, pyarrow.parquet as pq
from deltalake import DeltaTable, WriterProperties, write_deltalake
mode, parquet, path = sys.argv[1:4]
data = pq.read_table(parquet)
wp = WriterProperties(compression="ZSTD", compression_level=3)
if mode == "append":
    write_deltalake(path, data, mode="append", writer_properties=wp)
else:
    t = DeltaTable(path)
    (t.merge(data, "t.o_orderkey = s.o_orderkey", source_alias="s", target_alias="t",
             writer_properties=wp)
      .when_matched_update_all().when_not_matched_insert_all().execute())
"""

CHECK = """
import sys, duckdb
from deltalake import DeltaTable
orders = DeltaTable(sys.argv[1]).to_pyarrow_table()
print(duckdb.sql("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
  "o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment, o_updated_at)) "
  "FROM orders").fetchall()[0])
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--merge-rows", type=int, default=500_000)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    ap.add_argument("--repeat", type=int, default=3, help="runs per load and merge; the median is printed")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    print(f"{'load':<34}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}")

    def show(name, rows, secs, rss):
        print(f"{name:<34}{rows:>10}{secs:>10.2f}{rows / secs:>12,.0f}{rss:>9.0f} MiB", flush=True)

    pipe_dir = os.path.join(work, "delta_pipe")
    py_dir = os.path.join(work, "delta_py")
    for rows in a.rows:
        parquet = parquet_of(py, work, rows)
        timings = []
        for _ in range(a.repeat):
            fresh(py_dir)
            timings.append(run([py, "-c", DELTALAKE, "append", parquet, py_dir]))
        ref_s, ref_rss = median(timings)
        show("deltalake write_deltalake (ref)", rows, ref_s, ref_rss)

        timings = []
        for _ in range(a.repeat):
            fresh(pipe_dir)
            env = dict(os.environ, BENCH_PARQUET=parquet, BENCH_DIR=pipe_dir)
            timings.append(run([a.pipe, "run", os.path.join(HERE, "delta_append.toml"), "--no-progress"], env))
        pipe_s, pipe_rss = median(timings)
        show("pipe append → delta", rows, pipe_s, pipe_rss)
        print(f"  pipe append speed / write_deltalake: {ref_s / pipe_s:.2f}x")

    rows = a.rows[-1]
    update = parquet_of(py, work, a.merge_rows, ("--update-of", str(rows)))
    # Each repetition merges into a fresh copy of the table the last append wrote.
    bases = {}
    for d in (pipe_dir, py_dir):
        bases[d] = d + "_base"
        fresh(bases[d])
        os.rename(d, bases[d])

    def merge_into(d, cmd, env=None):
        timings = []
        for _ in range(a.repeat):
            fresh(d)
            shutil.copytree(bases[d], d)
            timings.append(run(cmd, env))
        return median(timings)

    env = dict(os.environ, BENCH_PARQUET=update, BENCH_DIR=pipe_dir)
    merge_s, merge_rss = merge_into(
        pipe_dir, [a.pipe, "run", os.path.join(HERE, "delta_merge.toml"), "--no-progress"], env)
    show(f"pipe merge into {rows // 1_000_000}M", a.merge_rows, merge_s, merge_rss)
    up_s, up_rss = merge_into(py_dir, [py, "-c", DELTALAKE, "merge", update, py_dir])
    show(f"deltalake merge into {rows // 1_000_000}M", a.merge_rows, up_s, up_rss)
    print(f"  pipe merge speed / DeltaTable.merge: {up_s / merge_s:.2f}x")
    checks = set()
    for d in (pipe_dir, py_dir):
        out = subprocess.run([py, "-c", CHECK, d], capture_output=True, text=True, check=True).stdout.strip()
        checks.add(out)
    if len(checks) != 1:
        sys.exit(f"the merged tables differ: {checks}")
    print(f"  both merged tables: (count, checksum) = {checks.pop()}")


if __name__ == "__main__":
    main()
