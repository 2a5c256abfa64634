package io.kess.spark;

import java.lang.reflect.Method;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.network.shuffle.ExternalBlockStoreClient;
import org.apache.spark.scheduler.MapStatus;
import org.apache.spark.shuffle.api.ShuffleDriverComponents;
import org.apache.spark.storage.BlockManagerId;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The driver side: declares the shuffle storage reliable and deletes shuffle files through kess.
 *
 * <p>{@code supportsReliableStorage() = true} is what lets dynamic allocation run with
 * spark.shuffle.service.enabled=false and shuffle tracking off, and keeps the DAGScheduler from
 * unregistering a lost executor's map outputs: kess still serves them.
 *
 * <p>Cleanup is best effort. When Spark drops a shuffle, the driver sends kess RemoveBlocks for the
 * data, index and checksum file of every map output, to the kess (node) that map status names, so
 * outputs of executors that are long gone are deleted too. Failures are logged and ignored; kess's
 * application TTL (or {@code kess remove-app}, or the controller) removes whatever is left,
 * including the executors' dirs, which Spark has no message for.
 */
final class KessShuffleDriverComponents implements ShuffleDriverComponents {
  private static final Logger LOG = LoggerFactory.getLogger(KessShuffleDriverComponents.class);
  /** How long a blocking removeShuffle waits for each kess. */
  private static final long REMOVE_TIMEOUT_MS = 30_000;

  private final SparkConf conf;
  private final Set<Integer> shuffles = ConcurrentHashMap.newKeySet();
  private ExternalBlockStoreClient client;

  KessShuffleDriverComponents(SparkConf conf) {
    this.conf = conf;
  }

  @Override
  public Map<String, String> initializeApplication() {
    KessSettings.checkCompatible(conf);
    LOG.info(
        "kess shuffle plugin: map outputs will be served by each node's kess on port {}",
        KessSettings.port(conf));
    return Collections.emptyMap();
  }

  @Override
  public boolean supportsReliableStorage() {
    return true;
  }

  @Override
  public void registerShuffle(int shuffleId) {
    shuffles.add(shuffleId);
  }

  @Override
  public void removeShuffle(int shuffleId, boolean blocking) {
    shuffles.remove(shuffleId);
    try {
      removeFromKess(shuffleId, blocking);
    } catch (Exception e) {
      LOG.warn("kess shuffle plugin: could not remove shuffle {} from kess", shuffleId, e);
    }
  }

  @Override
  public void cleanupApplication() {
    for (Integer shuffleId : new ArrayList<>(shuffles)) {
      removeShuffle(shuffleId, true);
    }
    synchronized (this) {
      if (client != null) {
        client.close();
        client = null;
      }
    }
  }

  /** Sends RemoveBlocks for every map output of the shuffle to the kess that serves it. */
  private void removeFromKess(int shuffleId, boolean blocking) throws Exception {
    MapStatus[] statuses = mapStatuses(shuffleId);
    if (statuses == null) {
      return;
    }
    int kessPort = KessSettings.port(conf);
    List<String> checksumSuffixes = checksumSuffixes();
    // (host, port, executor) -> file names of that executor's outputs.
    Map<BlockManagerId, List<String>> byExecutor = new LinkedHashMap<>();
    for (MapStatus status : statuses) {
      if (status == null || status.location() == null || status.location().port() != kessPort) {
        continue;
      }
      String base = "shuffle_" + shuffleId + "_" + status.mapId() + "_0";
      List<String> names = byExecutor.computeIfAbsent(status.location(), k -> new ArrayList<>());
      names.add(base + ".data");
      names.add(base + ".index");
      for (String suffix : checksumSuffixes) {
        names.add(base + suffix);
      }
    }
    if (byExecutor.isEmpty()) {
      return;
    }
    ExternalBlockStoreClient kess = client();
    List<Future<Integer>> pending = new ArrayList<>();
    for (Map.Entry<BlockManagerId, List<String>> e : byExecutor.entrySet()) {
      BlockManagerId loc = e.getKey();
      pending.add(
          kess.removeBlocks(
              loc.host(), loc.port(), loc.executorId(), e.getValue().toArray(new String[0])));
    }
    if (blocking) {
      int removed = 0;
      for (Future<Integer> f : pending) {
        removed += f.get(REMOVE_TIMEOUT_MS, TimeUnit.MILLISECONDS);
      }
      LOG.info(
          "kess shuffle plugin: removed {} file(s) of shuffle {} from {} executor(s) via kess",
          removed,
          shuffleId,
          byExecutor.size());
    }
  }

  /** Checksum files Spark writes next to each output (spark.shuffle.checksum.*). */
  private List<String> checksumSuffixes() {
    if (!conf.getBoolean("spark.shuffle.checksum.enabled", true)) {
      return Collections.emptyList();
    }
    String alg = conf.get("spark.shuffle.checksum.algorithm", "ADLER32").trim();
    return Collections.singletonList(".checksum." + alg);
  }

  private synchronized ExternalBlockStoreClient client() {
    if (client == null) {
      client = KessClients.open(conf, conf.getAppId());
    }
    return client;
  }

  /**
   * The map statuses the driver's MapOutputTrackerMaster holds for a shuffle, or null. Reached by
   * reflection (shuffleStatuses, ShuffleStatus.mapStatuses are Spark-internal and their Scala
   * collection types differ between Scala 2.12 and 2.13); a change there only loses cleanup.
   */
  private static MapStatus[] mapStatuses(int shuffleId) throws Exception {
    Object tracker = SparkEnv.get().mapOutputTracker();
    Method statusesMethod = tracker.getClass().getMethod("shuffleStatuses");
    Object statuses = statusesMethod.invoke(tracker);
    Method get = statuses.getClass().getMethod("get", Object.class);
    Object option = get.invoke(statuses, Integer.valueOf(shuffleId));
    if (option instanceof scala.Option) {
      scala.Option<?> o = (scala.Option<?>) option;
      if (o.isEmpty()) {
        return null;
      }
      Object shuffleStatus = o.get();
      Method ms = shuffleStatus.getClass().getDeclaredMethod("mapStatuses");
      ms.setAccessible(true);
      return ((MapStatus[]) ms.invoke(shuffleStatus)).clone();
    }
    return null;
  }
}
