"""Direct calls to a Hive Metastore for the Hive catalog tests, through the thrift client that
pyiceberg[hive] ships (`hive_metastore`):

    hms.py hold-lock URI DB TABLE     take the table's exclusive lock, then die by SIGKILL
                                      (what a writer killed mid-commit leaves behind)
    hms.py hold-lock-for URI DB TABLE SECONDS
                                      take the lock, hold it (heartbeating), then release it
    hms.py create-plain URI DB TABLE  create DB if missing and a plain (non-Iceberg) Hive table
    hms.py params URI DB TABLE        print the table's parameters and type as JSON
"""
import json
import os
import signal
import sys
import time
from urllib.parse import urlparse

from hive_metastore import ThriftHiveMetastore
from hive_metastore.ttypes import (
    Database, FieldSchema, HeartbeatRequest, LockComponent, LockLevel, LockRequest, LockType,
    NoSuchObjectException, SerDeInfo, StorageDescriptor, Table, UnlockRequest,
)
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport


def client(uri):
    u = urlparse(uri)
    transport = TTransport.TBufferedTransport(TSocket.TSocket(u.hostname, u.port))
    transport.open()
    return ThriftHiveMetastore.Client(TBinaryProtocol.TBinaryProtocol(transport))


def main():
    cmd, uri, db, table = sys.argv[1:5]
    c = client(uri)
    if cmd == "hold-lock":
        component = LockComponent(type=LockType.EXCLUSIVE, level=LockLevel.TABLE, dbname=db,
                                  tablename=table)
        r = c.lock(LockRequest(component=[component], user="killed-writer", hostname="test"))
        print(json.dumps({"lockid": r.lockid, "state": r.state}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    elif cmd == "hold-lock-for":
        component = LockComponent(type=LockType.EXCLUSIVE, level=LockLevel.TABLE, dbname=db,
                                  tablename=table)
        r = c.lock(LockRequest(component=[component], user="slow-writer", hostname="test"))
        deadline = time.monotonic() + float(sys.argv[5])
        while time.monotonic() < deadline:
            time.sleep(1)
            c.heartbeat(HeartbeatRequest(lockid=r.lockid))
        c.unlock(UnlockRequest(lockid=r.lockid))
        print(json.dumps({"lockid": r.lockid, "state": r.state}))
    elif cmd == "create-plain":
        try:
            c.get_database(db)
        except NoSuchObjectException:
            c.create_database(Database(name=db, parameters={}))
        sd = StorageDescriptor(
            cols=[FieldSchema(name="id", type="bigint")],
            inputFormat="org.apache.hadoop.mapred.TextInputFormat",
            outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            serdeInfo=SerDeInfo(serializationLib="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"),
        )
        c.create_table(Table(tableName=table, dbName=db, sd=sd, tableType="MANAGED_TABLE",
                             parameters={}, partitionKeys=[]))
        print(json.dumps({"created": f"{db}.{table}"}))
    elif cmd == "params":
        t = c.get_table(db, table)
        print(json.dumps({"tableType": t.tableType, "parameters": t.parameters,
                          "location": t.sd.location, "cols": [[f.name, f.type] for f in t.sd.cols]}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
