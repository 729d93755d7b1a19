"""A fault-injecting HTTP proxy between RejectWatch's functions and moto.

Every request is forwarded to the upstream server (moto) unless a fault is drawn for it.
Faults are drawn from a seeded generator at a set rate, for the services named, and are
the ones AWS clients meet in practice:

  throttle      the service's own throttling error (DynamoDB ThrottlingException, S3
                503 SlowDown, SNS Throttling), not forwarded
  error         a 500 InternalServerError, not forwarded
  error_after   forwarded and applied, then answered with a 500 (the response is lost)
  delay         forwarded after a pause of 1 to 4 seconds (a slow answer; the functions
                set no attempt timeout, so they wait rather than retry)
  drop          the connection closed without an answer, not forwarded
  drop_after    forwarded and applied, then the connection closed without an answer
  delay_after   (rules only) forwarded and applied, then answered 3 seconds later: a
                window in which a test kills the caller after the request took effect
  truncate      (S3 GetObject only) forwarded, then half the body and a closed connection

The proxy also answers, on its own port, `GET /__faults` (the counts of requests and of
each fault, and under `operations` of each fault per operation such as `sns.Publish`, as
JSON) and `POST /__faults` (a JSON object replacing `rate`, `seed`,
`services`, `kinds`, and `rules`: deterministic faults for tests, each
`{"match": "<text in the operation or body>", "kind": "<fault>", "skip": N, "times": M}`
faulting the M matching requests after the first N).

Usage: python fault_proxy.py --port PORT --upstream http://127.0.0.1:MOTO [--seed N]
       [--rate R] [--services dynamodb,s3,sns] [--kinds throttle,error,...]
"""

import argparse
import http.client
import json
import random
import re
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALL_KINDS = ["throttle", "error", "error_after", "delay", "drop", "drop_after", "truncate"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "content-length"}
CREDENTIAL_SERVICE = re.compile(r"Credential=[^/]+/[0-9]{8}/[^/]+/([a-z0-9-]+)/aws4_request")


class Faults:
    """The fault settings and counts, shared by the request threads."""

    def __init__(self, seed, rate, services, kinds):
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.seed = seed
        self.rate = rate
        self.services = set(services)
        self.kinds = list(kinds)
        self.rules = []
        self.counts = {"requests": 0, "faults": 0}
        self.operations = {}

    def configure(self, settings):
        with self.lock:
            if "seed" in settings:
                self.seed = settings["seed"]
                self.random = random.Random(self.seed)
            if "rate" in settings:
                self.rate = float(settings["rate"])
            if "services" in settings:
                self.services = set(settings["services"])
            if "kinds" in settings:
                self.kinds = list(settings["kinds"])
            if "rules" in settings:
                self.rules = [dict(rule, seen=0, done=0) for rule in settings["rules"]]

    def snapshot(self):
        with self.lock:
            operations = {name: dict(kinds) for name, kinds in self.operations.items()}
            return dict(self.counts, rate=self.rate, seed=self.seed,
                        services=sorted(self.services), kinds=self.kinds,
                        operations=operations)

    def draw(self, service, operation, body):
        """The fault for one request, or None."""
        with self.lock:
            self.counts["requests"] += 1
            kind = None
            for rule in self.rules:
                if rule["match"] in operation or rule["match"].encode() in body:
                    rule["seen"] += 1
                    if rule["seen"] > rule.get("skip", 0) and rule["done"] < rule.get("times", 1):
                        rule["done"] += 1
                        kind = rule["kind"]
                        break
            if kind is None and service in self.services and self.rate > 0:
                if self.random.random() < self.rate:
                    kinds = [k for k in self.kinds
                             if k != "truncate" or operation == "s3.GetObject"]
                    kind = self.random.choice(kinds) if kinds else None
            if kind is not None:
                self.counts["faults"] += 1
                self.counts[kind] = self.counts.get(kind, 0) + 1
                per_operation = self.operations.setdefault(operation, {})
                per_operation[kind] = per_operation.get(kind, 0) + 1
            return kind

    def pause(self):
        with self.lock:
            return 1.0 + 3.0 * self.random.random()


