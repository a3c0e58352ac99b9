#!/usr/bin/env python3
"""Registering and relocating at scale (release `pipe`): 10,000 Parquet files registered
into an Iceberg table, and that table — 200 snapshots of 50 files — relocated after a copy.

    relocate_bench.py PIPE_BINARY [--files 10000] [--snapshots 200] [--work /var/tmp/pipe-bench]

1. pyarrow writes the files (20 rows each) under <work>/relocate/src/landing/batch-NNN/.
2. Register: one `pipe run` registers all of them into table `bench.all`; the reference is
   pyiceberg's `add_files` of the same files into another table (same script, same files).
3. Relocate: `bench.hist` gets one snapshot per batch (200 `pipe run`s, timed as a whole);
   `cp -r src dr`; every data file in dr is then replaced by a sparse file of the same size
   (zeros: a relocation that opened one would fail), and `pipe iceberg relocate` registers
   the copy in dr's catalog. The reference is pyiceberg planning a scan of the whole source
   table (reading its manifest list and every manifest once). Then one more batch is
   registered at the source, copied, and relocated incrementally.

Prints seconds and peak RSS of each step and the ratios; checks pyiceberg sees every file of
the copy under dr/ and the same file count as the source. Targets: full relocate < 30 s,
incremental < 2 s.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import run  # noqa: E402

WRITE = """
import os, sys, pyarrow as pa, pyarrow.parquet as pq
root, files, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(files):
    d = os.path.join(root, f"batch-{n // per:03}")
    os.makedirs(d, exist_ok=True)
    ids = list(range(n * 20, n * 20 + 20))
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()),
                             "name": [f"n{i}" for i in ids],
                             "amount": [i * 0.5 for i in ids]}),
                   os.path.join(d, f"part-{n:05}.parquet"))
"""

ADD_FILES = """
import glob, sys
from pyiceberg.catalog.sql import SqlCatalog
import pyarrow as pa
cat = SqlCatalog("ref", uri=f"sqlite:///{sys.argv[1]}/ref.db", warehouse=f"file://{sys.argv[1]}/refwh")
cat.create_namespace_if_not_exists("bench")
schema = pa.schema([("id", pa.int64()), ("name", pa.string()), ("amount", pa.float64())])
t = cat.create_table("bench.ref", schema=schema)
t.add_files(sorted(glob.glob(f"{sys.argv[2]}/*/*.parquet")))
print(len(list(cat.load_table("bench.ref").scan().plan_files())))
"""

PLAN = """
import sys
from pyiceberg.catalog.sql import SqlCatalog
cat = SqlCatalog("pipe", uri=f"sqlite:///{sys.argv[1]}", warehouse="file:///tmp")
files = [t.file.file_path for t in cat.load_table(sys.argv[2]).scan().plan_files()]
print(len(files), sum(1 for f in files if "/dr/" in f))
"""


def sparse_copy_of_data(root):
    """Replace every Parquet file under root by zeros of the same size (a sparse file)."""
    n = 0
    for d, _, names in os.walk(root):
        for name in names:
            if name.endswith(".parquet"):
                path = os.path.join(d, name)
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(0)
                    f.truncate(size)
                n += 1
    return n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("pipe")
    p.add_argument("--files", type=int, default=10000)
    p.add_argument("--snapshots", type=int, default=200)
    p.add_argument("--work", default="/var/tmp/pipe-bench")
    a = p.parse_args()
    py = sys.executable
    work = os.path.join(a.work, "relocate")
    shutil.rmtree(work, ignore_errors=True)
    src, dr = os.path.join(work, "src"), os.path.join(work, "dr")
    landing = os.path.join(src, "landing")
    per = a.files // a.snapshots
    subprocess.run([py, "-c", WRITE, landing, str(a.files), str(per)], check=True)
    toml = os.path.join(HERE, "register.toml")

    # The catalogs live outside the replicated tree (a copy pass must not overwrite them).
    src_db, dr_db = os.path.join(work, "src.db"), os.path.join(work, "dr.db")

    def register(table, files):
        env = dict(os.environ, BENCH_FILES=files, BENCH_DIR=src, BENCH_CATALOG=src_db,
                   BENCH_TABLE=table)
        return run([a.pipe, "run", toml, "--no-progress"], env)

    print(f"{'step':<44}{'seconds':>10}{'peak RSS':>12}")

    def show(step, secs, rss):
        print(f"{step:<44}{secs:>10.2f}{rss:>9.0f} MiB", flush=True)

    secs, rss = register("all", landing)
    show(f"pipe register {a.files} files, 1 run", secs, rss)
    ref_secs, ref_rss = run([py, "-c", ADD_FILES, work, landing])
    show(f"pyiceberg add_files {a.files} files", ref_secs, ref_rss)
    print(f"register / add_files: {secs / ref_secs:.3f}")

    total, peak = 0.0, 0.0
    for b in range(a.snapshots):
        s, r = register("hist", os.path.join(landing, f"batch-{b:03}"))
        total, peak = total + s, max(peak, r)
    show(f"pipe register, {a.snapshots} runs of {per} files", total, peak)

    shutil.copytree(src, dr)
    sparse = sparse_copy_of_data(dr)
    args = [a.pipe, "iceberg", "relocate", f"sqlite://{src_db}#bench.hist",
            "--from", src, "--to", dr, "--register-as", f"sqlite://{dr_db}#bench.hist",
            "--json"]
    secs, rss = run(args)
    show(f"relocate full ({a.snapshots} snapshots)", secs, rss)
    ref_secs, ref_rss = run([py, "-c", PLAN, src_db, "bench.hist"])
    show("pyiceberg plan_files of the source", ref_secs, ref_rss)
    print(f"relocate / plan_files: {secs / ref_secs:.3f}  ({sparse} data files were zeros)")
    out = subprocess.run([py, "-c", PLAN, dr_db, "bench.hist"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1] == str(a.files), f"copy: {out} of {a.files} files under dr/"

    # One more batch at the source, another copy pass, an incremental relocation.
    extra = os.path.join(landing, "batch-new")
    subprocess.run([py, "-c", WRITE, extra, str(per), str(per)], check=True)
    register("hist", extra)
    subprocess.run(["cp", "-r", f"{src}/.", dr], check=True)
    sparse_copy_of_data(dr)
    secs, rss = run(args)
    report = json.loads(subprocess.run(args, capture_output=True, text=True).stdout or "{}")
    show("relocate incremental (1 new snapshot)", secs, rss)
    out = subprocess.run([py, "-c", PLAN, dr_db, "bench.hist"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1] == str(a.files + per), f"copy: {out}"
    print(f"after the incremental run: {report.get('outcome')} (a rerun changes nothing)")


if __name__ == "__main__":
    main()
