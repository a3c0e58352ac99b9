#!/usr/bin/env python3
"""A JSON API for the HTTP source's tests and benchmark (loopback only, standard library).

    server.py PORT [--records N] [--bench PER_PAGE,...] [--tls CERT KEY]

Records are generated deterministically: id, name (quotes, commas, unicode, empty), price
(float), qty (int), updated_at (ISO-8601 UTC, one second apart, several share a second),
tags (list), addr (struct), note (null or text). Endpoints (every one takes `page`/`per_page`
unless said otherwise, and `since=<updated_at>` filters `updated_at >= since`):

  /page             {"data": [...], "total_pages": K}           page numbers
  /offset           {"items": [...], "total": T}                offset/limit
  /cursor           {"results": [...], "meta": {"next": tok}}   cursor tokens (?after=tok)
  /link             [...] with a Link: rel="next" header
  /next             {"records": [...], "links": {"next": "/next?page=2"}}
  /ndjson           one record per line, Link header
  /empty            {"data": []}
  /window           ?start=&end=: records with start <= updated_at < end, page numbers
  /bearer/page      /page behind `Authorization: Bearer test-token-123`
  /basic/page       /page behind basic auth user:pass-456
  /apikey/page      /page behind X-API-Key or ?api_key= key-789
  /oauth/page       /page behind OAuth2 tokens from POST /token (client-a / secret-abc);
                    each token works for 3 requests, then 401
  /flaky/page       each page answers 500 twice before it answers
  /ratelimit/page   the first request answers 429 with Retry-After: 1
  /broken/page      page 3 is malformed JSON
  /drift/page       page 2's records have an extra field `extra`, qty becomes a float
  /grow/page        every record has an extra field `extra`

  /bench            ?page=&per_page=: pages serialized once at start (`--bench M,N`: the
                    page sizes), so a benchmark measures the client, not this server

  POST /admin/add?n=K   appends K records (later updated_at)
  GET  /admin/log       every request so far: [{"path", "query", "at"}]
"""
import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

LOCK = threading.Lock()
RECORDS = []
LOG = []
TOKENS = {}  # token -> requests left
BENCH = {}  # per_page -> [page body bytes]
ATTEMPTS = {}  # (path, page) -> attempts
NAMES = ['plain', 'with "quotes"', 'comma, inside', 'ünïcödé ✓', '', 'line\nbreak']


