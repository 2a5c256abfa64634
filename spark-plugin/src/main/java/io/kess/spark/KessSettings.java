package io.kess.spark;

import org.apache.spark.SparkConf;

/**
 * The plugin's settings and the Spark settings it cannot work with, checked in one place so the
 * driver refuses a bad combination at startup and executors report the same facts.
 */
final class KessSettings {
  /** The node's kess address; wins over {@link #NODE_IP_ENV}. */
  static final String HOST_CONF = "spark.kess.host";
  /** kess's Spark-protocol port ({@code --spark-addr}). */
  static final String PORT_CONF = "spark.kess.port";
  /** Set from the downward API ({@code status.hostIP}) in the executor pod template. */
  static final String NODE_IP_ENV = "KESS_NODE_IP";
  static final int DEFAULT_PORT = 7337;

  static final String SORT_SHUFFLE_MANAGER = "org.apache.spark.shuffle.sort.SortShuffleManager";

  private KessSettings() {}

  static int port(SparkConf conf) {
    String raw = conf.get(PORT_CONF, Integer.toString(DEFAULT_PORT)).trim();
    int port;
    try {
      port = Integer.parseInt(raw);
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException(PORT_CONF + "=" + raw + " is not a port number", e);
    }
    if (port <= 0 || port > 65535) {
      throw new IllegalArgumentException(PORT_CONF + "=" + raw + " is not a port number");
    }
    return port;
  }

  /**
   * The node's kess host as an executor sees it: {@code spark.kess.host}, else the
   * {@code KESS_NODE_IP} environment variable.
   */
  static String host(SparkConf conf) {
    String host = conf.get(HOST_CONF, "").trim();
    if (host.isEmpty()) {
      String env = System.getenv(NODE_IP_ENV);
      host = env == null ? "" : env.trim();
    }
    if (host.isEmpty()) {
      throw new IllegalStateException(
          "kess shuffle plugin: no kess address for this executor. Set "
              + NODE_IP_ENV
              + " in the executor pod from the downward API (fieldRef status.hostIP), or set "
              + HOST_CONF
              + ".");
    }
    return host;
  }

  /**
   * Throws if Spark is configured in a way the plugin cannot serve; called on the driver, so the
   * application fails at startup rather than losing shuffle data later.
   */
  static void checkCompatible(SparkConf conf) {
    String manager = conf.get("spark.shuffle.manager", "sort").trim();
    if (!isSortShuffleManager(manager)) {
      throw new IllegalArgumentException(
          "kess shuffle plugin supports only the sort shuffle manager, but spark.shuffle.manager="
              + manager
              + ". Remove spark.shuffle.manager or unset spark.shuffle.sort.io.plugin.class.");
    }
    if (conf.getBoolean("spark.shuffle.service.enabled", false)) {
      throw new IllegalArgumentException(
          "kess shuffle plugin: set spark.shuffle.service.enabled=false. The plugin registers"
              + " executors with the node's kess itself; spark.shuffle.service.enabled=true makes"
              + " Spark also dial a shuffle service on the executor's own host.");
    }
    if (conf.getBoolean("spark.shuffle.push.enabled", false)) {
      throw new IllegalArgumentException(
          "kess shuffle plugin: push-based shuffle (spark.shuffle.push.enabled=true) is not"
              + " supported; set it to false.");
    }
    boolean decommission =
        conf.getBoolean("spark.storage.decommission.enabled", false)
            || conf.getBoolean("spark.decommission.enabled", false);
    if (decommission
        && conf.getBoolean("spark.storage.decommission.shuffleBlocks.enabled", true)) {
      throw new IllegalArgumentException(
          "kess shuffle plugin: set spark.storage.decommission.shuffleBlocks.enabled=false."
              + " Map outputs stay with the node's kess when an executor goes away; migrating them"
              + " to another executor would re-point their location away from kess.");
    }
    port(conf);
  }

  static boolean isSortShuffleManager(String name) {
    return name.equalsIgnoreCase("sort")
        || name.equalsIgnoreCase("tungsten-sort")
        || name.equals(SORT_SHUFFLE_MANAGER);
  }
}
