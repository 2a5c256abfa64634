package io.kess.spark;

import java.util.HashMap;
import java.util.Map;
import org.apache.spark.SecurityManager;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.network.shuffle.ExternalBlockStoreClient;
import org.apache.spark.network.util.MapConfigProvider;
import org.apache.spark.network.util.TransportConf;
import scala.Tuple2;

/**
 * Builds Spark's own shuffle-service client the way Spark's BlockManager does (same "shuffle"
 * transport module, same SASL secret from the SecurityManager when spark.authenticate is on, same
 * registration timeout), so kess sees exactly what it would from a stock executor.
 */
final class KessClients {
  private KessClients() {}

  /**
   * A client for application {@code appId}; the caller closes it. The transport settings come
   * from the SparkConf directly (not SparkTransportConf, whose signature differs between Spark 3
   * and 4), with one client thread: the plugin sends a handful of small RPCs.
   */
  static ExternalBlockStoreClient open(SparkConf conf, String appId) {
    Map<String, String> settings = new HashMap<>();
    for (Tuple2<String, String> kv : conf.getAll()) {
      settings.put(kv._1(), kv._2());
    }
    settings.putIfAbsent("spark.shuffle.io.clientThreads", "1");
    settings.putIfAbsent("spark.shuffle.io.serverThreads", "1");
    TransportConf transport = new TransportConf("shuffle", new MapConfigProvider(settings));
    SecurityManager security = SparkEnv.get().securityManager();
    boolean auth = security.isAuthenticationEnabled();
    long timeoutMs = conf.getTimeAsMs("spark.shuffle.registration.timeout", "5000ms");
    ExternalBlockStoreClient client =
        new ExternalBlockStoreClient(transport, auth ? security : null, auth, timeoutMs);
    client.init(appId);
    return client;
  }
}
