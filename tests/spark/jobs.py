#!/usr/bin/env python3
"""Real-PySpark end-to-end scenarios for an external shuffle service (kess or Spark's own Java ESS).

    python jobs.py <scenario> --port P --local-dir D [--host H] [--secret S] [--wrong-secret]
                   [--app-name N] [--restart-done-file F] [--timeout SECS] [--conf k=v ...]
                   [--plugin-jar J --kess-host K]

Each run starts one application on master local-cluster[2,1,1024] (two executor JVMs) with
spark.shuffle.service.enabled=true on port P and spark.shuffle.readHostLocalDisk=false, so every
block an executor needs from the other executor goes through the service at H:P. It prints progress
to stderr and exactly one JSON line to stdout at the end:

    {"scenario": ..., "ok": true|false, "details": {...}}

(restart_between_stages also prints the line READY_FOR_RESTART on stdout before that). The exit code
is 0 only when every assertion of the scenario held.

Scenarios:
  basic                   reduceByKey, sortBy, groupByKey on RDDs; a DataFrame groupBy with AQE
                          coalescing, which makes reducers fetch with batchFetchEnabled=true.
  oldproto                reduceByKey, groupByKey and the DataFrame groupBy with
                          spark.shuffle.useOldFetchProtocol=true (OpenBlocks instead of
                          FetchShuffleBlocks).
  fetch_to_disk           spark.network.maxRemoteBlockSizeFetchToMem=64: every remote fetch uses
                          StreamRequest/StreamResponse and lands in a temp file.
  dynalloc                dynamic allocation removes every executor after a shuffle; a second job
                          reuses the shuffle (map stage skipped), served by the service alone.
  restart_between_stages  job 1 materialises a shuffle; prints READY_FOR_RESTART, waits for
                          --restart-done-file to exist (the caller restarts the service meanwhile),
                          then job 2 reuses the shuffle without recomputing it.
  auth                    spark.authenticate=true with --secret. With --wrong-secret the
                          application uses a different secret than the service; executors must
                          fail to register and the job must not run (that counts as ok).
  plugin                  no shuffle service setting at all: the kess ShuffleDataIO plugin
                          (--plugin-jar) registers executors with kess at --kess-host:--port, given
                          to executors as KESS_NODE_IP the way a pod's downward API would. Dynamic
                          allocation removes every executor after a shuffle; a second job reuses
                          it (map stage skipped), then dropping the shuffle deletes its files
                          through kess although the executors that wrote them are gone.
  plugin_bad_address      the plugin with spark.kess.host=--kess-host:--port where no kess
                          listens: the map tasks must fail with the plugin's message saying what
                          to check, and the job must not succeed (that counts as ok).
  plugin_refusals         the plugin with settings it cannot serve (shuffle service on,
                          decommission shuffle migration, push-based shuffle):
                          each SparkContext (local mode) must fail to start with its message.

Checks common to all scenarios (except the wrong-secret run): every result equals a value computed
in plain Python; no task or stage attempt failed (a FetchFailed shows up as a failed stage); the
reduce side read bytes remotely, i.e. through the service; the executors' own fetch log (TRACE of
ShuffleBlockFetcherIterator, parsed from $SPARK_HOME/work/<app>/<exec>/stderr) names the remote
blocks, which tells single blocks (shuffle_S_M_R) from batches (shuffle_S_M_START_END).

Environment: SPARK_HOME (default: the pyspark package; tests/spark/setup.sh makes a cleaner one),
JAVA_HOME optional. Run with the Python of the venv that has pyspark==3.5.7.
"""

import argparse
import glob
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback

SCENARIOS = ["basic", "oldproto", "fetch_to_disk", "dynalloc", "restart_between_stages", "auth",
             "plugin", "plugin_bad_address", "plugin_refusals"]
PLUGIN_SCENARIOS = ("plugin", "plugin_bad_address", "plugin_refusals")
PLUGIN_CLASS = "io.kess.spark.KessShuffleDataIO"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

T0 = time.monotonic()


def log(msg):
    print(f"jobs.py [{time.monotonic() - T0:7.2f}s] {msg}", file=sys.stderr, flush=True)


class CheckFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CheckFailed(what)


# ---------------------------------------------------------------------------------------------
# Output: exactly one JSON line on stdout, whatever happens (including the watchdog firing).

_emit_lock = threading.Lock()
_emitted = False


def emit(scenario, ok, details):
    global _emitted
    with _emit_lock:
        if _emitted:
            return
        _emitted = True
        details = dict(details)
        details.setdefault("wall_s", round(time.monotonic() - T0, 2))
        sys.stdout.write(json.dumps({"scenario": scenario, "ok": bool(ok), "details": details},
                                    sort_keys=True, default=str) + "\n")
        sys.stdout.flush()


