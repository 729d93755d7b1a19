"""moto's server application, serving one request at a time.

`moto_server` runs its WSGI app on a threaded werkzeug server, and moto's DynamoDB then
evaluates a conditional update and applies it without a lock: two concurrent updates of one
item can both pass the same condition. Real DynamoDB never lets that happen (conditional
writes are atomic per item), and RejectWatch's exactly-once counting relies on it. Serving
requests one at a time restores that guarantee for tests; everything else is moto's own.

Usage: python moto_serial.py -H 127.0.0.1 -p PORT
"""

import argparse
import signal
import sys

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
