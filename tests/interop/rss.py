#!/usr/bin/env python3
"""Run a command and report how it ended and how much memory it took at most.

    rss.py TIMEOUT_SECS CMD [ARGS...]

JSON: {"code": exit code (null if killed by the timeout), "stderr": the last 4000 characters
of stderr, "max_rss_mb": peak resident memory, "seconds": wall time}.
"""
import json
import os
import resource
import subprocess
import sys
import time

timeout = float(sys.argv[1])
start = time.time()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
try:
    _, err = proc.communicate(timeout=timeout)
    code = proc.returncode
except subprocess.TimeoutExpired:
    proc.kill()
    _, err = proc.communicate()
    code = None
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "code": code,
    "stderr": err.decode("utf-8", "replace")[-4000:],
    "max_rss_mb": usage.ru_maxrss / 1024,
    "seconds": round(time.time() - start, 2),
}))
sys.stdout.flush()
os._exit(0)
