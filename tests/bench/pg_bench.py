#!/usr/bin/env python3
"""Postgres → DuckDB benchmark against `psql`'s binary COPY, in one script.

    pg_bench.py PIPE_BINARY [--rows 1000000 5000000] [--repeat 3]

For each size, a TPC-H-like `orders` table (10 columns: bigint keys, text, numeric(15,2), date,
timestamptz) is generated in PostgreSQL once (table bench_orders_<rows>, kept for reruns).
Then, each as a separate process whose peak RSS is read from wait4, --repeat times (median):
  - psql: \\copy (SELECT * FROM t) TO '/dev/null' WITH (FORMAT binary) — the physical limit;
  - pipe postgres → the null destination: the source alone (decode into Arrow);
  - pipe postgres → DuckDB (append, fresh file), parallelism 1 and 2.
Prints rows/s, peak RSS and the ratio to psql, and checks the DuckDB table's count and
checksum against PostgreSQL's.
"""
import argparse
import os
import subprocess
import sys
import time

PG_URL = os.environ.get("PIPE_PG_URL", "postgres://postgres@127.0.0.1:5432/test")

CREATE = """
CREATE TABLE IF NOT EXISTS {t} AS SELECT
  g::bigint AS o_orderkey, (g * 7919 % 150000 + 1)::bigint AS o_custkey,
  (ARRAY['O','F','P'])[g % 3 + 1] AS o_orderstatus,
  ((g * 104729 % 54915000 + 85000) / 100.0)::numeric(15,2) AS o_totalprice,
  date '1992-01-01' + (g % 2405)::int AS o_orderdate,
  (ARRAY['1-URGENT','2-HIGH','3-MEDIUM','4-NOT SPECIFIED','5-LOW'])[g % 5 + 1] AS o_orderpriority,
  'Clerk#' || lpad((g % 1000)::text, 9, '0') AS o_clerk, 0 AS o_shippriority,
  'furiously ' || md5(g::text) || ' deposits' AS o_comment,
  timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' AS o_updated_at
FROM generate_series(1::bigint, {n}) g;
ALTER TABLE {t} DROP CONSTRAINT IF EXISTS {t}_pk;
ALTER TABLE {t} ADD CONSTRAINT {t}_pk PRIMARY KEY (o_orderkey);
"""

PIPELINE = """
name = "pg_bench"
[source]
type = "postgres"
url = "{url}"
table = "{t}"
parallelism = {par}
[destination]
{dest}
"""
DUCKDB = 'type = "duckdb"\npath = "{db}"\ntable = "bench.orders"\nmode = "append"'
NULL = 'type = "null"'

CHECK = """
import duckdb, sys
c = duckdb.connect(sys.argv[1], read_only=True)
print(c.execute("SELECT count(*), sum(o_orderkey), sum(o_totalprice), sum(length(o_comment)) FROM bench.orders").fetchone())
"""


def run(cmd, env=None):
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{err}")
    return seconds, usage.ru_maxrss / 1024


def psql(sql):
    return subprocess.run(["psql", PG_URL, "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/pipe-bench")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    print(f"{'load':<30}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak RSS':>12}   (median of {a.repeat})")
    for n in a.rows:
        t = f"bench_orders_{n}"
        psql(CREATE.format(t=t, n=n))
        psql(f"VACUUM ANALYZE {t}")
        want = psql(f"SELECT count(*), sum(o_orderkey), sum(o_totalprice), sum(length(o_comment)) FROM {t}")
        loads = [("psql binary COPY (reference)", None, None),
                 ("pipe postgres→null p=1", 1, NULL)]
        loads += [(f"pipe postgres→duckdb p={p}", p, DUCKDB) for p in (1, 2)]
        ref = None
        for name, par, dest in loads:
            db = os.path.join(a.work, f"pg_{n}.duckdb")
            toml = os.path.join(a.work, f"pg_{n}_{par}_{'null' if dest == NULL else 'duck'}.toml")
            if par is not None:
                with open(toml, "w") as f:
                    f.write(PIPELINE.format(url=PG_URL, t=t, par=par, dest=dest.format(db=db)))
            timings = []
            for _ in range(a.repeat):
                for suffix in ("", ".wal"):
                    if os.path.exists(db + suffix):
                        os.remove(db + suffix)
                if par is None:
                    cmd = ["psql", PG_URL, "-X", "-q", "-c",
                           f"\\copy (SELECT * FROM {t}) TO '/dev/null' WITH (FORMAT binary)"]
                else:
                    cmd = [a.pipe, "run", toml, "--no-progress"]
                timings.append(run(cmd))
            seconds = sorted(s for s, _ in timings)[len(timings) // 2]
            rss = max(r for _, r in timings)
            if par is None:
                ref = seconds
            elif dest != NULL:
                got = subprocess.run([sys.executable, "-c", CHECK, db], check=True, capture_output=True,
                                     text=True).stdout.strip()
                g = got.strip("()").replace("Decimal('", "").replace("')", "").split(", ")
                w = want.split("|")
                if [x.rstrip("0").rstrip(".") for x in g] != [x.rstrip("0").rstrip(".") for x in w]:
                    sys.exit(f"{name}: DuckDB has {got}, PostgreSQL {want}")
            ratio = f"  {ref / seconds:.2f}x" if par is not None else ""
            print(f"{name:<30}{n:>10}{seconds:>10.2f}{n / seconds:>12,.0f}{rss:>9.0f} MiB{ratio}")
        print(f"  checked: count, sum(key), sum(price), sum(length(comment)) = {want}")


if __name__ == "__main__":
    main()
