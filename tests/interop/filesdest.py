#!/usr/bin/env python3
"""Independent readers of a `type = "files"` destination's directory.

    filesdest.py read READER DIR FORMAT [S3_ENDPOINT]
        The rows as READER sees them, in edge.py's canonical form (sorted by id).
        READER: pyarrow (pyarrow.dataset, Hive partitioning) or duckdb (read_parquet /
        read_csv / read_json with hive_partitioning and union_by_name). CSV is read with
        NULL = an empty field and "" = the empty string (pyarrow strings_can_be_null,
        quoted_strings_can_be_null=False; DuckDB allow_quoted_nulls=false).
        With S3_ENDPOINT, DIR is s3://bucket/prefix on that server (AWS_* from the environment).
    filesdest.py files DIR
        The data files a reader would glob (not under _pipe/), relative paths, sorted.
    filesdest.py poll DIR SECONDS WALK
        Observe DIR repeatedly for SECONDS (or until DIR/../stop-poll exists): each
        observation is the set of run stems (`part-<run>`) of the files listed in one walk.
        WALK: `listdir` (one directory, one readdir), `fwalk` (os.fwalk: every directory
        opened relative to its parent's descriptor, so one walk sees one directory tree).
        JSON: the distinct observations (sorted lists of stems) and how many walks.
"""
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from edge import arrow_of, canonical

EXT = {"parquet": "parquet", "csv": "csv", "ndjson": "ndjson"}


def s3fs(endpoint):
    from pyarrow import fs
    return fs.S3FileSystem(endpoint_override=endpoint, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                           secret_key=os.environ["AWS_SECRET_ACCESS_KEY"], region="us-east-1",
                           scheme="http")


def dataset(path, fmt, filesystem=None):
    """A pyarrow dataset of every file under `path` (Hive partitions), its schema the union of
    the files' schemas: files written before a column was added lack it."""
    d = ds.dataset(path, format=fmt, partitioning="hive", filesystem=filesystem)
    schemas = [f.physical_schema for f in d.get_fragments()]
    if d.partitioning is not None:
        schemas.append(d.partitioning.schema)
    if not schemas:
        return d
    return ds.dataset(path, format=fmt, partitioning="hive", filesystem=filesystem,
                      schema=pa.unify_schemas(schemas))


def read_pyarrow(path, fmt, endpoint=None):
    filesystem = None
    if endpoint:
        filesystem = s3fs(endpoint)
        path = path.removeprefix("s3://")
    if fmt == "csv":
        fmt = ds.CsvFileFormat(parse_options=pcsv.ParseOptions(newlines_in_values=True),
                               convert_options=pcsv.ConvertOptions(
            strings_can_be_null=True, quoted_strings_can_be_null=False))
    elif fmt == "ndjson":
        fmt = ds.JsonFileFormat()
    return dataset(path, fmt, filesystem).to_table()


def read_duckdb(path, fmt, endpoint=None):
    import duckdb
    con = duckdb.connect()
    if endpoint:
        host = endpoint.removeprefix("http://")
        con.sql(f"""CREATE SECRET (TYPE s3, KEY_ID '{os.environ["AWS_ACCESS_KEY_ID"]}',
                SECRET '{os.environ["AWS_SECRET_ACCESS_KEY"]}', ENDPOINT '{host}',
                URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')""")
    glob = f"{path}/**/*.{EXT[fmt]}*"
    if fmt == "parquet":
        sql = f"SELECT * FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"
    elif fmt == "csv":
        sql = (f"SELECT * FROM read_csv('{glob}', hive_partitioning=true, union_by_name=true, "
               "allow_quoted_nulls=false)")
    else:
        sql = f"SELECT * FROM read_json('{glob}', hive_partitioning=true, union_by_name=true)"
    return arrow_of(con.sql(sql))


def data_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        for name in filenames:
            if not name.startswith(("_", ".")):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def stem(name):
    base = os.path.basename(name)
    return base.split("-")[1] if base.startswith("part-") else base


def walk_once(root, how):
    if how == "listdir":
        return sorted({stem(n) for n in os.listdir(root) if n.startswith("part-")})
    stems = set()
    for _, dirnames, filenames, _ in os.fwalk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        stems.update(stem(n) for n in filenames if n.startswith("part-"))
    return sorted(stems)


def poll(root, seconds, how):
    seen, walks = [], 0
    stop = os.path.join(os.path.dirname(os.path.abspath(root)), "stop-poll")
    end = time.time() + seconds
    while time.time() < end and not os.path.exists(stop):
        try:
            observed = walk_once(root, how)
        except FileNotFoundError:
            continue  # the directory is being swapped: not an observation
        walks += 1
        if observed and observed not in seen:
            seen.append(observed)
    return {"observations": seen, "walks": walks}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "read":
        reader, path, fmt = args[:3]
        endpoint = args[3] if len(args) > 3 else None
        table = read_pyarrow(path, fmt, endpoint) if reader == "pyarrow" else read_duckdb(
            path, fmt, endpoint)
        print(json.dumps(canonical(table)))
    elif cmd == "files":
        print(json.dumps(data_files(args[0])))
    elif cmd == "poll":
        print(json.dumps(poll(args[0], float(args[1]), args[2])))
    else:
        raise SystemExit(f"unknown command {cmd}")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