def start_watchdog(scenario, seconds, details):
    """Gives up on a hung run: prints the failure line and ends the process (JVM included)."""

    def fire():
        details["error"] = f"scenario did not finish within --timeout {seconds}s"
        log(details["error"])
        emit(scenario, False, details)
        os._exit(EXIT_FAILED)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


# ---------------------------------------------------------------------------------------------
# Spark setup

DRIVER_LOG4J = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n%ex
logger.dag.name = org.apache.spark.scheduler.DAGScheduler
logger.dag.level = info
logger.tsm.name = org.apache.spark.scheduler.TaskSetManager
logger.tsm.level = warn
logger.eam.name = org.apache.spark.ExecutorAllocationManager
logger.eam.level = info
logger.sched.name = org.apache.spark.scheduler.cluster.StandaloneSchedulerBackend
logger.sched.level = info
logger.master.name = org.apache.spark.deploy.master.Master
logger.master.level = info
logger.py4j.name = py4j
logger.py4j.level = warn
logger.kess.name = io.kess
logger.kess.level = info
"""

EXECUTOR_LOG4J = """\
rootLogger.level = info
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %p %c{1}: %m%n%ex
logger.sbfi.name = org.apache.spark.storage.ShuffleBlockFetcherIterator
logger.sbfi.level = trace
logger.nss.name = org.apache.spark.network.shuffle
logger.nss.level = debug
logger.oneforone.name = org.apache.spark.network.shuffle.OneForOneBlockFetcher
logger.oneforone.level = trace
"""

# Small JVMs that start fast: the jobs are tiny, startup dominates.
JVM_OPTS = "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss4m"


def spark_home():
    if os.environ.get("SPARK_HOME"):
        return os.environ["SPARK_HOME"]
    import pyspark

    return os.path.dirname(pyspark.__file__)


def base_conf(args, log_dir):
    driver_log4j = os.path.join(log_dir, "driver-log4j2.properties")
    executor_log4j = os.path.join(log_dir, "executor-log4j2.properties")
    with open(driver_log4j, "w") as f:
        f.write(DRIVER_LOG4J)
    with open(executor_log4j, "w") as f:
        f.write(EXECUTOR_LOG4J)
    return {
        "spark.master": "local-cluster[2,1,1024]",
        "spark.app.name": args.app_name or f"kess-e2e-{args.scenario}",
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.executor.cores": "1",
        "spark.driver.host": args.host,
        "spark.driver.bindAddress": args.host,
        "spark.local.dir": os.path.abspath(args.local_dir),
        "spark.shuffle.service.enabled": "true",
        "spark.shuffle.service.port": str(args.port),
        "spark.shuffle.readHostLocalDisk": "false",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.eventLog.enabled": "false",
        "spark.default.parallelism": "4",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.adaptive.enabled": "true",
        # Reducers must not wait for a preferred executor; both are equally good here.
        "spark.locality.wait": "0",
        "spark.python.worker.reuse": "true",
        "spark.driver.extraJavaOptions": f"{JVM_OPTS} -Dlog4j2.configurationFile=file:{driver_log4j}",
        "spark.executor.extraJavaOptions": f"{JVM_OPTS} -Dlog4j2.configurationFile=file:{executor_log4j}",
    }


def start_spark(conf_map):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    conf = SparkConf()
    for k, v in conf_map.items():
        if v != "":
            conf.set(k, v)
    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    return spark


def live_executors(sc):
    # getExecutorMemoryStatus includes the driver.
    return sc._jsc.sc().getExecutorMemoryStatus().size() - 1


def wait_executors(sc, pred, what, timeout):
    deadline = time.monotonic() + timeout
    while True:
        n = live_executors(sc)
        if pred(n):
            return n
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout}s waiting for {what} (live executors: {n})")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# Job statistics from Spark's own status store (works with the UI disabled).


class Stats:
    def __init__(self, sc):
        self.sc = sc
        self.jsc = sc._jsc.sc()
        self.counted_stages = set()
        self.jobs = []

    def run(self, name, fn):
        """Runs fn() as job group `name`, returns its result and records the group's statistics."""
        self.sc.setJobGroup(name, name)
        t = time.monotonic()
        failed = True
        try:
            result = fn()
            failed = False
        finally:
            self.sc._jsc.clearJobGroup()
            secs = time.monotonic() - t
            try:
                rec = self.collect(name)
            except Exception as e:  # keep the job's own error, not this one
                rec = {"name": name, "stats_error": str(e)[:300]}
            rec["seconds"] = round(secs, 2)
            rec["failed"] = failed
            self.jobs.append(rec)
            log(f"job {name}: {secs:.2f}s {json.dumps(rec, sort_keys=True)}")
        return result

    def collect(self, group):
        self.jsc.listenerBus().waitUntilEmpty()
        store = self.jsc.statusStore()
        rec = {"name": group, "jobs": 0, "stages": 0, "skipped_stages": 0, "failed_stages": 0,
               "failed_tasks": 0, "remote_bytes": 0, "remote_bytes_to_disk": 0, "remote_blocks": 0,
               "local_bytes": 0, "shuffle_write_bytes": 0}
        for jid in self.sc.statusTracker().getJobIdsForGroup(group):
            jd = store.job(jid)
            rec["jobs"] += 1
            rec["skipped_stages"] += jd.numSkippedStages()
            rec["failed_stages"] += jd.numFailedStages()
            rec["failed_tasks"] += jd.numFailedTasks()
            it = jd.stageIds().iterator()
            while it.hasNext():
                sid = it.next()
                rec["stages"] += 1
                if sid in self.counted_stages:
                    continue
                self.counted_stages.add(sid)
                sd = store.lastStageAttempt(sid)
                rec["remote_bytes"] += sd.shuffleRemoteBytesRead()
                rec["remote_bytes_to_disk"] += sd.shuffleRemoteBytesReadToDisk()
                rec["remote_blocks"] += sd.shuffleRemoteBlocksFetched()
                rec["local_bytes"] += sd.shuffleLocalBytesRead()
                rec["shuffle_write_bytes"] += sd.shuffleWriteBytes()
        return rec

    def totals(self):
        keys = ["remote_bytes", "remote_bytes_to_disk", "remote_blocks", "local_bytes", "failed_stages",
                "failed_tasks", "skipped_stages"]
        return {k: sum(j.get(k, 0) for j in self.jobs) for k in keys}


