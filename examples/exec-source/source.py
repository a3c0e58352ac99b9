#!/usr/bin/env python3
"""An exec source for pipe, in Python with pyarrow (the protocol: docs/custom-sources.md).

pipe runs this program, writes a JSON document to its standard input and reads an Arrow IPC
stream from its standard output. This one produces `rows` rows (id, amount, label) after the
last id it committed, so each run continues where the last one stopped:

    [source]
    type = "exec"
    command = ["python3", "examples/exec-source/source.py"]
    incremental = true
    config = { rows = 1000000, batch_rows = 65536 }

Its new state goes to the file named by PIPE_STATE_OUT; pipe commits it with the data, so a
run that fails commits neither the rows nor the state.
"""
import json
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc


def main():
    request = json.load(sys.stdin)
    config = request["config"]
    rows = int(config.get("rows", 1000))
    batch_rows = int(config.get("batch_rows", 65536))
    # Test hooks: fail or hang after this many batches.
    fail_after = config.get("fail_after")
    hang_after = config.get("hang_after")
    if config.get("pid_file"):
        with open(config["pid_file"], "w") as f:
            f.write(str(os.getpid()))

    first = int(request["state"].get("last_id", "0")) + 1
    schema = pa.schema([("id", pa.int64()), ("amount", pa.float64()), ("label", pa.string())])
    # Vectorized: one 0..batch_rows array, shifted per batch (no Python loop over rows).
    offsets = pa.array(range(batch_rows), pa.int64())
    sink = pa.output_stream(sys.stdout.buffer)
    with pa.ipc.new_stream(sink, schema) as writer:
        start, sent = first, 0
        while start < first + rows:
            n = min(batch_rows, first + rows - start)
            ids = pc.add(offsets.slice(0, n), start)
            amount = pc.multiply(ids.cast(pa.float64()), 0.5)
            label = pc.binary_join_element_wise("row-", ids.cast(pa.string()), "")
            writer.write_batch(pa.record_batch([ids, amount, label], schema=schema))
            sent += 1
            start += n
            if fail_after is not None and sent >= int(fail_after):
                print("boom: the upstream API went away after %d batches" % sent, file=sys.stderr)
                sys.exit(3)
            if hang_after is not None and sent >= int(hang_after):
                sys.stdout.flush()
                time.sleep(3600)

    with open(os.environ["PIPE_STATE_OUT"], "w") as f:
        json.dump({"last_id": str(first + rows - 1)}, f)


if __name__ == "__main__":
    main()
