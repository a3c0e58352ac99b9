#!/usr/bin/env python3
"""Postgres → Parquet files against `psql`'s binary COPY and DuckDB's own export, in one script.

    files_bench.py PIPE_BINARY [--rows 5000000] [--repeat 3]

The TPC-H-like `orders` table of pg_bench.py (kept for reruns). Each load is a separate process
whose peak RSS is read from wait4, --repeat times (median):
  - psql: \\copy (SELECT * FROM t) TO '/dev/null' WITH (FORMAT binary) — the physical limit;
  - DuckDB 1.4.4 with its postgres extension (PyPI duckdb-ext-postgres, in its own venv
    /var/tmp/pipe-duckdb14, created on first use): ATTACH … (TYPE postgres);
    COPY (SELECT * FROM pg.public.t) TO 'x.parquet' (FORMAT parquet, COMPRESSION zstd);
  - pipe postgres → files (Parquet, zstd), parallelism 1 and 2.
Prints rows/s, peak RSS, the ratio to psql, and checks pipe's files (read by python duckdb) for
count and checksums against PostgreSQL's.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys

from pg_bench import CREATE, PG_URL, PIPELINE, psql, run

DUCK_VENV = "/var/tmp/pipe-duckdb14"

FILES = 'type = "files"\npath = "{out}"\nmode = "replace"'

DUCK_EXPORT = """
import glob, os, sys, duckdb
import duckdb_ext  # the package that ships the extension files
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "**",
                             "postgres_scanner.duckdb_extension"), recursive=True)
con.sql(f"LOAD '{ext[0]}'")
con.sql(f"ATTACH '{sys.argv[1]}' AS pg (TYPE postgres, READ_ONLY)")
con.sql(f"COPY (SELECT * FROM pg.public.{sys.argv[2]}) TO '{sys.argv[3]}' "
        "(FORMAT parquet, COMPRESSION zstd)")
"""

CHECK = """
import duckdb, sys
print(duckdb.sql(f"SELECT count(*), sum(o_orderkey), sum(o_totalprice), sum(length(o_comment)) "
                 f"FROM read_parquet('{sys.argv[1]}/**/*.parquet')").fetchall()[0])
"""


def duck_venv():
    python = os.path.join(DUCK_VENV, "bin", "python")
    probe = "import duckdb_ext, duckdb; assert duckdb.__version__ == '1.4.4'"
    if subprocess.run([python, "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([sys.executable, "-m", "venv", DUCK_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "duckdb==1.4.4",
                        "duckdb-ext-postgres==1.4.4.20260205"], check=True)
    return python


def same(got, want):
    g = got.strip("()").replace("Decimal('", "").replace("')", "").split(", ")
    return [x.rstrip("0").rstrip(".") for x in g] == [x.rstrip("0").rstrip(".") for x in want.split("|")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, nargs="+", default=[5_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    duck = duck_venv()
    print(f"{'load':<34}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}   (median of {a.repeat})")
    for n in a.rows:
        t = f"bench_orders_{n}"
        psql(CREATE.format(t=t, n=n))
        psql(f"VACUUM ANALYZE {t}")
        want = psql(f"SELECT count(*), sum(o_orderkey), sum(o_totalprice), sum(length(o_comment)) FROM {t}")
        out = os.path.join(a.work, f"files_{n}")
        loads = [("psql binary COPY (reference)", "psql", None),
                 ("duckdb COPY (postgres ext) → parquet", "duckdb", None)]
        loads += [(f"pipe postgres→parquet files p={p}", "pipe", p) for p in (1, 2)]
        ref = None
        for name, kind, par in loads:
            toml = os.path.join(a.work, f"files_{n}_{par}.toml")
            if kind == "pipe":
                with open(toml, "w") as f:
                    f.write(PIPELINE.format(url=PG_URL, t=t, par=par, dest=FILES.format(out=out)))
            timings = []
            for _ in range(a.repeat):
                if kind == "psql":
                    cmd = ["psql", PG_URL, "-X", "-q", "-c",
                           f"\\copy (SELECT * FROM {t}) TO '/dev/null' WITH (FORMAT binary)"]
                elif kind == "duckdb":
                    target = os.path.join(a.work, f"duck_{n}.parquet")
                    if os.path.exists(target):
                        os.remove(target)
                    cmd = [duck, "-c", DUCK_EXPORT, PG_URL, t, target]
                else:
                    cmd = [a.pipe, "run", toml, "--no-progress"]
                timings.append(run(cmd))
            seconds = sorted(s for s, _ in timings)[len(timings) // 2]
            rss = max(r for _, r in timings)
            if kind == "psql":
                ref = seconds
            if kind == "pipe":
                files = glob.glob(os.path.join(out, "**", "*.parquet"), recursive=True)
                got = subprocess.run([sys.executable, "-c", CHECK, out], check=True,
                                     capture_output=True, text=True).stdout.strip()
                if not same(got, want):
                    sys.exit(f"{name}: the files hold {got}, PostgreSQL {want}")
                name += f" ({len(files)} files)"
            ratio = f"  {ref / seconds:.2f}x" if kind != "psql" else ""
            print(f"{name:<34}{n:>10}{seconds:>10.2f}{n / seconds:>12,.0f}{rss:>9.0f} MiB{ratio}")
        print(f"  checked: count, sum(key), sum(price), sum(length(comment)) = {want}")
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