# ---------------------------------------------------------------------------------------------
# Executor logs: what the reducers fetched remotely, and registration failures.

REMOTE_BLOCK_RE = re.compile(r"Got remote block (shuffle_\d+_\d+_\d+(?:_\d+)?) ")
REGISTER_FAIL = "Unable to register with external shuffle server"
PLUGIN_REGISTERED = "kess shuffle plugin: executor"
PLUGIN_REGISTER_FAIL = "kess shuffle plugin: could not register executor"


def executor_logs(app_id):
    return sorted(glob.glob(os.path.join(spark_home(), "work", app_id, "*", "stderr")))


def scan_executor_logs(app_id):
    single, batch, reg_fail, registered = 0, 0, 0, 0
    plugin_registered, plugin_fail = 0, 0
    reg_example = ""
    examples = []
    for path in executor_logs(app_id):
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = REMOTE_BLOCK_RE.search(line)
                    if m:
                        if m.group(1).count("_") == 4:
                            batch += 1
                            if len(examples) < 3:
                                examples.append(m.group(1))
                        else:
                            single += 1
                    if REGISTER_FAIL in line:
                        reg_fail += 1
                        if not reg_example:
                            reg_example = line.strip()[:400]
                    if "Registering executor with local external shuffle service" in line:
                        registered += 1
                    if PLUGIN_REGISTERED in line and "registered" in line:
                        plugin_registered += 1
                    if PLUGIN_REGISTER_FAIL in line:
                        plugin_fail += 1
        except OSError:
            pass
    return {"remote_single_blocks": single, "remote_batch_blocks": batch, "batch_examples": examples,
            "registration_failures": reg_fail, "registration_failure_example": reg_example,
            "registration_attempts": registered,
            "plugin_registrations": plugin_registered, "plugin_registration_failures": plugin_fail,
            "executor_log_dir": os.path.join(spark_home(), "work", app_id)}


# ---------------------------------------------------------------------------------------------
# Workloads. Every expected value is computed in plain Python.

def rdd_reduce_by_key(sc, stats, name="reduceByKey", n=4000, keys=37, acc=None):
    def kv(i):
        if acc is not None:
            acc.add(1)
        return (i % keys, i)

    rdd = sc.parallelize(range(n), 4).map(kv).reduceByKey(lambda a, b: a + b, 4)
    expected = {}
    for i in range(n):
        expected[i % keys] = expected.get(i % keys, 0) + i
    got = dict(stats.run(name, rdd.collect))
    check(got == expected, f"{name}: result differs from the plain-Python value")
    return rdd, expected


def rdd_sort_by(sc, stats):
    rnd = random.Random(7)
    data = [rnd.randrange(1_000_000) for _ in range(5000)]
    got = stats.run("sortBy", lambda: sc.parallelize(data, 4).sortBy(lambda x: x, numPartitions=3).collect())
    check(got == sorted(data), "sortBy: result is not the sorted input")


