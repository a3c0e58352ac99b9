#!/usr/bin/env python3
"""The HTTP and exec sources (release `pipe`), each next to its reference in the same run.

    http_bench.py PIPE_BINARY [--records 1000000] [--rows 10000000] [--dest duckdb|delta]
                  [--work /var/tmp/pipe-bench/http]

`--dest delta` (a binary built without DuckDB will do) loads every side into Delta tables
instead: dlt through its `filesystem` destination with `table_format = "delta"`, counted by
python deltalake.

1. HTTP: a local API (tests/http/server.py, pages serialized before the clock starts) serves
   --records records (nested struct, list, strings with quotes and unicode) as pages of 1000;
   pipe loads them into DuckDB (pages fetched one at a time, and with parallelism = 2); dlt's
   `rest_api` source (pip `dlt[duckdb,deltalake]`, in a venv of its own) loads the same pages
   into DuckDB. Target: pipe >= 5x dlt's records/s.
2. Flat memory: pipe over 100 and over 10,000 pages of 100 records into the `null`
   destination (the source alone; a table writer buffers up to a row group whatever the
   source): peak RSS must not grow with the page count.
3. Exec: examples/exec-source/source.py (pyarrow) generates --rows rows into DuckDB through
   `type = "exec"`; the reference is the same rows written once to an Arrow IPC stream file
   and loaded by the file source. Target: exec >= 0.8x the file's rows/s.

Every load is checked by count (python duckdb); prints seconds, rows/s, peak RSS and ratios.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "../.."))
sys.path.insert(0, HERE)
from bench import run  # noqa: E402

DLT_VENV = os.environ.get("PIPE_DLT_VENV", "/var/tmp/pipe-dlt")

DLT = """
import sys, dlt
from dlt.sources.rest_api import rest_api_source
base, out, per, dest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
resource = {"name": "records",
            "endpoint": {"path": "bench", "params": {"per_page": per}, "data_selector": "data"}}
if dest == "delta":
    resource["table_format"] = "delta"
    destination = dlt.destinations.filesystem(bucket_url="file://" + out)
else:
    destination = dlt.destinations.duckdb(out)
source = rest_api_source({
    "client": {"base_url": base,
               "paginator": {"type": "page_number", "page_param": "page", "base_page": 1,
                             "total_path": "total_pages"}},
    "resources": [resource],
})
pipeline = dlt.pipeline(pipeline_name="http_bench", destination=destination,
                        dataset_name="raw", pipelines_dir=sys.argv[4])
pipeline.run(source)
"""

DEST = "duckdb"


def destination_toml(work, name, table):
    """The [destination] table of a bench pipeline, and where its table is."""
    if DEST == "delta":
        path = os.path.join(work, name)
        shutil.rmtree(path, ignore_errors=True)
        return f'type = "delta"\npath = "{path}"\nmode = "append"\n', path
    db = os.path.join(work, f"{name}.duckdb")
    for f in (db, db + ".wal"):
        if os.path.exists(f):
            os.remove(f)
    return f'type = "duckdb"\npath = "{db}"\ntable = "raw.{table}"\nmode = "append"\n', (db, f"raw.{table}")


def count(where):
    """Rows of a table: a DuckDB (file, table) read by python duckdb, or a Delta path read by
    python deltalake."""
    if isinstance(where, str):
        code = ("import deltalake, pyarrow as pa, sys; t = deltalake.DeltaTable(sys.argv[1]); "
                "print(sum(pa.table(t.get_add_actions(flatten=True)).column('num_records').to_pylist()))")
        args = [where]
    else:
        code = ("import duckdb,sys; print(duckdb.connect(sys.argv[1], read_only=True)"
                ".execute(f'select count(*) from {sys.argv[2]}').fetchone()[0])")
        args = list(where)
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return int(out.stdout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(records, sizes):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests/http/server.py"), str(port),
                             "--records", str(records), "--bench", ",".join(map(str, sizes))])
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    sys.exit("the API server did not start")


def pipe_http(pipe, work, name, base, per, extra="", null=False):
    dest, where = destination_toml(work, name, "records")
    if null:
        # The source alone: batches are dropped, rows counted by the run summary.
        dest, where = 'type = "null"\n', None
    toml = os.path.join(work, f"{name}.toml")
    with open(toml, "w") as f:
        f.write(f"""name = "{name}"
[source]
type = "http"
url = "{base}/bench"
params = {{ per_page = "{per}" }}
records_path = "data"
pagination = {{ type = "page_number", total_pages_path = "total_pages" }}
{extra}
[destination]
{dest}""")
    if where is None:
        seconds, rss, rows = run_rows([pipe, "run", toml, "--json"])
        return seconds, rss, rows
    seconds, rss = run([pipe, "run", toml])
    return seconds, rss, count(where)


def run_to(out, cmd, stdin, env):
    """Run `cmd` with `stdin` text, its stdout into `out`: seconds and peak RSS (MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, env=env)
    proc.stdin.write(stdin.encode())
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.monotonic() - start, usage.ru_maxrss / 1024


