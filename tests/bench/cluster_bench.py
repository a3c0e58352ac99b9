#!/usr/bin/env python3
"""Clustered merges and Iceberg compaction, against today's round-robin layout, in one script.

    cluster_bench.py PIPE_BINARY [--rows 5000000] [--changed 500000] [--target-mb 16]
                     [--work /var/tmp/pipe-bench] [--formats iceberg delta]
                     [--uniform-runs 5] [--today EARLIER_PIPE_BINARY] [--no-compaction]

For Iceberg and Delta, two tables of the same `rows` orders (keys 0, 10, 20, …, arriving in a
shuffled order) are loaded by pipe with mode = "merge":
  - reference: `cluster_by = []`, rows written as they come by round-robin writers (every file
    spans the whole key range; what pipe did before clustering);
  - clustered: the default, rows sorted by the merge key into files of disjoint key ranges.
Both use `target_file_size_mb` = --target-mb. Then into each table, as separate processes
(time and peak RSS from wait4):
  - a narrow merge: `changed` rows whose keys lie in 1% of the key range (every existing key
    there updated, the rest new keys between them);
  - a uniform merge: `changed` rows spread over the whole range (60% updates, 40% new keys),
    --uniform-runs times per layout, the layouts taking turns, each from a copy of the
    table as the narrow merge left it: the ratio of each side-by-side pair, and their median,
    for elapsed time and for CPU time (user + system: the work done, steadier on a shared VM).
With --today, a third table goes through the same steps with an earlier pipe build (as that
build writes it; no `cluster_by` key): the merges as they ran before clustering, beside the
current build's reference layout.
For each merge the bytes of the data files it replaced are measured from the table's own
listing (deltalake add actions, pyiceberg files table) before and after, as a share of the
table. Every layout must end with the same count and checksum (read back by the format's
Python library, summed in DuckDB).

Then Iceberg compaction: `rows` orders loaded as ~1 MB files (cluster_by = [], the table's
sort order o_orderkey) are compacted by `pipe table optimize` into target-size files,
sorted through the external sort: rows/s, peak RSS, files before and after, same checksum.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import run, run_cpu  # noqa: E402  (one process: time, peak RSS and CPU from wait4)

GENERATE = r"""
import datetime as dt, random, sys
import pyarrow as pa, pyarrow.parquet as pq
out, kind, rows, changed, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), 7
rng = random.Random(seed)
span = rows * 10
if kind == "base":
    keys = list(range(0, span, 10))
    rng.shuffle(keys)
elif kind == "narrow":
    lo = span // 2
    width = span // 100
    keys = [k for k in range(lo, lo + width)][:changed]
    rng.shuffle(keys)