def rdd_group_by_key(sc, stats):
    data = [(f"k{i % 11}", i * 3) for i in range(3000)]
    got = stats.run("groupByKey",
                    lambda: sc.parallelize(data, 4).groupByKey(3).mapValues(sorted).collect())
    expected = {}
    for k, v in data:
        expected.setdefault(k, []).append(v)
    check(dict(got) == {k: sorted(v) for k, v in expected.items()}, "groupByKey: groups differ")
    check(len(got) == 11, "groupByKey: wrong number of keys")


def rdd_payload_shuffle(sc, stats, name):
    """A shuffle that moves every value (groupByKey does not combine): ~20 KB per block of
    incompressible-ish text, so there is something to stream."""
    rnd = random.Random(11)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    data = [(i % 23, "".join(rnd.choices(letters, k=rnd.randrange(100)))) for i in range(6000)]
    got = stats.run(name, lambda: sc.parallelize(data, 4).groupByKey(4)
                    .mapValues(lambda vs: (len(vs), sum(len(v) for v in vs), max(vs))).collect())
    expected = {}
    for k, v in data:
        n, total, best = expected.get(k, (0, 0, ""))
        expected[k] = (n + 1, total + len(v), max(best, v))
    check(dict(got) == expected, f"{name}: result differs from the plain-Python value")


def df_group_by(spark, stats, shuffle_partitions=8):
    """A DataFrame aggregation whose reduce side AQE coalesces into one partition covering several
    contiguous shuffle partitions; Spark then fetches each map's range [start, end) as ONE block
    (FetchShuffleBlocks with batchFetchEnabled=true) unless useOldFetchProtocol is set."""
    from pyspark.sql import functions as F

    spark.conf.set("spark.sql.adaptive.enabled", "true")
    spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "true")
    spark.conf.set("spark.sql.adaptive.fetchShuffleBlocksInBatch", "true")
    spark.conf.set("spark.sql.shuffle.partitions", str(shuffle_partitions))
    n, keys = 20000, 13
    df = (spark.range(0, n, 1, 8).withColumn("k", F.col("id") % keys)
          .groupBy("k").agg(F.count("*").alias("c"), F.sum("id").alias("s")))
    rows = stats.run("dataframe_groupBy", df.collect)
    expected = {}
    for i in range(n):
        c, s = expected.get(i % keys, (0, 0))
        expected[i % keys] = (c + 1, s + i)
    check({r["k"]: (r["c"], r["s"]) for r in rows} == expected, "DataFrame groupBy: result differs")
    plan = df._jdf.queryExecution().executedPlan().toString()
    return {"aqe_coalesced": "AQEShuffleRead coalesced" in plan}


# ---------------------------------------------------------------------------------------------
# Scenarios


def _basic_body(args, spark, sc, stats, full):
    details = {}
    rdd_reduce_by_key(sc, stats)
    if full:
        rdd_sort_by(sc, stats)
    rdd_group_by_key(sc, stats)
    details.update(df_group_by(spark, stats))
    check(details["aqe_coalesced"], "AQE did not coalesce the DataFrame's shuffle partitions")
    return details


