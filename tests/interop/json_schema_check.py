#!/usr/bin/env python3
"""Check a JSON Schema file with the reference validator (python `jsonschema`): is it a valid
draft 2020-12 schema, and which of the given JSON documents does it accept? Prints JSON:
{"schema_ok": bool, "schema_error": str|null, "accepted": [bool, ...], "errors": [str|null, ...]}

    json_schema_check.py SCHEMA.json DOCS.json     (DOCS.json: a JSON array of documents)
"""
import json
import sys

import jsonschema

with open(sys.argv[1]) as f:
    schema = json.load(f)
with open(sys.argv[2]) as f:
    docs = json.load(f)

cls = jsonschema.validators.validator_for(schema)
try:
    cls.check_schema(schema)
    schema_ok, schema_error = True, None
except jsonschema.exceptions.SchemaError as e:
    schema_ok, schema_error = False, str(e).splitlines()[0]

validator = cls(schema)
errors = []
for doc in docs:
    err = next(iter(validator.iter_errors(doc)), None)
    errors.append(None if err is None else f"/{'/'.join(map(str, err.absolute_path))}: {err.message}")
print(json.dumps({
    "schema_ok": schema_ok,
    "schema_error": schema_error,
    "draft": cls.__name__,
    "accepted": [e is None for e in errors],
    "errors": errors,
}))