else:
    updates = rng.sample(range(0, span, 10), changed * 6 // 10)
    inserts = [k * 10 + 5 for k in rng.sample(range(rows), changed - len(updates))]
    keys = updates + inserts
    rng.shuffle(keys)
version = 0 if kind == "base" else 1
words = "furiously special foxes haggle carefully final deposits sleep quickly blithely".split()
status = ["O", "F", "P"]
prio = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"]
epoch = dt.date(1992, 1, 1)
t0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
table = pa.table({
    "o_orderkey": pa.array(keys, pa.int64()),
    "o_custkey": pa.array([(k * 7919) % 150000 for k in keys], pa.int64()),
    "o_orderstatus": pa.array([status[(k + version) % 3] for k in keys]),
    "o_totalprice": pa.array([(k * 37 + version) % 5_000_000 for k in keys], pa.int64())
        .cast(pa.decimal128(19, 0)).cast(pa.decimal128(15, 2)),
    "o_orderdate": pa.array([epoch + dt.timedelta(days=k % 2405) for k in keys], pa.date32()),
    "o_orderpriority": pa.array([prio[k % 5] for k in keys]),
    "o_clerk": pa.array([f"Clerk#{k % 1000:09d}" for k in keys]),
    "o_comment": pa.array([" ".join(words[(k >> i) % 10] for i in range(0, 18, 3)) for k in keys]),
    "o_updated_at": pa.array([t0 + dt.timedelta(seconds=k % 86400 + version * 86400) for k in keys],
                             pa.timestamp("us", tz="UTC")),
})
pq.write_table(table, out, row_group_size=1 << 17)
"""

FILES = r"""
import json, os, sys
import pyarrow as pa
kind, where = sys.argv[1], sys.argv[2:]
if kind == "delta":
    from deltalake import DeltaTable
    a = pa.table(DeltaTable(where[0]).get_add_actions(flatten=True)).to_pydict()
    files = dict(zip(a["path"], a["size_bytes"]))
else:
    from pyiceberg.catalog.sql import SqlCatalog
    db, wh, name = where
    cat = SqlCatalog("pipe", uri=f"sqlite:///{db}", warehouse=f"file://{wh}")
    f = cat.load_table(name).inspect.files().to_pydict()
    files = dict(zip(f["file_path"], f["file_size_in_bytes"]))
print(json.dumps(files))
"""

CHECKSUM = r"""
import sys, duckdb
kind, where = sys.argv[1], sys.argv[2:]
if kind == "delta":
    from deltalake import DeltaTable
    t = DeltaTable(where[0]).to_pyarrow_table()
else:
    from pyiceberg.catalog.sql import SqlCatalog
    db, wh, name = where
    t = SqlCatalog("pipe", uri=f"sqlite:///{db}", warehouse=f"file://{wh}").load_table(name).scan().to_arrow()
con = duckdb.connect()
con.register("t", t)
print(con.execute("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
                  "o_orderdate, o_orderpriority, o_clerk, o_comment, o_updated_at)) FROM t").fetchone())
"""


def py(args, script):
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"python helper failed:\n{out.stderr}")
    return out.stdout.strip()


def parquet(work, kind, rows, changed):
    path = os.path.join(work, f"cluster-{kind}-{rows}-{changed}.parquet")
    if not os.path.exists(path):
        py([path, kind, str(rows), str(changed)], GENERATE)
    return path


def pipeline(work, fmt, name, layout, target_mb, extra=""):
    """A pipeline file loading $BENCH_PARQUET into table `name` by merge."""
    path = os.path.join(work, f"{name}.toml")
    cluster = "cluster_by = []\n" if layout == "reference" else ""
    if fmt == "iceberg":
        dest = (f'type = "iceberg"\ncatalog = {{ type = "sql", uri = "sqlite://{work}/{name}/catalog.db", '
                f'warehouse = "{work}/{name}/wh" }}\ntable = "sales.orders"\n')
    else:
        dest = f'type = "delta"\npath = "{work}/{name}/lake"\n'
    with open(path, "w") as f:
        f.write(f'name = "{name}"\n[source]\ntype = "file"\npath = "${{BENCH_PARQUET}}"\n'
                f'[destination]\n{dest}mode = "merge"\nmerge_keys = ["o_orderkey"]\n'
                f'target_file_size_mb = {target_mb}\n{cluster}{extra}'
                f'[state]\npath = "{work}/{name}/state.db"\n')
    return path


def where(work, fmt, name):
    if fmt == "iceberg":
        return ["iceberg", f"{work}/{name}/catalog.db", f"{work}/{name}/wh", "sales.orders"]
    return ["delta", f"{work}/{name}/lake"]


def files(work, fmt, name):
    return json.loads(py(where(work, fmt, name), FILES))


def pipe_run(pipe, toml, data):
    """Elapsed seconds, peak RSS (MiB) and CPU seconds of one `pipe run`."""
    env = dict(os.environ, BENCH_PARQUET=data)
    return run_cpu([pipe, "run", toml, "--no-progress"], env)


def show(what, rows, secs, rss, extra=""):
    print(f"  {what:<44} {rows / secs:>12,.0f} rows/s {secs:>8.2f} s {rss:>7.0f} MiB{extra}", flush=True)


def merges(a, fmt):
    print(f"\n{fmt}: {a.rows:,} orders, merges of {a.changed:,} changed rows, "
          f"target_file_size_mb = {a.target_mb}")
    base = parquet(a.work, "base", a.rows, 0)
    layouts = {"reference": a.pipe, "clustered": a.pipe}
    if a.today:
        layouts["today"] = a.today
    results, tables = {}, {}
    for layout, pipe in layouts.items():
        name = f"cluster-{fmt}-{layout}"
        shutil.rmtree(os.path.join(a.work, name), ignore_errors=True)
        toml = pipeline(a.work, fmt, name, layout, a.target_mb)
        secs, rss, _ = pipe_run(pipe, toml, base)
        listed = files(a.work, fmt, name)
        show(f"{layout}: load", a.rows, secs, rss, f"   {len(listed)} files")
        results[layout] = merge(a, fmt, pipe, name, toml, layout, "narrow")[:2]
        # every uniform merge starts from the table as the narrow merge left it
        pristine = os.path.join(a.work, f"{name}-pristine")
        shutil.rmtree(pristine, ignore_errors=True)
        shutil.copytree(os.path.join(a.work, name), pristine)
        tables[layout] = (pipe, name, toml, pristine)
    # The uniform merges take turns between the layouts (this VM's speed drifts by up to 25%
    # within minutes): each ratio compares runs made side by side.
    times = {layout: [] for layout in layouts}
    cpus = {layout: [] for layout in layouts}
    for i in range(a.uniform_runs):
        for layout, (pipe, name, toml, pristine) in tables.items():
            if i > 0:
                shutil.rmtree(os.path.join(a.work, name))
                shutil.copytree(pristine, os.path.join(a.work, name))
            secs, _, cpu = merge(a, fmt, pipe, name, toml, layout, "uniform", shown=i == 0)
            times[layout].append(secs)
            cpus[layout].append(cpu)
    checks = set()
    for _, name, _, pristine in tables.values():
        checks.add(py(where(a.work, fmt, name), CHECKSUM))
        shutil.rmtree(pristine)
    if len(checks) != 1:
        sys.exit(f"{fmt}: the layouts' tables differ: {checks}")
    print(f"  all tables: (count, checksum) = {checks.pop()}")
    for layout in times:
        print(f"  uniform merges, {layout}: {' / '.join(f'{t:.2f}' for t in times[layout])} s; "
              f"CPU {' / '.join(f'{t:.2f}' for t in cpus[layout])} s")
    new_n, new_share = results["clustered"]
    for base_layout in [layout for layout in layouts if layout != "clustered"]:
        ref_n, ref_share = results[base_layout]
        ratios = [c / r for r, c in zip(times[base_layout], times["clustered"])]
        cpu_ratios = [c / r for r, c in zip(cpus[base_layout], cpus["clustered"])]
        print(f"  against {base_layout}: narrow merge {ref_n / new_n:.1f}x faster, rewrote "
              f"{new_share:.1%} ({base_layout} {ref_share:.1%}); uniform merge clustered / "
              f"{base_layout} {' / '.join(f'{r:.2f}' for r in ratios)}, "
              f"median {statistics.median(ratios):.2f}; CPU median "
              f"{statistics.median(cpu_ratios):.2f}")


def merge(a, fmt, pipe, name, toml, layout, kind, shown=True):
    """One merge of `kind` into table `name`: its time, the share of the table it rewrote and
    its CPU seconds."""
    before = files(a.work, fmt, name)
    secs, rss, cpu = pipe_run(pipe, toml, parquet(a.work, kind, a.rows, a.changed))
    after = files(a.work, fmt, name)
    replaced = sum(size for path, size in before.items() if path not in after)
    share = replaced / sum(before.values())
    if shown:
        show(f"{layout}: {kind} merge", a.changed, secs, rss,
             f"   rewrote {share:6.1%} of the table "
             f"({len(set(before) - set(after))} of {len(before)} files)")
    return secs, share, cpu


def compaction(a):
    print(f"\niceberg compaction: {a.rows:,} orders in ~1 MB files, sorted by o_orderkey")
    name = "cluster-compact"
    shutil.rmtree(os.path.join(a.work, name), ignore_errors=True)
    toml = pipeline(a.work, "iceberg", name, "reference", 1, 'sort_order = ["o_orderkey"]\n')
    pipe_run(a.pipe, toml, parquet(a.work, "base", a.rows, 0))
    before = files(a.work, "iceberg", name)
    check = py(where(a.work, "iceberg", name), CHECKSUM)
    secs, rss = run([a.pipe, "table", "optimize", toml, "--target-size-mb", "128"],
                    dict(os.environ, BENCH_PARQUET="unused"))
    after = files(a.work, "iceberg", name)
    show("pipe table optimize", a.rows, secs, rss, f"   {len(before)} files -> {len(after)}")
    if py(where(a.work, "iceberg", name), CHECKSUM) != check:
        sys.exit("compaction changed the rows")
    print(f"  rows identical: (count, checksum) = {check}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--changed", type=int, default=500_000)
    ap.add_argument("--target-mb", type=int, default=16)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    ap.add_argument("--formats", nargs="+", default=["iceberg", "delta"])
    ap.add_argument("--no-compaction", action="store_true")
    ap.add_argument("--uniform-runs", type=int, default=5,
                    help="uniform merges per layout, taking turns, each from the same table")
    ap.add_argument("--today", metavar="PIPE_BINARY",
                    help="also run the merges with this (earlier) pipe build, round-robin layout")
    a = ap.parse_args()
    a.pipe = os.path.abspath(a.pipe)
    a.today = a.today and os.path.abspath(a.today)
    os.makedirs(a.work, exist_ok=True)
    for fmt in a.formats:
        merges(a, fmt)
    if not a.no_compaction:
        compaction(a)


if __name__ == "__main__":
    random.seed(0)
    main()