def run_scenario(args):
    details = {"port": args.port, "host": args.host}
    log_dir = tempfile.mkdtemp(prefix="kess-jobs-")
    conf = base_conf(args, log_dir)
    sc_holder = {}
    watchdog = start_watchdog(args.scenario, args.timeout, details)
    os.environ["SPARK_LOCAL_IP"] = args.host
    # Lets the Rust test or a developer find this run's executor logs.
    details["spark_home"] = spark_home()

    s = args.scenario
    if s == "oldproto":
        conf["spark.shuffle.useOldFetchProtocol"] = "true"
    elif s == "fetch_to_disk":
        conf["spark.network.maxRemoteBlockSizeFetchToMem"] = "64"
    elif s == "dynalloc":
        conf.update({
            "spark.dynamicAllocation.enabled": "true",
            "spark.dynamicAllocation.minExecutors": "0",
            "spark.dynamicAllocation.initialExecutors": "0",
            "spark.dynamicAllocation.maxExecutors": "2",
            "spark.dynamicAllocation.executorIdleTimeout": "2s",
            "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
            "spark.dynamicAllocation.sustainedSchedulerBacklogTimeout": "1s",
            "spark.dynamicAllocation.shuffleTracking.enabled": "false",
        })
    elif s == "auth":
        conf["spark.authenticate"] = "true"
        # With --wrong-secret the application's secret differs from the service's.
        conf["spark.authenticate.secret"] = (args.secret + "-wrong") if args.wrong_secret else args.secret
        if args.wrong_secret:
            conf.update({
                "spark.shuffle.registration.timeout": "3000ms",
                "spark.shuffle.registration.maxAttempts": "1",
            })
    elif s in PLUGIN_SCENARIOS:
        jar = os.path.abspath(args.plugin_jar)
        conf.update({
            # No shuffle service setting: the plugin talks to kess, Spark does not.
            "spark.shuffle.service.enabled": "false",
            "spark.shuffle.service.port": "",
            "spark.shuffle.sort.io.plugin.class": PLUGIN_CLASS,
            "spark.kess.port": str(args.port),
            "spark.driver.extraClassPath": jar,
            "spark.executor.extraClassPath": jar,
            "spark.storage.decommission.shuffleBlocks.enabled": "false",
        })
        if s == "plugin":
            conf.update({
                # How an executor pod learns its node's IP (downward API status.hostIP).
                "spark.executorEnv.KESS_NODE_IP": args.kess_host,
                "spark.dynamicAllocation.enabled": "true",
                "spark.dynamicAllocation.minExecutors": "0",
                "spark.dynamicAllocation.initialExecutors": "0",
                "spark.dynamicAllocation.maxExecutors": "2",
                "spark.dynamicAllocation.executorIdleTimeout": "2s",
                "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
                "spark.dynamicAllocation.sustainedSchedulerBacklogTimeout": "1s",
                "spark.dynamicAllocation.shuffleTracking.enabled": "false",
            })
        else:
            conf.update({
                "spark.kess.host": args.kess_host,
                "spark.shuffle.registration.maxAttempts": "1",
                "spark.task.maxFailures": "2",
            })
    if args.secret and s != "auth":
        # Any scenario can run against a service that requires authentication.
        conf["spark.authenticate"] = "true"
        conf["spark.authenticate.secret"] = args.secret
    for kv in args.conf:
        k, _, v = kv.partition("=")
        conf[k] = v
    details["conf"] = {k: v for k, v in conf.items()
                       if k.startswith(("spark.shuffle", "spark.network", "spark.dynamicAllocation",
                                        "spark.authenticate", "spark.master", "spark.local.dir",
                                        "spark.kess", "spark.executorEnv.KESS"))
                       and "secret" not in k}

    spark = None
    ok = False
    if s == "plugin_refusals":
        try:
            details.update(plugin_refusals_body(conf))
            ok = True
        except CheckFailed as e:
            details["error"] = str(e)
        watchdog.cancel()
        shutil.rmtree(log_dir, ignore_errors=True)
        emit(s, ok, details)
        return EXIT_OK if ok else EXIT_FAILED
    try:
        t = time.monotonic()
        log(f"starting SparkContext (master {conf['spark.master']}, service port {args.port})")
        spark = start_spark(conf)
        sc = spark.sparkContext
        sc_holder["sc"] = sc
        details["app_id"] = sc.applicationId
        details["context_start_s"] = round(time.monotonic() - t, 2)
        stats = Stats(sc)

        if s == "auth" and args.wrong_secret:
            details.update(wrong_secret_body(args, sc))
        elif s == "plugin_bad_address":
            wait_executors(sc, lambda n: n >= 1, "an executor", args.executor_timeout)
            details.update(plugin_bad_address_body(args, sc))
        else:
            if s not in ("dynalloc", "plugin"):
                t = time.monotonic()
                wait_executors(sc, lambda n: n >= 2, "2 executors", args.executor_timeout)
                details["executors_up_s"] = round(time.monotonic() - t, 2)
            if s == "basic":
                details.update(_basic_body(args, spark, sc, stats, full=True))
            elif s == "oldproto":
                details.update(_basic_body(args, spark, sc, stats, full=False))
            elif s == "fetch_to_disk":
                rdd_payload_shuffle(sc, stats, "payload_reduceByKey")
                rdd_reduce_by_key(sc, stats)
            elif s == "auth":
                rdd_reduce_by_key(sc, stats)
                rdd_group_by_key(sc, stats)
            elif s == "dynalloc":
                details.update(dynalloc_body(args, sc, stats))
            elif s == "plugin":
                details.update(plugin_body(args, sc, stats))
            elif s == "restart_between_stages":
                details.update(restart_body(args, sc, stats))
            common_checks(args, sc, stats, details)
        ok = True
    except CheckFailed as e:
        details["error"] = str(e)
    except Exception as e:  # a Spark job failure, a py4j error, ...
        details["error"] = summarize_error(e)
        details["traceback"] = traceback.format_exc()[-6000:]
    finally:
        if "sc" in sc_holder:
            try:
                if "stats" in locals():
                    details["jobs"] = stats.jobs
                    details["totals"] = stats.totals()
                details["executor_logs"] = scan_executor_logs(sc_holder["sc"].applicationId)
            except Exception as e:
                details.setdefault("warnings", []).append(f"collecting details: {e}")
        if spark is not None:
            t = time.monotonic()
            stop_spark(spark, args)
            details["stop_s"] = round(time.monotonic() - t, 2)
    watchdog.cancel()
    shutil.rmtree(log_dir, ignore_errors=True)
    if ok:
        log("all checks passed")
    else:
        log(f"FAILED: {details.get('error')}")
    emit(s, ok, details)
    return EXIT_OK if ok else EXIT_FAILED


