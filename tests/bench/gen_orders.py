#!/usr/bin/env python3
"""Deterministic TPC-H-like `orders` CSV generator (stdlib only).

    gen_orders.py OUT.csv ROWS [--seed N] [--start-key K] [--update-of ROWS_OF_BASE]

Columns: o_orderkey, o_custkey, o_orderstatus, o_totalprice (2 decimals), o_orderdate,
o_orderpriority, o_clerk, o_shippriority, o_comment (quoted, may contain commas),
o_updated_at (UTC timestamp with a `Z`).

With --update-of B, the file holds ROWS rows of which 60% update existing keys 1..B (new
status, price and updated_at) and 40% are new keys after B.
"""
import argparse
import csv
import datetime as dt
import random

STATUS = ["O", "F", "P"]
PRIORITY = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"]
WORDS = ("furiously special foxes haggle carefully final deposits sleep quickly "
         "blithely ironic packages nag slyly regular accounts wake bold pinto beans "
         "according to the even requests, unusual théodolites détectés naïve").split()
EPOCH = dt.date(1992, 1, 1)
UPDATED = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def row(rng, key, version):
    date = EPOCH + dt.timedelta(days=rng.randrange(0, 2405))
    updated = UPDATED + dt.timedelta(seconds=rng.randrange(0, 86400 * 300) + version * 86400 * 400)
    comment = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 9)))
    return [
        key,
        rng.randrange(1, 150_000),
        rng.choice(STATUS),
        f"{rng.randrange(85_000, 55_000_000) / 100:.2f}",
        date.isoformat(),
        rng.choice(PRIORITY),
        f"Clerk#{rng.randrange(1, 1000):09d}",
        0,
        comment,
        updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("rows", type=int)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--start-key", type=int, default=1)
    ap.add_argument("--update-of", type=int, default=0)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    header = ["o_orderkey", "o_custkey", "o_orderstatus", "o_totalprice", "o_orderdate",
              "o_orderpriority", "o_clerk", "o_shippriority", "o_comment", "o_updated_at"]
    with open(a.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        if a.update_of:
            updates = int(a.rows * 0.6)
            keys = rng.sample(range(1, a.update_of + 1), updates)
            keys += range(a.update_of + 1, a.update_of + 1 + a.rows - updates)
            for k in keys:
                w.writerow(row(rng, k, 1))
        else:
            for k in range(a.start_key, a.start_key + a.rows):
                w.writerow(row(rng, k, 0))


if __name__ == "__main__":
    main()
