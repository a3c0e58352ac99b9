// A real Apache Hive Metastore (Hive 2.3.9, embedded Derby) bound to 127.0.0.1 only, for tests.
// Built and run by tests/hms/start-hms.sh; it needs the Hive jars that ship inside the
// PyPI package pyspark (pyspark/jars/*).
import java.net.InetSocketAddress;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;

import org.apache.hadoop.hive.conf.HiveConf;
import org.apache.hadoop.hive.metastore.HiveMetaStore;
import org.apache.hadoop.hive.metastore.IHMSHandler;
import org.apache.hadoop.hive.metastore.RetryingHMSHandler;
import org.apache.hadoop.hive.metastore.api.ThriftHiveMetastore;
import org.apache.hadoop.hive.metastore.txn.TxnDbUtil;
import org.apache.hadoop.hive.metastore.txn.TxnStore;
import org.apache.hadoop.hive.metastore.txn.TxnUtils;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.server.TServer;
import org.apache.thrift.server.TThreadPoolServer;
import org.apache.thrift.transport.TServerSocket;
import org.apache.thrift.transport.TTransportFactory;

public class LoopbackMetastore {
  public static void main(String[] args) throws Exception {
    int port = args.length > 0 ? Integer.parseInt(args[0]) : 9083;
    HiveConf conf = new HiveConf(HiveMetaStore.class);
    // Lock/transaction tables: Iceberg's Hive commits take a metastore lock.
    TxnDbUtil.setConfValues(conf);
    TxnDbUtil.prepDb(conf);
    // The lock reaper a production metastore runs as its housekeeping service
    // (AcidHouseKeeperService, with hive.compactor.initiator.on): locks whose holder stopped
    // heartbeating for hive.txn.timeout are removed. The stock launcher starts it; this one
    // builds the server itself, so it schedules the same call.
    TxnStore txns = TxnUtils.getTxnStore(conf);
    ScheduledExecutorService reaper = Executors.newSingleThreadScheduledExecutor(r -> {
      Thread t = new Thread(r, "lock-reaper");
      t.setDaemon(true);
      return t;
    });
    reaper.scheduleWithFixedDelay(() -> {
      try {
        txns.performTimeOuts();
      } catch (Throwable e) {
        e.printStackTrace();
      }
    }, 2, 2, TimeUnit.SECONDS);
    HiveMetaStore.HMSHandler base = new HiveMetaStore.HMSHandler("pipe-test-hms", conf, false);
    IHMSHandler handler = RetryingHMSHandler.getProxy(conf, base, true);
    TServerSocket socket = new TServerSocket(new InetSocketAddress("127.0.0.1", port));
    TThreadPoolServer.Args serverArgs = new TThreadPoolServer.Args(socket)
        .processor(new ThriftHiveMetastore.Processor<>(handler))
        .transportFactory(new TTransportFactory())
        .protocolFactory(new TBinaryProtocol.Factory())
        .minWorkerThreads(2)
        .maxWorkerThreads(32);
    TServer server = new TThreadPoolServer(serverArgs);
    System.out.println("hive metastore listening on 127.0.0.1:" + port);
    server.serve();
  }
}