def service_of(headers):
    match = CREDENTIAL_SERVICE.search(headers.get("Authorization", ""))
    return match.group(1) if match else "unknown"


def operation_of(service, method, path, headers, body):
    target = headers.get("X-Amz-Target")
    if target:
        return target
    if service in ("sns", "sqs"):
        action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
        return f"{service}.{action[0]}" if action else service
    if service == "s3":
        key = urllib.parse.urlparse(path).path.strip("/")
        if method == "GET" and "/" in key:
            return "s3.GetObject"
        return f"s3.{method}"
    return f"{service}.{method}"


def error_response(service, status, code, message):
    """(status, headers, body) of an error as the service itself would answer it."""
    request_id = "fault-%08x" % random.getrandbits(32)
    if service == "dynamodb":
        body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}",
                           "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0",
                   "x-amzn-RequestId": request_id}
    elif service == "s3":
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                f"<Message>{message}</Message><RequestId>{request_id}</RequestId></Error>").encode()
        headers = {"Content-Type": "application/xml", "x-amz-request-id": request_id}
    else:
        kind = "Receiver" if status >= 500 else "Sender"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
                f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId>"
                "</ErrorResponse>").encode()
        headers = {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}
    return status, headers, body


def throttling(service):
    if service == "dynamodb":
        return error_response(service, 400, "ThrottlingException", "Rate of requests exceeds the allowed throughput.")
    if service == "s3":
        return error_response(service, 503, "SlowDown", "Please reduce your request rate.")
    return error_response(service, 400, "Throttling", "Rate exceeded")


def internal_error(service):
    code = "InternalServerError" if service == "dynamodb" else "InternalError"
    return error_response(service, 500, code, "We encountered an internal error. Please try again.")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    faults = None
    upstream = None

    def log_message(self, format, *args):
        pass

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, headers, body):
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forward(self, body):
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=300)
        try:
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            out = {name: value for name, value in response.getheaders()
                   if name.lower() not in HOP_BY_HOP}
            return response.status, out, data
        finally:
            connection.close()

    def handle_control(self, body):
        if self.command == "POST":
            self.faults.configure(json.loads(body or b"{}"))
        data = json.dumps(self.faults.snapshot()).encode()
        self.reply(200, {"Content-Type": "application/json"}, data)

    def handle_any(self):
        body = self.read_body()
        if self.path.startswith("/__faults"):
            return self.handle_control(body)
        service = service_of(self.headers)
        operation = operation_of(service, self.command, self.path, self.headers, body)
        kind = self.faults.draw(service, operation, body)
        if kind == "throttle":
            return self.reply(*throttling(service))
        if kind == "error":
            return self.reply(*internal_error(service))
        if kind == "drop":
            return self.drop()
        if kind == "delay":
            time.sleep(self.faults.pause())
        try:
            status, headers, data = self.forward(body)
        except OSError as error:
            return self.reply(502, {"Content-Type": "text/plain"}, f"upstream: {error}".encode())
        if kind == "error_after":
            return self.reply(*internal_error(service))
        if kind == "drop_after":
            return self.drop()
        if kind == "delay_after":
            time.sleep(3.0)
        if kind == "truncate" and len(data) > 1:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            return self.drop()
        self.reply(status, headers, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--services", default="dynamodb,s3,sns")
    parser.add_argument("--kinds", default=",".join(ALL_KINDS))
    args = parser.parse_args()
    Handler.faults = Faults(args.seed, args.rate, args.services.split(","), args.kinds.split(","))
    Handler.upstream = urllib.parse.urlparse(args.upstream)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"fault proxy on {args.host}:{args.port} -> {args.upstream}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
