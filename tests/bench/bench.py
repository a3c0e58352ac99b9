#!/usr/bin/env python3
"""CSV → DuckDB benchmark: pipe against DuckDB's own read_csv, in one script.

    bench.py PIPE_BINARY [--rows 5000000] [--work /var/tmp/pipe-bench]

Generates the orders CSV once (cached), then for each row count loads it with
  - pipe (release build), orders_append.toml: append, no contract;
  - pipe with orders_contract.toml: the same plus an 8-rule data contract;
  - python duckdb: CREATE TABLE AS SELECT * FROM read_csv(...) with the same column types,
each into a fresh database file, as a separate process whose peak RSS is measured
(wait4 rusage), --repeat times (median seconds, max RSS). Verifies every load has the same
row count and checksum, prints rows/s, peak RSS and the ratio pipe / DuckDB.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env=None):
    """Run `cmd` to its end: elapsed seconds and peak RSS (MiB)."""
    seconds, rss, _ = run_cpu(cmd, env)
    return seconds, rss


def run_cpu(cmd, env=None):
    """Run `cmd` to its end: elapsed seconds, peak RSS (MiB) and CPU seconds (user + system)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


REFERENCE = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("CREATE SCHEMA sales")
con.execute(f\"\"\"CREATE TABLE sales.orders AS SELECT * FROM read_csv('{sys.argv[1]}', header = true,
  types = {{'o_orderkey': 'BIGINT', 'o_custkey': 'BIGINT', 'o_orderstatus': 'VARCHAR',
           'o_totalprice': 'DECIMAL(15,2)', 'o_orderdate': 'DATE', 'o_orderpriority': 'VARCHAR',
           'o_clerk': 'VARCHAR', 'o_shippriority': 'BIGINT', 'o_comment': 'VARCHAR',
           'o_updated_at': 'TIMESTAMPTZ'}})\"\"\")
con.close()
"""

CHECK = """
import duckdb, sys
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
  "o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment, o_updated_at)) "
  "FROM sales.orders").fetchone())
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    ap.add_argument("--repeat", type=int, default=3, help="runs per load; the median is printed")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    py = sys.executable
    print(f"{'load':<32}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}   (median of {a.repeat})")
    for rows in a.rows:
        csv_path = os.path.join(a.work, f"orders_{rows}.csv")
        if not os.path.exists(csv_path):
            subprocess.run([py, os.path.join(HERE, "gen_orders.py"), csv_path + ".tmp", str(rows)], check=True)
            os.rename(csv_path + ".tmp", csv_path)
        results = {}
        for name, cmd_for in [
            ("duckdb read_csv (reference)", lambda db: [py, "-c", REFERENCE, csv_path, db]),
            ("pipe append", lambda db: [a.pipe, "run", os.path.join(HERE, "orders_append.toml"), "--no-progress"]),
            ("pipe append + 8-rule contract", lambda db: [a.pipe, "run", os.path.join(HERE, "orders_contract.toml"), "--no-progress"]),
        ]:
            db = os.path.join(a.work, f"bench_{rows}.duckdb")
            for suffix in ("", ".wal"):
                if os.path.exists(db + suffix):
                    os.remove(db + suffix)
            env = dict(os.environ, BENCH_CSV=csv_path, BENCH_DB=db)
            timings = []
            for _ in range(a.repeat):
                for suffix in ("", ".wal"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)
                timings.append(run(cmd_for(db), env))
            seconds = sorted(t for t, _ in timings)[len(timings) // 2]
            rss = max(r for _, r in timings)
            check = subprocess.run([py, "-c", CHECK, db], capture_output=True, text=True, check=True).stdout.strip()
            results[name] = (seconds, rss, check)
            print(f"{name:<32}{rows:>10}{seconds:>10.2f}{rows / seconds:>12,.0f}{rss:>9.0f} MiB")
        checks = {r[2] for r in results.values()}
        if len(checks) != 1:
            sys.exit(f"loads differ: {results}")
        ref = results["duckdb read_csv (reference)"][0]
        for name in ("pipe append", "pipe append + 8-rule contract"):
            print(f"  ratio {name} / duckdb read_csv speed: {ref / results[name][0]:.2f}x")
        plain, checked = results["pipe append"][0], results["pipe append + 8-rule contract"][0]
        print(f"  contract overhead: {checked:.2f} s vs {plain:.2f} s = {(checked / plain - 1) * 100:+.1f}% wall time")
        print(f"  all loads: (count, checksum) = {checks.pop()}")


if __name__ == "__main__":
    main()
