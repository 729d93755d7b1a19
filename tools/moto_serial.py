"""moto's server application, serving one request at a time.

`moto_server` runs its WSGI app on a threaded werkzeug server, and moto's DynamoDB then
evaluates a conditional update and applies it without a lock: two concurrent updates of one
item can both pass the same condition. Real DynamoDB never lets that happen (conditional
writes are atomic per item), and RejectWatch's exactly-once counting relies on it. Serving
requests one at a time restores that guarantee for tests.

One more change, to speed only: moto backs up a transaction by deep-copying the whole table
once per item of the transaction, so a 100-item TransactWriteItems on a table of a few
thousand counters takes seconds, and ingesting a large object takes hours. Here the
transaction instead keeps a copy of each item it touches, and a cancelled transaction puts
exactly those back: the same all-or-nothing outcome. Everything else is moto's own. (This
reaches into moto's internals, which is why tools/requirements.txt pins its version.)

Usage: python moto_serial.py -H 127.0.0.1 -p PORT
"""

import argparse
import copy
import signal
import sys

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


class _CopyKeepingTables:
    """`copy` as moto's DynamoDB module sees it: deep copies of everything but tables,
    which transactions no longer back up whole."""

    def __getattr__(self, name):
        return getattr(copy, name)

    @staticmethod
    def deepcopy(value, *args, **kwargs):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, *args, **kwargs)


def _transact_write_items_journaled(self, transact_items):
    journal = {}
    original_get_item = self.get_item

    # moto reads every item of the transaction through get_item before changing it.
    def get_item_and_remember(table_name, key, *args, **kwargs):
        current = original_get_item(table_name, key, *args, **kwargs)
        marker = (table_name, repr(sorted(key.items())))
        if marker not in journal:
            journal[marker] = (table_name, key, copy.deepcopy(current))
        return current

    self.get_item = get_item_and_remember
    try:
        return _original_transact_write_items(self, transact_items)
    except Exception:
        for table_name, key, before in journal.values():
            _restore(self.get_table(table_name), key, before)
        raise
    finally:
        del self.get_item


def _restore(table, key, before):
    hash_value = DynamoType(key[table.hash_key_attr])
    range_value = DynamoType(key[table.range_key_attr]) if table.has_range_key else None
    if before is None:
        table.delete_item(hash_value, range_value)
    elif range_value is not None:
        table.items[hash_value][range_value] = before
    else:
        table.items[hash_value] = before


_original_transact_write_items = DynamoDBBackend.transact_write_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    dynamodb_models.copy = _CopyKeepingTables()
    DynamoDBBackend.transact_write_items = _transact_write_items_journaled
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, app, threaded=False, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
