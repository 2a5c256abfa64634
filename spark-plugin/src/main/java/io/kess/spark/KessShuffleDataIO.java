package io.kess.spark;

import org.apache.spark.SparkConf;
import org.apache.spark.shuffle.api.ShuffleDataIO;
import org.apache.spark.shuffle.api.ShuffleDriverComponents;
import org.apache.spark.shuffle.api.ShuffleExecutorComponents;

/**
 * Lets Spark executors on the pod network use the kess daemon of their node without hostNetwork.
 *
 * <p>Enable with {@code spark.shuffle.sort.io.plugin.class=io.kess.spark.KessShuffleDataIO}.
 * Executors write shuffle files exactly as Spark's default local-disk plugin does, then register
 * their block-manager dirs with the node's kess and advertise kess (node IP, kess port) as the
 * location of every map output, so reducers fetch from kess with Spark's unchanged read path and
 * the outputs outlive the executor. The driver side tells Spark the storage is reliable, which lets
 * dynamic allocation release executors without a shuffle service on the executor's own host.
 *
 * <p>Spark instantiates this class by reflection through the {@code (SparkConf)} constructor.
 */
public final class KessShuffleDataIO implements ShuffleDataIO {
  private final SparkConf conf;

  public KessShuffleDataIO(SparkConf conf) {
    this.conf = conf;
  }

  @Override
  public ShuffleExecutorComponents executor() {
    return new KessShuffleExecutorComponents(conf);
  }

  @Override
  public ShuffleDriverComponents driver() {
    return new KessShuffleDriverComponents(conf);
  }
}