def make(i):
    base = 1704067200  # 2024-01-01T00:00:00Z
    return {
        "id": i,
        "name": NAMES[i % len(NAMES)],
        "price": round(i * 1.25, 2),
        "qty": i % 7,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i // 3)),
        "tags": ["t%d" % (i % 3)] * (i % 3),
        "addr": {"city": "c%d" % (i % 5), "zip": str(10000 + i)},
        "note": None if i % 4 else "n%d" % i,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        with LOCK:
            LOG.append({"path": url.path, "query": url.query, "at": time.time(), "body": body})
        if url.path == "/admin/add":
            with LOCK:
                start = len(RECORDS) + 1
                RECORDS.extend(make(i) for i in range(start, start + int(q["n"][0])))
            return self.send(200, {"records": len(RECORDS)})
        if url.path == "/token":
            form = parse_qs(body)
            if form.get("client_id") != ["client-a"] or form.get("client_secret") != ["secret-abc"]:
                return self.send(401, {"error": "invalid_client"})
            token = "tok-%d" % (len(TOKENS) + 1)
            with LOCK:
                TOKENS[token] = 3
            return self.send(200, {"access_token": token, "token_type": "bearer", "expires_in": 3600})
        if url.path == "/search":
            # POST with a JSON body {"per_page": m}; the page number in the query string
            req = json.loads(body or "{}")
            page, per = int(q.get("page", ["1"])[0]), int(req.get("per_page", 10))
            rows = RECORDS[(page - 1) * per: page * per]
            return self.send(200, {"data": rows})
        self.send(404, {"error": "no such endpoint"})

    def do_GET(self):
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/bench":
            with LOCK:
                LOG.append({"path": url.path, "query": url.query, "at": time.time()})
        if url.path == "/admin/log":
            return self.send(200, LOG)
        if url.path == "/empty":
            return self.send(200, {"data": []})
        if url.path == "/bench":
            pages = BENCH[int(q["per_page"])]
            page = int(q.get("page", 1))
            return self.send(200, pages[page - 1] if page <= len(pages) else b'{"data": [], "total_pages": %d}' % len(pages))
        path = url.path
        for prefix in ("/bearer", "/basic", "/apikey", "/oauth", "/flaky", "/ratelimit", "/broken", "/drift", "/grow"):
            if path.startswith(prefix + "/"):
                refused = self.gate(prefix, q)
                if refused:
                    return
                path = path[len(prefix):]
                break
        else:
            prefix = ""
        rows = RECORDS
        if "since" in q:
            rows = [r for r in rows if r["updated_at"] >= q["since"]]
        if path == "/window":
            rows = [r for r in rows if q["start"] <= r["updated_at"] < q["end"]]
            path = "/page"
        per = int(q.get("per_page", q.get("limit", 10)))
        if path == "/offset":
            off = int(q.get("offset", 0))
            return self.send(200, {"items": rows[off: off + per], "total": len(rows)})
        if path == "/cursor":
            off = int(q.get("after", "0").lstrip("c") or 0)
            nxt = off + per
            return self.send(200, {"results": rows[off:nxt],
                                   "meta": {"next": ("c%d" % nxt) if nxt < len(rows) else None}})
        page = int(q.get("page", 1))
        chunk = rows[(page - 1) * per: page * per]
        pages = (len(rows) + per - 1) // per
        if prefix == "/broken" and page == 3:
            return self.send(200, b'{"data": [{"id": 1}, {"id": 2,, }]}')
        if prefix == "/grow":
            chunk = [dict(r, extra="x%d" % r["id"]) for r in chunk]
        if prefix == "/drift" and page == 2:
            chunk = [dict(r, extra="x", qty=r["qty"] + 0.5) for r in chunk]
        if path == "/page":
            return self.send(200, {"data": chunk, "total_pages": pages})
        nxt = dict(q, page=str(page + 1))
        if path == "/link":
            headers = [("Link", '<http://%s%s?%s>; rel="next"' % (self.headers["Host"], url.path, urlencode(nxt)))] if page < pages else []
            return self.send(200, chunk, headers=headers)
        if path == "/next":
            return self.send(200, {"records": chunk,
                                   "links": {"next": ("%s?%s" % (url.path, urlencode(nxt))) if page < pages else None}})
        if path == "/ndjson":
            headers = [("Link", '<%s?%s>; rel="next"' % (url.path, urlencode(nxt)))] if page < pages else []
            body = "".join(json.dumps(r) + "\n" for r in chunk).encode()
            return self.send(200, body, ctype="application/x-ndjson", headers=headers)
        self.send(404, {"error": "no such endpoint %s" % url.path})

    def gate(self, prefix, q):
        """Answer and return True when the request is refused."""
        auth = self.headers.get("Authorization", "")
        if prefix == "/bearer" and auth != "Bearer test-token-123":
            self.send(401, {"error": "bad token"})
            return True
        if prefix == "/basic" and auth != "Basic " + base64.b64encode(b"user:pass-456").decode():
            self.send(401, {"error": "bad credentials"})
            return True
        if prefix == "/apikey" and self.headers.get("X-API-Key") != "key-789" and q.get("api_key") != "key-789":
            self.send(403, {"error": "bad key"})
            return True
        if prefix == "/oauth":
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
            with LOCK:
                left = TOKENS.get(token, 0)
                if left > 0:
                    TOKENS[token] = left - 1
            if left <= 0:
                self.send(401, {"error": "expired token"})
                return True
        key = (self.path.split("?")[0], q.get("page", "1"), q.get("offset", "0"))
        with LOCK:
            ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
            attempt = ATTEMPTS[key]
        if prefix == "/flaky" and attempt <= 2:
            self.send(500, {"error": "try again"})
            return True
        if prefix == "/ratelimit" and attempt == 1 and key[1] == "1" and key[2] == "0":
            self.send(429, {"error": "slow down"}, headers=[("Retry-After", "1")])
            return True
        return False


def main():
    port = int(sys.argv[1])
    n = 0
    args = sys.argv[2:]
    if "--records" in args:
        n = int(args[args.index("--records") + 1])
    if "--bench" in args:
        for per in map(int, args[args.index("--bench") + 1].split(",")):
            total = (n + per - 1) // per
            BENCH[per] = [
                json.dumps({"data": [make(i) for i in range(p * per + 1, min((p + 1) * per, n) + 1)],
                            "total_pages": total}).encode()
                for p in range(total)
            ]
    else:
        RECORDS.extend(make(i) for i in range(1, n + 1))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    if "--tls" in args:
        import ssl
        at = args.index("--tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args[at + 1], args[at + 2])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