def run_rows(cmd):
    """Run a `pipe run --json`: seconds, peak RSS (MiB) and rows read."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    out = proc.stdout.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out}\n{proc.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024, json.loads(out)["rows_read"]


def dlt_venv():
    python = os.path.join(DLT_VENV, "bin/python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", DLT_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "dlt[duckdb,deltalake]"], check=True)
    return python


def exec_bench(pipe, work, rows):
    python = sys.executable
    source = os.path.join(ROOT, "examples/exec-source/source.py")
    ipc = os.path.join(work, "rows.arrows")
    # The reference's file: the same generator's stream, written once.
    with open(ipc, "wb") as out:
        subprocess.run([python, source], input=json.dumps({"config": {"rows": rows}, "state": {}}).encode(),
                       stdout=out, check=True, env=dict(os.environ, PIPE_STATE_OUT=os.path.join(work, "st.json")))
    results = {}
    # The generator alone (to /dev/null): the floor of the exec run's time.
    with open(os.devnull, "wb") as out:
        gen, _ = run_to(out, [python, source], json.dumps({"config": {"rows": rows}, "state": {}}),
                        dict(os.environ, PIPE_STATE_OUT=os.path.join(work, "st.json")))
    print(f"the pyarrow generator alone: {gen:.2f} s ({rows / gen:,.0f} rows/s)")
    for name, src in [
        ("exec", f'type = "exec"\ncommand = ["{python}", "{source}"]\nconfig = {{ rows = {rows} }}'),
        ("exec_cat", f'type = "exec"\ncommand = ["cat", "{ipc}"]'),
        ("ipc_file", f'type = "file"\npath = "{ipc}"'),
    ]:
        dest, where = destination_toml(work, name, "rows")
        toml = os.path.join(work, f"{name}.toml")
        with open(toml, "w") as f:
            f.write(f'name = "{name}"\n[source]\n{src}\n[destination]\n{dest}')
        seconds, rss = run([pipe, "run", toml])
        got = count(where)
        assert got == rows, f"{name}: {got} rows, expected {rows}"
        results[name] = (seconds, rss)
        print(f"{name:10} {rows:>10} rows  {seconds:7.2f} s  {rows / seconds:>12,.0f} rows/s  {rss:7.0f} MiB")
    ratio = results["ipc_file"][0] / results["exec"][0]
    print(f"exec (pyarrow generator) / IPC file rate: {ratio:.2f}x (target >= 0.8)")
    ratio = results["ipc_file"][0] / results["exec_cat"][0]
    print(f"exec (`cat` of the same stream: the transport alone) / IPC file rate: {ratio:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pipe")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--work", default="/var/tmp/pipe-bench/http")
    ap.add_argument("--dest", choices=["duckdb", "delta"], default="duckdb")
    args = ap.parse_args()
    global DEST
    DEST = args.dest
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    pipe = os.path.abspath(args.pipe)

    server, base = serve(args.records, [1000, 100])
    try:
        n = args.records
        print(f"HTTP: {n} records in pages of 1000 from {base}")
        s1, r1, c1 = pipe_http(pipe, args.work, "pipe_serial", base, 1000)
        s2, r2, c2 = pipe_http(pipe, args.work, "pipe_parallel", base, 1000, "parallelism = 2")
        assert c1 == n and c2 == n, (c1, c2)
        python = dlt_venv()
        if DEST == "delta":
            out = os.path.join(args.work, "dlt-lake")
            where = os.path.join(out, "raw", "records")
        else:
            out = os.path.join(args.work, "dlt.duckdb")
            where = (out, "raw.records")
        sd, rd = run([python, "-c", DLT, base, out, "1000", os.path.join(args.work, "dlt-pipelines"), DEST])
        cd = count(where)
        assert cd == n, f"dlt loaded {cd}"
        for name, s, r in [("pipe", s1, r1), ("pipe par=2", s2, r2), ("dlt rest_api", sd, rd)]:
            print(f"{name:14} {s:7.2f} s  {n / s:>10,.0f} records/s  {r:7.0f} MiB")
        print(f"pipe / dlt: {sd / s1:.1f}x (serial), {sd / s2:.1f}x (parallelism 2); target >= 5x")

        small = pipe_http(pipe, args.work, "pages_100", base, 100, "max_pages = 100", null=True)
        large = pipe_http(pipe, args.work, "pages_10000", base, 100, null=True)
        assert small[2] == 10_000 and large[2] == n, (small[2], large[2])
        print(f"source alone, 100 pages: {small[1]:.0f} MiB peak; {n // 100} pages: {large[1]:.0f} MiB peak "
              f"({large[1] / small[1]:.2f}x)")
    finally:
        server.kill()

    exec_bench(pipe, args.work, args.rows)


if __name__ == "__main__":
    main()
