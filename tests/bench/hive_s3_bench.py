#!/usr/bin/env python3
"""Hive Metastore and S3 warehouse overhead: the 5M-row append and the 500k merge of
iceberg_bench.py into the local SQL catalog (the reference), through a real Hive Metastore
(tests/hms/, local warehouse) and into an S3 warehouse (moto's server, SQL catalog), in one
script.

    hive_s3_bench.py PIPE_BINARY [--rows 5000000] [--merge-rows 500000] [--repeat 3]
                     [--work /var/tmp/pipe-bench]

Each repeat loads a fresh table each way, taking turns, and merges the changed orders into
each. Prints every run, the medians and the Hive / SQL and S3 / SQL ratios, and checks the
three merged tables have the same count and checksum, read back by pyiceberg (SqlCatalog,
HiveCatalog, SqlCatalog on S3). moto is an in-memory Python server, not S3: its figures show
pipe's object-store path works at size, not what S3 would do.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from iceberg_bench import fresh  # noqa: E402
from rest_bench import free_port, median, orders_inputs, timer  # noqa: E402

CHECK = """
import sys, json, duckdb
props = json.loads(sys.argv[1]); table = sys.argv[2]
kind = props.pop("type")
if kind == "hive":
    from pyiceberg.catalog.hive import HiveCatalog
    cat = HiveCatalog("hive", **props)
else:
    from pyiceberg.catalog.sql import SqlCatalog
    cat = SqlCatalog("pipe", **props)
orders = cat.load_table(table).scan().to_arrow()
print(duckdb.sql("SELECT count(*), sum(hash(o_orderkey, o_custkey, o_orderstatus, o_totalprice, "
  "o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment, o_updated_at)) "
  "FROM orders").fetchall()[0])
"""

S3_KEYS = {"s3.access-key-id": "bench", "s3.secret-access-key": "bench-secret",
           "s3.region": "us-east-1"}


def wait_port(port, proc, what):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                sys.exit(f"{what} exited")
            time.sleep(0.1)
    sys.exit(f"{what} did not start")


def main():
    a, work, py, parquet, update = orders_inputs()
    dirs = {k: os.path.join(work, f"hs_{k}") for k in ("sql", "hive", "s3")}

    # the metastore (state under work/hs_hms) and the S3 server, for the whole script
    hms_state = os.path.join(work, "hs_hms")
    shutil.rmtree(hms_state, ignore_errors=True)
    hms_port = free_port()
    hms_pid = int(subprocess.run(
        ["bash", os.path.join(ROOT, "tests/hms/start-hms.sh"), hms_state, str(hms_port)],
        capture_output=True, text=True, check=True).stdout.strip())
    hms = f"thrift://127.0.0.1:{hms_port}"
    s3_port = free_port()
    moto = subprocess.Popen([os.path.join(os.path.dirname(py), "moto_server"), "-H", "127.0.0.1",
                             "-p", str(s3_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    s3 = f"http://127.0.0.1:{s3_port}"
    wait_port(s3_port, moto, "moto_server")
    aws = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret",
               AWS_REGION="us-east-1")
    subprocess.run([py, "-c", "import boto3, sys; boto3.client('s3', endpoint_url=sys.argv[1])"
                    ".create_bucket(Bucket='bench')", s3], env=aws, check=True)

    times, rss, timed = timer(dirs)

    try:
        for rep in range(a.repeat):
            db = f"bench{rep}_{os.getpid()}"
            fresh(*dirs.values())
            for d in dirs.values():
                os.makedirs(d)
            checks = {}
            for kind in dirs:
                toml_kind = {"sql": "iceberg", "hive": "iceberg_hive", "s3": "iceberg_s3"}[kind]
                for op, data, rows in (("append", parquet, a.rows), ("merge", update, a.merge_rows)):
                    env = dict(os.environ, BENCH_PARQUET=data, BENCH_DIR=dirs[kind], BENCH_HMS=hms,
                               BENCH_DB=db, BENCH_S3=s3)
                    toml = os.path.join(HERE, f"{toml_kind}_{op}.toml")
                    timed(kind, op, rows, [a.pipe, "run", toml, "--no-progress"], env)
            props = {
                "sql": ({"type": "sql", "uri": f"sqlite:///{dirs['sql']}/catalog.db",
                         "warehouse": f"file://{dirs['sql']}/wh"}, "sales.orders"),
                "hive": ({"type": "hive", "uri": hms}, f"{db}.orders"),
                "s3": (dict({"type": "sql", "uri": f"sqlite:///{dirs['s3']}/catalog.db",
                             "warehouse": f"s3://bench/{db}", "s3.endpoint": s3}, **S3_KEYS),
                       "sales.orders"),
            }
            for kind, (p, table) in props.items():
                checks[kind] = subprocess.run([py, "-c", CHECK, json.dumps(p), table],
                                              capture_output=True, text=True, check=True
                                              ).stdout.strip()
            if len(set(checks.values())) != 1:
                sys.exit(f"the merged tables differ: {checks}")
    finally:
        moto.terminate()
        os.kill(hms_pid, 15)
    for op in ("append", "merge"):
        s, h, o = (median(times[(k, op)]) for k in ("sql", "hive", "s3"))
        print(f"  {op}: SQL catalog {s:.2f} s, Hive Metastore {h:.2f} s, S3 (moto) {o:.2f} s "
              f"(median of {a.repeat}): Hive / SQL = {h / s:.3f}, S3 / SQL = {o / s:.3f}; "
              f"peak RSS {rss[('sql', op)]:.0f} / {rss[('hive', op)]:.0f} / "
              f"{rss[('s3', op)]:.0f} MiB")
    print(f"  all three merged tables: (count, checksum) = {checks['sql']}")


if __name__ == "__main__":
    main()
