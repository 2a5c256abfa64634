package io.kess.spark;

import java.io.IOException;
import java.util.Arrays;
import java.util.Map;
import java.util.Optional;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.network.shuffle.ExternalBlockStoreClient;
import org.apache.spark.network.shuffle.protocol.ExecutorShuffleInfo;
import org.apache.spark.shuffle.ShuffleManager;
import org.apache.spark.shuffle.api.ShuffleExecutorComponents;
import org.apache.spark.shuffle.api.ShuffleMapOutputWriter;
import org.apache.spark.shuffle.api.SingleSpillShuffleMapOutputWriter;
import org.apache.spark.shuffle.sort.io.LocalDiskShuffleExecutorComponents;
import org.apache.spark.storage.BlockManager;
import org.apache.spark.storage.BlockManagerId;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Writes map outputs with Spark's local-disk components, and hands them to the node's kess.
 *
 * <p>{@link #initializeExecutor} runs once per executor before its first map output is written
 * (SortShuffleManager initialises its executor components lazily, from the first shuffle write).
 * It registers the executor's block-manager dirs with kess, keeps those dirs when the executor
 * stops, and makes kess the location of every map output this executor writes. If registration
 * fails it throws, which fails the map task with a message naming what to check; the next task
 * on this executor tries again.
 */
final class KessShuffleExecutorComponents implements ShuffleExecutorComponents {
  private static final Logger LOG = LoggerFactory.getLogger(KessShuffleExecutorComponents.class);

  private final SparkConf conf;
  private final LocalDiskShuffleExecutorComponents delegate;

  KessShuffleExecutorComponents(SparkConf conf) {
    this.conf = conf;
    this.delegate = new LocalDiskShuffleExecutorComponents(conf);
  }

  @Override
  public void initializeExecutor(String appId, String execId, Map<String, String> extraConfigs) {
    delegate.initializeExecutor(appId, execId, extraConfigs);
    SparkEnv env = SparkEnv.get();
    BlockManager blockManager = env.blockManager();
    String host = KessSettings.host(conf);
    int port = KessSettings.port(conf);
    ExecutorShuffleInfo info = shuffleInfo(env, blockManager);

    register(appId, execId, host, port, info);

    // Spark deletes its block-manager dirs when the executor stops unless a shuffle service owns
    // them; kess does now (it deletes them when the application is removed).
    blockManager.diskBlockManager().deleteFilesOnStop_$eq(false);
    // Every MapStatus takes its location from shuffleServerId: reducers now fetch this
    // executor's outputs from kess, also after the executor is gone.
    BlockManagerId kess =
        BlockManagerId.apply(execId, host, port, blockManager.blockManagerId().topologyInfo());
    blockManager.shuffleServerId_$eq(kess);
    LOG.info(
        "kess shuffle plugin: executor {} of {} registered {} local dir(s) with kess at {}:{};"
            + " map outputs are served from there",
        execId,
        appId,
        info.localDirs.length,
        host,
        port);
  }

  /** What Spark's own BlockManager sends when it registers with a shuffle service. */
  private static ExecutorShuffleInfo shuffleInfo(SparkEnv env, BlockManager blockManager) {
    ShuffleManager manager = env.shuffleManager();
    String managerName = manager == null ? "(none)" : manager.getClass().getName();
    if (!KessSettings.SORT_SHUFFLE_MANAGER.equals(managerName)) {
      throw new IllegalStateException(
          "kess shuffle plugin supports only "
              + KessSettings.SORT_SHUFFLE_MANAGER
              + ", but this executor runs "
              + managerName
              + ". Remove spark.shuffle.manager or unset spark.shuffle.sort.io.plugin.class.");
    }
    String[] dirs = blockManager.diskBlockManager().localDirsString();
    int subDirs = blockManager.diskBlockManager().subDirsPerLocalDir();
    return new ExecutorShuffleInfo(dirs, subDirs, managerName);
  }

  /**
   * RegisterExecutor with kess, retried like Spark's own registration
   * (spark.shuffle.registration.maxAttempts, default 3).
   */
  private void register(
      String appId, String execId, String host, int port, ExecutorShuffleInfo info) {
    int attempts = Math.max(1, conf.getInt("spark.shuffle.registration.maxAttempts", 3));
    Exception last = null;
    for (int attempt = 1; attempt <= attempts; attempt++) {
      try (ExternalBlockStoreClient client = KessClients.open(conf, appId)) {
        client.registerWithShuffleServer(host, port, execId, info);
        return;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        last = e;
        break;
      } catch (Exception e) {
        last = e;
        LOG.warn(
            "kess shuffle plugin: registering executor {} of {} with kess at {}:{} failed"
                + " (attempt {} of {})",
            execId,
            appId,
            host,
            port,
            attempt,
            attempts,
            e);
        if (attempt < attempts) {
          try {
            Thread.sleep(1000L * attempt);
          } catch (InterruptedException ie) {
            Thread.currentThread().interrupt();
            break;
          }
        }
      }
    }
    throw new IllegalStateException(
        "kess shuffle plugin: could not register executor "
            + execId
            + " of "
            + appId
            + " with kess at "
            + host
            + ":"
            + port
            + " (local dirs "
            + Arrays.toString(info.localDirs)
            + "). Check that kess runs on this node and listens on that address"
            + " (its --spark-addr; on Kubernetes the DaemonSet must be reachable on the node IP),"
            + " that "
            + KessSettings.HOST_CONF
            + " / "
            + KessSettings.NODE_IP_ENV
            + " and "
            + KessSettings.PORT_CONF
            + " name it, that these dirs lie under kess's --spark-allowed-roots (a hostPath"
            + " mounted at the same path in the executor and in kess), and, with"
            + " spark.authenticate=true, that kess has the application's secret. Cause: "
            + (last == null ? "unknown" : last),
        last);
  }

  @Override
  public ShuffleMapOutputWriter createMapOutputWriter(
      int shuffleId, long mapTaskId, int numPartitions) throws IOException {
    return delegate.createMapOutputWriter(shuffleId, mapTaskId, numPartitions);
  }

  @Override
  public Optional<SingleSpillShuffleMapOutputWriter> createSingleFileMapOutputWriter(
      int shuffleId, long mapId) throws IOException {
    return delegate.createSingleFileMapOutputWriter(shuffleId, mapId);
  }
}
