#!/usr/bin/env python3
"""Runs every jobs.py scenario against Spark's own Java External Shuffle Service, the reference
that kess must match. Needs only the Python standard library (run it with any python3).

    python3 tests/spark/validate_java_ess.py [--port 17337] [--only basic,auth_wrong_secret,...]

It calls setup.sh, starts the Java ESS with java_ess.sh (restarting it with a secret for the auth
runs, and with kill -9 + start in the middle of restart_between_stages), runs the scenarios one at
a time, prints one summary line per run with its wall time, and exits non-zero if any run failed.
Logs: target/spark-e2e-java/<run>/ (one <scenario>.stderr per run; the ESS log is under
target/java-ess/<port>/ess.log; executor logs under target/spark-home/work/<app-id>/).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SECRET = "kess-e2e-secret"

# (run name, jobs.py scenario, extra args, service secret)
RUNS = [
    ("basic", "basic", [], None),
    ("oldproto", "oldproto", [], None),
    ("fetch_to_disk", "fetch_to_disk", [], None),
    ("dynalloc", "dynalloc", [], None),
    ("restart_between_stages", "restart_between_stages", [], None),
    ("auth", "auth", ["--secret", SECRET], SECRET),
    ("auth_wrong_secret", "auth", ["--secret", SECRET, "--wrong-secret"], SECRET),
]


def sh(*cmd, **kw):
    return subprocess.run(list(cmd), check=True, text=True, **kw)


def setup():
    out = sh(os.path.join(HERE, "setup.sh"), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL).stdout
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return kv["PYTHON"], kv["SPARK_HOME"]


class Ess:
    def __init__(self, port, local_dir):
        self.port, self.local_dir, self.secret, self.up = port, local_dir, None, False
        self.script = os.path.join(HERE, "java_ess.sh")

    def ensure(self, secret):
        if self.up and self.secret == secret:
            return
        self.stop()
        self.start(secret)

    def start(self, secret):
        args = [self.script, "start", str(self.port), self.local_dir] + ([secret] if secret else [])
        sh(*args, stdin=subprocess.DEVNULL)
        self.up, self.secret = True, secret

    def stop(self):
        sh(self.script, "stop", str(self.port), stdin=subprocess.DEVNULL)
        self.up = False

    def crash_and_restart(self):
        sh(self.script, "kill9", str(self.port), stdin=subprocess.DEVNULL)
        self.start(self.secret)


def run_one(py, spark_home, ess, out_dir, name, scenario, extra, port):
    local_dir = os.path.join(out_dir, "local", name)
    os.makedirs(local_dir, exist_ok=True)
    done_file = os.path.join(out_dir, f"{name}.restart-done")
    cmd = [py, os.path.join(HERE, "jobs.py"), scenario, "--port", str(port), "--local-dir", local_dir,
           "--app-name", f"java-ess-{name}"] + extra
    if scenario == "restart_between_stages":
        cmd += ["--restart-done-file", done_file]
    env = dict(os.environ, SPARK_HOME=spark_home)
    stderr_path = os.path.join(out_dir, f"{name}.stderr")
    t = time.monotonic()
    restart_s = None
    with open(stderr_path, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                             text=True, env=env)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if line.strip() == "READY_FOR_RESTART":
                r = time.monotonic()
                ess.crash_and_restart()
                restart_s = time.monotonic() - r
                open(done_file, "w").close()
        code = p.wait()
    wall = time.monotonic() - t
    result = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
            break
    ok = code == 0 and result is not None and result.get("ok") is True
    return ok, wall, restart_s, result, stderr_path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=17337)
    ap.add_argument("--only", help="comma-separated run names: " + ",".join(r[0] for r in RUNS))
    ap.add_argument("--keep", action="store_true", help="keep the local dirs of passing runs")
    args = ap.parse_args()
    runs = RUNS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {r[0] for r in RUNS}
        if unknown:
            ap.error(f"unknown runs: {sorted(unknown)}")
        runs = [r for r in RUNS if r[0] in wanted]

    py, spark_home = setup()
    out_dir = os.path.join(REPO, "target", "spark-e2e-java", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir)
    ess = Ess(args.port, os.path.join(out_dir, "ess-local"))
    results = []
    try:
        for name, scenario, extra, secret in runs:
            ess.ensure(secret)
            print(f"== {name} ...", flush=True)
            ok, wall, restart_s, result, stderr_path = run_one(py, spark_home, ess, out_dir, name,
                                                               scenario, extra, args.port)
            d = (result or {}).get("details", {})
            extra_info = ""
            if restart_s is not None:
                extra_info += f" service_restart={restart_s:.1f}s"
            for k in ("map_stage_skipped", "map_stage_recomputed", "registration_failures"):
                if k in d:
                    extra_info += f" {k}={d[k]}"
            logs = d.get("executor_logs", {})
            if logs:
                extra_info += (f" remote_single_blocks={logs.get('remote_single_blocks')}"
                               f" remote_batch_blocks={logs.get('remote_batch_blocks')}")
            tot = d.get("totals", {})
            if tot:
                extra_info += f" remote_bytes={tot.get('remote_bytes')} to_disk={tot.get('remote_bytes_to_disk')}"
            print(f"{'PASS' if ok else 'FAIL'} {name} wall={wall:.1f}s{extra_info}", flush=True)
            if not ok:
                print(f"   error: {d.get('error')}\n   stderr: {stderr_path}", flush=True)
            elif not args.keep:
                shutil.rmtree(os.path.join(out_dir, "local", name), ignore_errors=True)
            results.append((name, ok, wall))
    finally:
        if ess.up:
            ess.stop()
    failed = [n for n, ok, _ in results if not ok]
    print(f"{len(results) - len(failed)}/{len(results)} passed; total {sum(w for _, _, w in results):.1f}s;"
          f" logs in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
