"""A shuffle-heavy PySpark job against each named shuffle service; prints the reduce stage's
wall time per service and the ratio to the first service.

    spark_job.py --work DIR --service kess=PORT --service java=PORT [--rows N] [--runs R]

Master local-cluster[2,1,1024]; spark.shuffle.service.enabled=true on PORT and
spark.shuffle.readHostLocalDisk=false so remote blocks go through the service;
spark.shuffle.compress=false so the shuffle is as large on the wire as the rows are. The job
repartitions N rows of (key, 128-char hex digest) by key (~155 bytes a row: 8M rows ≈ 1.2 GB of
shuffle) and sums the digests' lengths on the reduce side. Reduce-stage time comes from Spark's
own REST API (stage submission to completion). Services run alternately, `--runs` times each,
each run starting with the next service; the ratio is printed for the best and for the median
run (a run's time moves by ±10% on a shared 2-core machine, so one best run can mislead).
"""
import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_time(t):
    return datetime.datetime.strptime(t.replace("GMT", ""), "%Y-%m-%dT%H:%M:%S.%f")


def run_once(name, port, rows, work):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    # Executors register with the service on their own host: keep everything on loopback.
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    from pyspark.sql import SparkSession

    ui_port = free_port()
    local = os.path.join(work, f"spark-local-{name}")
    os.makedirs(local, exist_ok=True)
    spark = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName(f"kess-bench-job-{name}")
        .config("spark.driver.memory", "1g")
        .config("spark.executor.memory", "768m")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.local.dir", local)
        .config("spark.shuffle.service.enabled", "true")
        .config("spark.shuffle.service.port", str(port))
        .config("spark.shuffle.readHostLocalDisk", "false")
        .config("spark.shuffle.compress", "false")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.locality.wait", "0")
        .config("spark.ui.port", str(ui_port))
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        from pyspark.sql import functions as F

        df = spark.range(0, rows, numPartitions=16).selectExpr(
            "id % 1000003 as k", "sha2(cast(id as string), 512) as v"
        )
        total = df.repartition(64, "k").select(F.sum(F.length("v"))).collect()[0][0]
        if total != rows * 128:
            raise SystemExit(f"{name}: wrong result {total}, expected {rows * 128}")
        app = spark.sparkContext.applicationId
        url = f"http://127.0.0.1:{ui_port}/api/v1/applications/{app}/stages?status=complete"
        stages = json.load(urllib.request.urlopen(url, timeout=30))
        reduce = [s for s in stages if s.get("shuffleReadBytes", 0) > 0]
        if not reduce:
            raise SystemExit(f"{name}: no stage read shuffle data")
        seconds = sum(
            (parse_time(s["completionTime"]) - parse_time(s["submissionTime"])).total_seconds()
            for s in reduce
        )
        read = sum(s["shuffleReadBytes"] for s in reduce)
        remote = sum(s.get("shuffleRemoteBytesRead", 0) for s in reduce)
        return seconds, read, remote
    finally:
        spark.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True)
    p.add_argument("--service", action="append", required=True, metavar="NAME=PORT")
    p.add_argument("--rows", type=int, default=int(os.environ.get("KESS_BENCH_JOB_ROWS", 8_000_000)))
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args()
    services = [(n, int(v)) for n, v in (s.split("=", 1) for s in args.service)]
    times = {}
    for run in range(args.runs):
        # Each run starts with the next service, so none always gets the first (cold) turn.
        shift = run % len(services)
        for name, port in services[shift:] + services[:shift]:
            started = time.time()
            seconds, read, remote = run_once(name, port, args.rows, args.work)
            print(
                f"bench job service={name} run={run} reduce_seconds={seconds:.3f} "
                f"shuffle_read_bytes={read} remote_bytes={remote} "
                f"job_wall_seconds={time.time() - started:.1f}",
                flush=True,
            )
            times.setdefault(name, []).append(seconds)
    first = services[0][0]
    for name, _ in services[1:]:
        best = min(times[first]) / min(times[name])
        median = statistics.median(times[first]) / statistics.median(times[name])
        print(f"bench job-ratio {first}/{name} reduce_seconds={best:.3f} median={median:.3f}")


if __name__ == "__main__":
    main()
