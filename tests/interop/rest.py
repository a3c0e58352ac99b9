"""Talk to an Iceberg REST catalog the way other clients do (the catalog tests of pipe).

    rest.py http METHOD URL [--body TEXT] [--token T]   one raw call: {"status", "body"}
    rest.py stale CATALOG_JSON NS.TABLE                 two pyiceberg writers on one base:
                                                        the second must get a 409
    rest.py config CATALOG_JSON                         pyiceberg connects (token fetched)

CATALOG_JSON holds pyiceberg RestCatalog properties ({"uri": ..., "token": ...}).
"""

import json
import sys
import urllib.error
import urllib.request


def http(args):
    method, url = args[0], args[1]
    body, token = None, None
    rest = args[2:]
    while rest:
        if rest[0] == "--body":
            body, rest = rest[1].encode(), rest[2:]
        elif rest[0] == "--token":
            token, rest = rest[1], rest[2:]
        else:
            raise SystemExit(f"unknown option {rest[0]}")
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        parsed = json.loads(text) if text else None
    except json.JSONDecodeError:
        parsed = text
    return {"status": status, "body": parsed}


def stale(args):
    """Two schema changes planned on the same table state: the second is stale. (pyiceberg
    0.12 retries a stale append by itself, so an append would not show the 409.)"""
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.exceptions import CommitFailedException
    from pyiceberg.types import StringType

    cat = RestCatalog("rest", **json.loads(args[0]))
    first, second = cat.load_table(args[1]), cat.load_table(args[1])
    with first.update_schema() as update:
        update.add_column("added_first", StringType())
    try:
        with second.update_schema() as update:
            update.add_column("added_second", StringType())
    except CommitFailedException as e:
        return {"stale": "CommitFailedException", "message": str(e)}
    return {"stale": None}


def config(args):
    from pyiceberg.catalog.rest import RestCatalog

    cat = RestCatalog("rest", **json.loads(args[0]))
    return {"namespaces": [".".join(n) for n in cat.list_namespaces()]}


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    out = {"http": http, "stale": stale, "config": config}[cmd](args)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
