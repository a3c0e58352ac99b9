#!/usr/bin/env python3
"""Scale-out benchmark: one backfill run by 1, 2 and 4 `pipe worker` processes, in one script.

    workers_bench.py PIPE_BINARY [--rows 5000000] [--units 50] [--overhead-units 200]

The source is pg_bench's TPC-H-like orders table (bench_orders_<rows>, kept for reruns); the
state store is the same PostgreSQL; the destination a fresh local Delta table per run.
  - reference: one `pipe run` of the whole table (no windows, parallelism 1);
  - the same --units windows of o_orderkey by `pipe backfill --parallel 1` in one process
    (what a window costs without coordination);
  - `pipe backfill --workers` registering --units windows, then 1, 2 and 4 `pipe worker`
    processes, and 4 workers on units five times larger (wall time from registration to the
    last worker's exit; peak RSS of the largest worker, from wait4);
  - coordination overhead per unit: --overhead-units windows of a 1,000-row table into the
    null destination, once by `pipe backfill --parallel 1` in one process and once by one
    `pipe worker` — the difference per unit is what claiming, checking, renewing and
    recording a unit costs.
Every Delta table is checked by the deltalake package: count and sum(o_orderkey) equal
PostgreSQL's.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

from pg_bench import CREATE, PG_URL, psql, run

PIPELINE = """
name = "{name}"
[source]
type = "postgres"
url = "{url}"
table = "{t}"
cursor = "o_orderkey"
{parallelism}
[destination]
{dest}
[state]
url = "{url}"
lease_secs = 60
"""
DELTA = 'type = "delta"\npath = "{path}"\nmode = "append"'
NULL = 'type = "null"'

CHECK = """
import sys, deltalake, pyarrow.compute as pc
t = deltalake.DeltaTable(sys.argv[1]).to_pyarrow_table(columns=["o_orderkey"])
print(t.num_rows, pc.sum(t["o_orderkey"]).as_py())
"""


def forget(name):
    """Drop what an earlier run of the bench left in the state store (if it has the tables)."""
    for table in ("pipe_units", "pipe_runs", "pipe_state", "pipe_leases"):
        if psql(f"SELECT to_regclass('{table}') IS NOT NULL") == "t":
            psql(f"DELETE FROM {table} WHERE pipeline = '{name}'")


def pipeline(work, name, t, dest, parallelism=""):
    path = os.path.join(work, f"{name}.toml")
    with open(path, "w") as f:
        f.write(PIPELINE.format(name=name, url=PG_URL, t=t, dest=dest, parallelism=parallelism))
    return path


def workers(pipe, toml, n):
    """Start n workers (stderr to files); wait for all; (seconds, largest peak RSS in MiB)."""
    start = time.monotonic()
    logs = [open(f"{toml}.worker{i}.log", "w+") for i in range(n)]
    procs = [subprocess.Popen([pipe, "worker", toml, "--json"], stdout=subprocess.DEVNULL,
                              stderr=log) for log in logs]
    rss = 0.0
    for p, log in zip(procs, logs):
        _, status, usage = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            sys.exit(f"a worker failed:\n{log.read()}")
        rss = max(rss, usage.ru_maxrss / 1024)
    return time.monotonic() - start, rss


def check_delta(path, want):
    got = subprocess.run([sys.executable, "-c", CHECK, path], check=True, capture_output=True,
                         text=True).stdout.split()
    if got != want.split("|"):
        sys.exit(f"{path}: deltalake reads {got}, PostgreSQL has {want}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--units", type=int, default=50)
    ap.add_argument("--overhead-units", type=int, default=200)
    ap.add_argument("--work", default="/var/tmp/pipe-bench/workers")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    n = a.rows
    t = f"bench_orders_{n}"
    psql(CREATE.format(t=t, n=n))
    want = psql(f"SELECT count(*) || '|' || sum(o_orderkey) FROM {t}")
    print(f"{'load (Postgres → Delta)':<36}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}")

    lake = os.path.join(a.work, "ref")
    toml = pipeline(a.work, "wb_ref", t, DELTA.format(path=lake), "parallelism = 1")
    forget("wb_ref")
    ref, rss = run([a.pipe, "run", toml, "--no-progress"])
    check_delta(lake, want)
    print(f"{'pipe run (reference)':<36}{n:>10}{ref:>10.2f}{n / ref:>12,.0f}{rss:>9.0f} MiB")

    # The same windows in one process: what a window costs without any coordination.
    name = "wb_inproc_delta"
    lake = os.path.join(a.work, name)
    toml = pipeline(a.work, name, t, DELTA.format(path=lake))
    forget(name)
    seconds, rss = run([a.pipe, "backfill", toml, "--from", "1", "--to", str(n + 1), "--step",
                        str(-(-n // a.units)), "--parallel", "1", "--json"])
    check_delta(lake, want)
    label = f"pipe backfill --parallel 1, {a.units} win"
    print(f"{label:<36}{n:>10}{seconds:>10.2f}{n / seconds:>12,.0f}{rss:>9.0f} MiB"
          f"  {ref / seconds:.2f}x")

    for w, units in [(1, a.units), (2, a.units), (4, a.units), (4, a.units // 5)]:
        name = f"wb_w{w}_{units}"
        lake = os.path.join(a.work, name)
        toml = pipeline(a.work, name, t, DELTA.format(path=lake))
        forget(name)
        start = time.monotonic()
        run([a.pipe, "backfill", toml, "--from", "1", "--to", str(n + 1), "--step",
             str(-(-n // units)), "--workers", "--json"])
        _, rss = workers(a.pipe, toml, w)
        seconds = time.monotonic() - start
        check_delta(lake, want)
        label = f"{w} worker{'s' if w > 1 else ''}, {units} units"
        print(f"{label:<36}{n:>10}{seconds:>10.2f}{n / seconds:>12,.0f}{rss:>9.0f} MiB"
              f"  {ref / seconds:.2f}x")
    print(f"  checked by deltalake: count, sum(o_orderkey) = {want.replace('|', ', ')}")

    # Coordination overhead: tiny units into the null destination, in-process vs one worker.
    small, u = "bench_orders_small", a.overhead_units
    psql(f"CREATE TABLE IF NOT EXISTS {small} AS SELECT * FROM {t} WHERE o_orderkey <= 1000")
    args = ["--from", "1", "--to", "1001", "--step", str(-(-1000 // u))]
    inproc = pipeline(a.work, "wb_inproc", small, NULL)
    forget("wb_inproc")
    one, _ = run([a.pipe, "backfill", inproc, *args, "--parallel", "1", "--json"])
    shared = pipeline(a.work, "wb_shared", small, NULL)
    forget("wb_shared")
    start = time.monotonic()
    run([a.pipe, "backfill", shared, *args, "--workers", "--json"])
    workers(a.pipe, shared, 1)
    worker = time.monotonic() - start
    units = int(psql("SELECT count(*) FROM pipe_units WHERE pipeline = 'wb_shared' AND status = 'done'"))
    if units != u:
        sys.exit(f"{units} of {u} units done")
    print(f"coordination: {u} units into null: in-process backfill {one / u * 1000:.1f} ms/unit, "
          f"one worker {worker / u * 1000:.1f} ms/unit; overhead {(worker - one) / u * 1000:.1f} ms/unit")


if __name__ == "__main__":
    main()