def summarize_error(e):
    """A Java exception's message without its stack frames: the first lines and every cause."""
    lines = [l for l in str(e).splitlines() if l.strip() and not l.lstrip().startswith("at ")
             and not l.lstrip().startswith("...")]
    keep = lines[:3] + [l for l in lines[3:] if l.startswith("Caused by:")]
    return f"{type(e).__name__}: " + " | ".join(l.strip()[:400] for l in keep[:12])


def stop_spark(spark, args):
    """sc.stop() can hang when the application is half dead (wrong secret); bound it."""
    done = threading.Event()

    def stop():
        try:
            spark.stop()
        except Exception as e:
            log(f"stop: {e}")
        done.set()

    threading.Thread(target=stop, daemon=True).start()
    if not done.wait(60):
        log("SparkContext.stop() took over 60 s; leaving it")


def common_checks(args, sc, stats, details):
    tot = stats.totals()
    logs = scan_executor_logs(sc.applicationId)
    check(tot["failed_stages"] == 0,
          f"{tot['failed_stages']} stage attempt(s) failed (FetchFailed or similar); see the driver log")
    check(tot["failed_tasks"] == 0, f"{tot['failed_tasks']} task attempt(s) failed; see the executor logs")
    check(tot["remote_bytes"] > 0,
          "no shuffle bytes were read remotely, so nothing went through the shuffle service")
    check(logs["remote_single_blocks"] + logs["remote_batch_blocks"] > 0,
          "the executors' logs name no remote block fetched through the service")
    s = args.scenario
    if s == "basic":
        check(logs["remote_batch_blocks"] > 0,
              "no batch fetch (shuffle_S_M_START_END block) happened in the DataFrame job")
    if s == "oldproto":
        check(logs["remote_batch_blocks"] == 0, "batch fetch happened despite useOldFetchProtocol")
    if s == "fetch_to_disk":
        check(tot["remote_bytes_to_disk"] > 0,
              "no remote bytes were fetched to disk, so the StreamRequest path was not used")
        check(tot["remote_bytes_to_disk"] == tot["remote_bytes"],
              "some remote bytes were fetched to memory despite maxRemoteBlockSizeFetchToMem=64")


def dynalloc_body(args, sc, stats):
    details = {}
    acc = sc.accumulator(0)
    n = 4000
    rdd, expected = rdd_reduce_by_key(sc, stats, name="first", n=n, acc=acc)
    check(acc.value == n, f"map function ran {acc.value} times in the first job, expected {n}")
    details["executors_after_first_job"] = live_executors(sc)
    t = time.monotonic()
    wait_executors(sc, lambda k: k == 0, "every executor to be removed by dynamic allocation",
                   args.executor_timeout)
    details["all_executors_removed_after_s"] = round(time.monotonic() - t, 2)
    log("all executors removed; reusing the shuffle")
    got = dict(stats.run("reuse_after_removal", rdd.collect))
    check(got == expected, "reuse_after_removal: result differs from the plain-Python value")
    details["map_function_calls"] = acc.value
    details["map_stage_recomputed"] = acc.value != n
    check(acc.value == n, f"map stage was recomputed: map function ran {acc.value - n} more times")
    reuse = stats.jobs[-1]
    details["map_stage_skipped"] = reuse["skipped_stages"] >= 1
    check(reuse["skipped_stages"] >= 1, "the second job did not skip the map stage")
    check(reuse["remote_bytes"] > 0, "the second job read nothing through the service")
    return details


def shuffle_files(local_dir):
    """Shuffle data files under the application's local dir: {shuffle id: count}."""
    found = {}
    for path in glob.glob(os.path.join(local_dir, "**", "shuffle_*_*_0.data"), recursive=True):
        sid = int(os.path.basename(path).split("_")[1])
        found[sid] = found.get(sid, 0) + 1
    return found


