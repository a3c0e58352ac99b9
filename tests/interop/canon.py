"""Canonical JSON-able values of what the Python readers return, shared by the reader
scripts so every destination's rows compare the same way."""
import datetime as dt
import decimal


def canon(v):
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc)
        return v.isoformat()
    if isinstance(v, (dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, dict):
        return {k: canon(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [canon(x) for x in v]
    return str(v) if not isinstance(v, (int, bool, str)) else v


def differences(got, want, reader):
    """What differs between two Arrow tables (both sorted by `id`), column by column, with
    canonical values; `reader` names the table read back."""
    problems = []
    if got.num_rows != want.num_rows:
        problems.append(f"rows: {got.num_rows} != {want.num_rows}")
    for name in want.column_names:
        if name not in got.column_names:
            problems.append(f"missing column {name}")
            continue
        a = [canon(v) for v in got.column(name).to_pylist()]
        b = [canon(v) for v in want.column(name).to_pylist()]
        if a != b:
            problems.append({"column": name, reader: a, "parquet": b})
    return problems
