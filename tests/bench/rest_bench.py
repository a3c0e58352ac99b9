#!/usr/bin/env python3
"""REST catalog overhead: the 5M-row append and the 500k merge of iceberg_bench.py, through
`pipe serve catalog` (SQLite behind it) and straight to the SQL catalog, in one script.

    rest_bench.py PIPE_BINARY [--rows 5000000] [--merge-rows 500000] [--repeat 3]
                  [--work /var/tmp/pipe-bench]

Each repeat loads a fresh table both ways, taking turns (SQL then REST), and merges the
changed orders into each; the server is started fresh for each REST pair and its own CPU is
not counted (it only answers a handful of calls per run). Prints every run, the medians and
the REST / SQL ratio of each, and checks both merged tables have the same count and
checksum (read back by pyiceberg: SqlCatalog for one, RestCatalog for the other).
"""
import argparse
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import run  # noqa: E402
from iceberg_bench import fresh, parquet_of  # noqa: E402

CHECK = """
import sys, json, duckdb
from pyiceberg.catalog import load_catalog
props = json.loads(sys.argv[1])
kind = props.pop("type")
if kind == "sql":
    from pyiceberg.catalog.sql import SqlCatalog
    cat = SqlCatalog("pipe", **props)
else:
    from pyiceberg.catalog.rest import RestCatalog
    cat = RestCatalog("rest", **props)
orders = cat.load_table("sales.orders").scan().to_arrow()
print(duckdb.sql("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
  "o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment, o_updated_at)) "
  "FROM orders").fetchall()[0])
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(pipe, directory):
    """`pipe serve catalog` over a SQLite file in `directory`; returns (process, uri)."""
    port = free_port()
    proc = subprocess.Popen(
        [pipe, "serve", "catalog", "--catalog", f"sqlite://{directory}/catalog.db",
         "--warehouse", f"{directory}/wh", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("pipe serve catalog did not start")


def median(values):
    return sorted(values)[len(values) // 2]


def orders_inputs():
    """The arguments every catalog comparison takes, and its inputs: the orders Parquet file
    and the changed orders merged into it. Returns (args, work dir, python, parquet, update)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--merge-rows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    py = sys.executable
    parquet = parquet_of(py, work, a.rows)
    update = parquet_of(py, work, a.merge_rows, ("--update-of", str(a.rows)))
    return a, work, py, parquet, update


def timer(kinds):
    """Prints the table header; returns the times and peak RSS per (kind, op) and a function
    that runs one load, prints its line and records both."""
    times = {(k, op): [] for k in kinds for op in ("append", "merge")}
    rss = {}
    print(f"{'run':<28}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}")

    def timed(kind, op, rows, cmd, env):
        secs, peak = run(cmd, env)
        times[(kind, op)].append(secs)
        rss[(kind, op)] = max(rss.get((kind, op), 0), peak)
        print(f"{kind + ' ' + op:<28}{rows:>10}{secs:>10.2f}{rows / secs:>12,.0f}{peak:>9.0f} MiB",
              flush=True)

    return times, rss, timed


def main():
    a, work, py, parquet, update = orders_inputs()
    sql_dir, rest_dir = os.path.join(work, "rest_sql"), os.path.join(work, "rest_rest")
    times, rss, timed = timer(("sql", "rest"))

    checks = {}
    for _ in range(a.repeat):
        fresh(sql_dir, rest_dir)
        os.makedirs(sql_dir)
        os.makedirs(rest_dir)
        for op, data, rows in (("append", parquet, a.rows), ("merge", update, a.merge_rows)):
            env = dict(os.environ, BENCH_PARQUET=data, BENCH_DIR=sql_dir)
            toml = os.path.join(HERE, f"iceberg_{op}.toml")
            timed("sql", op, rows, [a.pipe, "run", toml, "--no-progress"], env)
        server, uri = serve(a.pipe, rest_dir)
        try:
            for op, data, rows in (("append", parquet, a.rows), ("merge", update, a.merge_rows)):
                env = dict(os.environ, BENCH_PARQUET=data, BENCH_CATALOG=uri)
                toml = os.path.join(HERE, f"iceberg_rest_{op}.toml")
                timed("rest", op, rows, [a.pipe, "run", toml, "--no-progress"], env)
            checks["rest"] = subprocess.run(
                [py, "-c", CHECK, f'{{"type": "rest", "uri": "{uri}"}}'],
                capture_output=True, text=True, check=True).stdout.strip()
        finally:
            server.terminate()
            server.wait()
        checks["sql"] = subprocess.run(
            [py, "-c", CHECK, f'{{"type": "sql", "uri": "sqlite:///{sql_dir}/catalog.db", '
                              f'"warehouse": "file://{sql_dir}/wh"}}'],
            capture_output=True, text=True, check=True).stdout.strip()
        if checks["sql"] != checks["rest"]:
            sys.exit(f"the merged tables differ: {checks}")
    for op in ("append", "merge"):
        s, r = median(times[("sql", op)]), median(times[("rest", op)])
        print(f"  {op}: SQL catalog {s:.2f} s, REST {r:.2f} s (median of {a.repeat}): "
              f"REST / SQL = {r / s:.3f}; peak RSS {rss[('sql', op)]:.0f} / {rss[('rest', op)]:.0f} MiB")
    print(f"  both merged tables: (count, checksum) = {checks['sql']}")


if __name__ == "__main__":
    main()