def plugin_body(args, sc, stats):
    """dynalloc through the plugin, plus: the executors registered through the plugin and not
    through Spark's shuffle-service code, and dropping the shuffle deletes its files via kess."""
    details = dynalloc_body(args, sc, stats)
    logs = scan_executor_logs(sc.applicationId)
    details["plugin_registrations"] = logs["plugin_registrations"]
    check(logs["plugin_registrations"] >= 1, "no executor logged a registration through the plugin")
    check(logs["registration_attempts"] == 0,
          "an executor registered through Spark's shuffle-service code instead of the plugin")
    # The map outputs of the removed executors are still on disk (deleteFilesOnStop=false) ...
    before = shuffle_files(args.local_dir)
    details["shuffle_files_before_cleanup"] = before
    check(before, "no shuffle files left on disk after the executors that wrote them were removed")
    # ... until the driver drops the shuffle: the plugin asks kess to delete them (no executor
    # that wrote them is alive to do it).
    cleaner = sc._jsc.sc().cleaner()
    check(cleaner.isDefined(), "spark.cleaner.referenceTracking is off; cannot drop the shuffle")
    for sid in before:
        cleaner.get().doCleanupShuffle(sid, True)
    after = shuffle_files(args.local_dir)
    details["shuffle_files_after_cleanup"] = after
    check(not after, f"shuffle files left after the shuffle was dropped: {after}")
    # One more shuffle, left for the plugin to drop when the application stops (the caller checks
    # the driver log for it: the worker deletes the application's dirs at the end anyway).
    rdd_group_by_key(sc, stats)
    details["shuffles_left_for_app_end"] = sorted(shuffle_files(args.local_dir))
    check(details["shuffles_left_for_app_end"], "the last job left no shuffle files")
    return details


# Settings the plugin's driver side must refuse at startup, and a word its message must contain.
# (Another spark.shuffle.manager is refused too, but Spark 3.5 ships no other manager to try.)
PLUGIN_REFUSALS = [
    ({"spark.shuffle.service.enabled": "true"}, "spark.shuffle.service.enabled=false"),
    ({"spark.storage.decommission.enabled": "true",
      "spark.storage.decommission.shuffleBlocks.enabled": "true"},
     "spark.storage.decommission.shuffleBlocks.enabled=false"),
    ({"spark.shuffle.push.enabled": "true"}, "push-based shuffle"),
]


def plugin_refusals_body(conf):
    """Each incompatible setting: SparkContext creation fails with the plugin's message."""
    from pyspark import SparkConf, SparkContext

    os.environ["PYSPARK_PYTHON"] = sys.executable
    base = dict(conf)
    # No executors are needed to see the driver refuse; local mode starts in a second or two.
    base["spark.master"] = "local[1]"
    results = []
    for extra, expect in PLUGIN_REFUSALS:
        c = SparkConf()
        for k, v in {**base, **extra}.items():
            if v != "":
                c.set(k, v)
        try:
            sc = SparkContext(conf=c)
            sc.stop()
            err = None
        except Exception as e:
            err = str(e)
        i = err.find("kess shuffle plugin") if err else -1
        msg = err[i:err.find("\n", i)] if i >= 0 else (err or "")[:300]
        results.append({"settings": extra, "refused": err is not None, "message": msg})
        log(f"refusal {extra}: {msg}")
        check(err is not None, f"SparkContext started with {extra}")
        check(i >= 0 and expect in msg, f"{extra}: expected the plugin's message with '{expect}', got: {msg}")
    return {"refusals": results}


def plugin_bad_address_body(args, sc):
    """No kess at the address: map tasks must fail with the plugin's explanation."""
    details = {}
    err = ""
    try:
        sc.parallelize(range(100), 2).map(lambda i: (i % 3, 1)).reduceByKey(lambda a, b: a + b).collect()
        details["job_succeeded"] = True
    except Exception as e:
        details["job_succeeded"] = False
        details["job_error"] = summarize_error(e)[:3000]
        err = str(e)
    check(not details["job_succeeded"], "the job succeeded although no kess listens at the address")
    i = err.find(PLUGIN_REGISTER_FAIL)
    details["plugin_message"] = err[i:err.find("\n", i)] if i >= 0 else ""
    where = f"kess at {args.kess_host}:{args.port}"
    check(i >= 0, f"the job failed, but not with '{PLUGIN_REGISTER_FAIL}': {details['job_error']}")
    msg = details["plugin_message"]
    check(where in msg, f"the failure does not name '{where}': {msg}")
    check("--spark-allowed-roots" in msg, f"the failure does not say what to check: {msg}")
    return details


def restart_body(args, sc, stats):
    details = {}
    acc = sc.accumulator(0)
    n = 4000
    rdd, expected = rdd_reduce_by_key(sc, stats, name="before_restart", n=n, acc=acc)
    check(acc.value == n, f"map function ran {acc.value} times in the first job, expected {n}")
    print("READY_FOR_RESTART", flush=True)
    log(f"READY_FOR_RESTART; waiting for {args.restart_done_file}")
    t = time.monotonic()
    while not os.path.exists(args.restart_done_file):
        if time.monotonic() - t > args.restart_timeout:
            raise CheckFailed(f"{args.restart_done_file} did not appear within {args.restart_timeout}s")
        time.sleep(0.1)
    details["waited_for_restart_s"] = round(time.monotonic() - t, 2)
    got = dict(stats.run("after_restart", rdd.collect))
    check(got == expected, "after_restart: result differs from the plain-Python value")
    details["map_function_calls"] = acc.value
    details["map_stage_recomputed"] = acc.value != n
    check(acc.value == n, f"map stage was recomputed after the restart: {acc.value - n} more map calls")
    after = stats.jobs[-1]
    details["map_stage_skipped"] = after["skipped_stages"] >= 1
    check(after["skipped_stages"] >= 1, "the job after the restart did not skip the map stage")
    check(after["remote_bytes"] > 0, "the job after the restart read nothing through the service")
    return details


def wrong_secret_body(args, sc):
    """The executors cannot register with the service, so no task can run: expect that."""
    details = {}
    result = {}

    def job():
        try:
            result["value"] = sc.parallelize(range(100), 2).map(lambda i: (i % 3, 1)) \
                .reduceByKey(lambda a, b: a + b).collect()
        except Exception as e:
            result["error"] = f"{type(e).__name__}: {str(e)[:500]}"

    th = threading.Thread(target=job, daemon=True)
    th.start()
    t = time.monotonic()
    logs = {}
    while time.monotonic() - t < args.job_timeout:
        th.join(0.5)
        logs = scan_executor_logs(sc.applicationId)
        if not th.is_alive() or logs["registration_failures"] > 0:
            break
    details["waited_s"] = round(time.monotonic() - t, 2)
    details["job_finished"] = not th.is_alive()
    details["job_succeeded"] = "value" in result
    details["job_error"] = result.get("error")
    details["registration_failures"] = logs.get("registration_failures", 0)
    details["registration_failure_example"] = logs.get("registration_failure_example", "")
    check(not details["job_succeeded"], "the job succeeded although the secrets differ")
    # Positive evidence that the failure is the expected one, not e.g. executors that crash.
    check(details["registration_failures"] > 0,
          f"no executor logged '{REGISTER_FAIL}' within {args.job_timeout}s"
          + (f" (the job failed with: {details['job_error']})" if details["job_error"] else ""))
    try:
        sc.cancelAllJobs()
    except Exception:
        pass
    return details


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=SCENARIOS)
    p.add_argument("--port", type=int, required=True, help="the shuffle service's port")
    p.add_argument("--host", default="127.0.0.1", help="host everything binds to and advertises")
    p.add_argument("--local-dir", required=True, help="spark.local.dir of the application")
    p.add_argument("--secret", help="the service's spark.authenticate.secret")
    p.add_argument("--wrong-secret", action="store_true",
                   help="auth: the application uses a different secret and expects to fail")
    p.add_argument("--app-name")
    p.add_argument("--restart-done-file", help="restart_between_stages: created once the service restarted")
    p.add_argument("--restart-timeout", type=float, default=300)
    p.add_argument("--executor-timeout", type=float, default=120,
                   help="how long executors may take to start or to be removed")
    p.add_argument("--job-timeout", type=float, default=60, help="auth --wrong-secret: give up after")
    p.add_argument("--timeout", type=float, default=600, help="whole-run watchdog")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark setting (repeatable; applied last)")
    p.add_argument("--plugin-jar", help="plugin scenarios: the kess Spark plugin jar")
    p.add_argument("--kess-host", default="127.0.0.2",
                   help="plugin scenarios: the node address executors use for kess")
    args = p.parse_args(argv)
    if args.scenario in PLUGIN_SCENARIOS and not args.plugin_jar:
        p.error(f"{args.scenario} needs --plugin-jar")
    if args.wrong_secret and args.scenario != "auth":
        p.error("--wrong-secret only applies to the auth scenario")
    if args.scenario == "auth" and not args.secret:
        p.error("auth needs --secret (the service's secret)")
    if args.scenario == "restart_between_stages" and not args.restart_done_file:
        p.error("restart_between_stages needs --restart-done-file")
    os.makedirs(args.local_dir, exist_ok=True)
    return run_scenario(args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # py4j/JVM threads can keep the interpreter alive; the JSON line is out, leave now.
    os._exit(code)
