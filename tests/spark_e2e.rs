//! Real PySpark 3.5.7 applications (master `local-cluster[2,1,1024]`: two executor JVMs) whose
//! executors register with and fetch every remote shuffle block from kess's Spark listener, as
//! they would from Spark's own Java External Shuffle Service.
//!
//! The scenarios live in `tests/spark/jobs.py`, which checks each result against plain Python and
//! prints one JSON line; `tests/spark/setup.sh` installs pyspark into `target/spark-venv` (and Java
//! 17 if missing). The same scenarios pass against the Java ESS:
//! `python3 tests/spark/validate_java_ess.py`.
//!
//! The tests run one at a time (two local-clusters do not fit on two cores). Nothing here skips
//! itself: a missing Java or pyspark that setup.sh cannot install fails the test. The one
//! exception is `spark_plugin_from_a_pod_network_namespace`, which needs root to build a network
//! namespace and says so and passes without it.
//!
//! `KESS_SPARK_E2E_SERVICE=java` runs the same tests against Spark's Java ESS instead of kess
//! (started with `tests/spark/java_ess.sh`; the kess metrics checks are then left out), which is
//! how this harness itself was validated. See `tests/spark/README.md`.
//!
//! The `spark_plugin_*` tests use no shuffle-service setting at all: the kess ShuffleDataIO plugin
//! (`spark-plugin/`) registers the executors (on 127.0.0.1) with a kess that listens only on
//! 127.0.0.2, the stand-in for a node IP that differs from every pod IP, so nothing can reach kess
//! through the executors' own host.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;
use serde_json::Value;

const SECRET: &str = "kess-e2e-secret";
/// jobs.py gives up by itself after this long and still prints its JSON line.
const JOB_TIMEOUT: Duration = Duration::from_secs(420);
/// The test gives up (and kills the whole process group) after this long.
const HARD_TIMEOUT: Duration = Duration::from_secs(480);

/// Only one Spark application at a time. A tokio mutex: it is held across awaits, and a failed
/// test does not poison it for the next one.
static SPARK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct SparkEnv {
    python: PathBuf,
    spark_home: PathBuf,
    java: PathBuf,
    /// The kess Spark plugin (spark-plugin/), built by setup.sh against the venv's Spark jars.
    plugin_jar: PathBuf,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/spark/setup.sh` once per test binary (fast when already set up).
fn spark_env() -> &'static SparkEnv {
    static ENV: OnceLock<SparkEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/spark/setup.sh"))
            .stdin(Stdio::null())
            .output()
            .expect("run tests/spark/setup.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "tests/spark/setup.sh failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let get = |key: &str| -> PathBuf {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("setup.sh printed no {key}= line:\n{stdout}"))
        };
        SparkEnv {
            python: get("PYTHON"),
            spark_home: get("SPARK_HOME"),
            java: get("JAVA"),
            plugin_jar: get("PLUGIN_JAR"),
        }
    })
}

/// One run's working folder under target/tmp; removed when the run passes, kept (and named in
/// the failure message) when it fails.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(name: &str) -> WorkDir {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("spark-e2e")
            .join(format!("{name}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(dir.join("local")).expect("create work dir");
        // Canonical, so the allowed root and the executors' paths are spelled the same way.
        WorkDir(dir.canonicalize().expect("canonicalize work dir"))
    }

    fn local_dir(&self) -> PathBuf {
        self.0.join("local")
    }

    fn passed(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The jobs.py process, in its own process group so that a timeout or a panic takes the driver
/// JVM and both executor JVMs down with it.
struct JobProcess {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: PathBuf,
}

impl JobProcess {
    fn spawn(scenario: &str, port: u16, work: &WorkDir, extra: &[&str]) -> JobProcess {
        Self::spawn_in(None, scenario, port, work, extra)
    }

    /// Like `spawn`, inside the network namespace `netns` (`ip netns exec`: the driver and the
    /// executors see only that namespace's network, as in a pod).
    fn spawn_in(
        netns: Option<&Netns>,
        scenario: &str,
        port: u16,
        work: &WorkDir,
        extra: &[&str],
    ) -> JobProcess {
        use std::os::unix::process::CommandExt;
        let env = spark_env();
        let stderr = work.0.join(format!("{scenario}.stderr"));
        let mut cmd = match netns {
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &netns.name]).arg(&env.python);
                cmd
            }
            None => Command::new(&env.python),
        };
        cmd.arg(repo().join("tests/spark/jobs.py"))
            .arg(scenario)
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .arg("--local-dir")
            .arg(work.local_dir())
            .args(["--app-name", &format!("kess-e2e-{scenario}")])
            .args(["--timeout", &JOB_TIMEOUT.as_secs().to_string()])
            .args(extra)
            .env("SPARK_HOME", &env.spark_home)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
            .process_group(0);
        if let Some(home) = env
            .java
            .canonicalize()
            .ok()
            .and_then(|j| j.parent()?.parent().map(Path::to_path_buf))
        {
            cmd.env("JAVA_HOME", home);
        }
        let mut child = cmd.spawn().expect("spawn jobs.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        JobProcess {
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, or None at EOF.
    async fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.lines.recv()).await {
            Ok(line) => line,
            Err(_) => {
                self.kill_group();
                panic!(
                    "jobs.py did not finish within {HARD_TIMEOUT:?}; stderr tail:\n{}",
                    tail(&self.stderr, 60)
                );
            }
        }
    }

    fn kill_group(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for JobProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_group();
        }
    }
}

/// What one jobs.py run reported.
struct Outcome {
    json: Value,
    exit_ok: bool,
    stderr: PathBuf,
}

impl Outcome {
    fn details(&self) -> &Value {
        &self.json["details"]
    }

    /// Shuffle bytes the executors read remotely, i.e. through the service, in the named jobs
    /// (all jobs if `jobs` is empty).
    fn remote_bytes(&self, jobs: &[&str]) -> f64 {
        self.details()["jobs"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter(|j| jobs.is_empty() || jobs.contains(&j["name"].as_str().unwrap_or("")))
                    .filter_map(|j| j["remote_bytes"].as_f64())
                    .sum()
            })
            .unwrap_or(0.0)
    }
}

/// Reads stdout to the end (calling `on_line` for every line before the JSON result) and returns
/// the JSON line jobs.py printed last.
async fn finish(mut job: JobProcess, mut on_line: impl AsyncLineHook) -> Outcome {
    let deadline = Instant::now() + HARD_TIMEOUT;
    let mut last_json = None;
    while let Some(line) = job.next_line(deadline).await {
        if line.starts_with('{') {
            last_json = serde_json::from_str::<Value>(&line).ok();
        } else {
            on_line.line(&line).await;
        }
    }
    let status = tokio::task::block_in_place(|| job.child.wait()).expect("wait for jobs.py");
    let stderr = job.stderr.clone();
    let json = last_json.unwrap_or_else(|| {
        panic!(
            "jobs.py ({status}) printed no JSON result line; stderr tail:\n{}",
            tail(&stderr, 80)
        )
    });
    Outcome {
        json,
        exit_ok: status.success(),
        stderr,
    }
}

/// A callback for the non-JSON stdout lines (READY_FOR_RESTART).
trait AsyncLineHook {
    async fn line(&mut self, line: &str);
}

impl<T: AsyncLineHook> AsyncLineHook for &mut T {
    async fn line(&mut self, line: &str) {
        (**self).line(line).await
    }
}

struct NoHook;

impl AsyncLineHook for NoHook {
    async fn line(&mut self, _line: &str) {}
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The shuffle service under test: kess, or (with `KESS_SPARK_E2E_SERVICE=java`) Spark's own
/// Java ESS, to check the harness and the scenarios against the reference implementation.
enum Service {
    Kess(Daemon),
    Java(JavaEss),
}

fn use_java_ess() -> bool {
    match std::env::var("KESS_SPARK_E2E_SERVICE").as_deref() {
        Ok("java") => true,
        Ok("kess") | Err(_) => false,
        Ok(other) => panic!("KESS_SPARK_E2E_SERVICE={other}: expected kess or java"),
    }
}

impl Service {
    async fn start(work: &WorkDir, spark: SocketAddr, secret: Option<&str>) -> Service {
        if use_java_ess() {
            Service::Java(JavaEss::start(work, spark, secret))
        } else {
            Service::Kess(start_kess(work, spark, secret).await)
        }
    }

    /// kill -9 and start again on the same port(s) and state.
    async fn restart(self, spark: SocketAddr) -> Service {
        match self {
            Service::Kess(d) => {
                let d = d.restart().await;
                wait_listening(spark, &d.log).await;
                Service::Kess(d)
            }
            Service::Java(mut j) => {
                j.run("kill9", &[]);
                j.start_again();
                Service::Java(j)
            }
        }
    }

    fn log(&self) -> PathBuf {
        match self {
            Service::Kess(d) => d.log.clone(),
            Service::Java(j) => j.log(),
        }
    }

    /// Spark-protocol bytes served by this process (kess only; None for the Java ESS).
    async fn spark_bytes_served(&self) -> Option<(f64, String)> {
        match self {
            Service::Kess(d) => {
                let page = d.metrics().await;
                Some((
                    metric(&page, "kess_bytes_served_total{protocol=\"spark\"}"),
                    page,
                ))
            }
            Service::Java(_) => None,
        }
    }
}

/// Spark's Java ESS, driven by tests/spark/java_ess.sh; stopped on drop.
struct JavaEss {
    port: u16,
    local: PathBuf,
    secret: Option<String>,
    running: bool,
}

impl JavaEss {
    fn start(work: &WorkDir, spark: SocketAddr, secret: Option<&str>) -> JavaEss {
        let mut j = JavaEss {
            port: spark.port(),
            local: work.0.join("java-ess-local"),
            secret: secret.map(str::to_string),
            running: false,
        };
        j.start_again();
        j
    }

    fn start_again(&mut self) {
        let local = self.local.to_string_lossy().to_string();
        let mut args = vec![local];
        args.extend(self.secret.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("start", &args);
        self.running = true;
    }

    fn run(&mut self, cmd: &str, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo().join("tests/spark/java_ess.sh"))
            .arg(cmd)
            .arg(self.port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run java_ess.sh");
        assert!(
            out.status.success(),
            "java_ess.sh {cmd} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if cmd != "start" {
            self.running = false;
        }
    }

    fn log(&self) -> PathBuf {
        repo().join(format!("target/java-ess/{}/ess.log", self.port))
    }
}

impl Drop for JavaEss {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("bash")
                .arg(repo().join("tests/spark/java_ess.sh"))
                .args(["stop", &self.port.to_string()])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// Starts kess with its Spark listener on `spark` serving files under `work`'s local dir.
async fn start_kess(work: &WorkDir, spark: SocketAddr, secret: Option<&str>) -> Daemon {
    let spark_arg = spark.to_string();
    let roots = work.local_dir().to_string_lossy().to_string();
    let mut extra = vec![
        "--spark-addr",
        spark_arg.as_str(),
        "--spark-allowed-roots",
        roots.as_str(),
    ];
    if let Some(s) = secret {
        extra.extend(["--spark-auth-secret", s]);
    }
    let daemon = Daemon::start(&work.0.join("kess-data"), &extra).await;
    wait_listening(spark, &daemon.log).await;
    daemon
}

async fn wait_listening(addr: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "kess does not accept connections on --spark-addr {addr}; log:\n{}",
            tail(log, 80)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails with everything needed to debug: the JSON details, the driver's stderr and kess's log.
fn assert_ok(outcome: &Outcome, service: &Service, work: &WorkDir) {
    let ok = outcome.json["ok"].as_bool() == Some(true);
    assert!(
        ok && outcome.exit_ok,
        "scenario {} failed: {}\n\ndetails: {}\n\ndriver stderr tail ({}):\n{}\n\nservice log tail ({}):\n{}\n\nexecutor logs: {}\nwork dir kept: {}",
        outcome.json["scenario"],
        outcome.details()["error"],
        serde_json::to_string_pretty(outcome.details()).unwrap_or_default(),
        outcome.stderr.display(),
        tail(&outcome.stderr, 60),
        service.log().display(),
        tail(&service.log(), 60),
        outcome.details()["executor_logs"]["executor_log_dir"],
        work.0.display(),
    );
}

/// kess served Spark-protocol bytes, at least as many as the executors read remotely in `jobs`
/// (every remote shuffle byte goes through the service: readHostLocalDisk=false).
async fn assert_served(service: &Service, outcome: &Outcome, jobs: &[&str]) {
    let Some((served, page)) = service.spark_bytes_served().await else {
        eprintln!("(the Java ESS has no kess metrics; bytes served not checked)");
        return;
    };
    let remote = outcome.remote_bytes(jobs);
    eprintln!("kess served {served} Spark bytes; executors read {remote} bytes remotely");
    assert!(
        served > 0.0,
        "kess_bytes_served_total{{protocol=\"spark\"}} is {served}; metrics:\n{page}"
    );
    assert!(
        served >= remote,
        "kess served {served} bytes but the executors read {remote} bytes remotely"
    );
}

/// The plain scenarios: start kess, run, check the result and the metrics.
async fn run_simple(scenario: &str, secret: Option<&str>, extra: &[&str]) {
    let _serial = SPARK.lock().await;
    spark_env();
    let work = WorkDir::new(scenario);
    let spark = free_addr();
    let service = Service::start(&work, spark, secret).await;
    let job = JobProcess::spawn(scenario, spark.port(), &work, extra);
    let outcome = finish(job, NoHook).await;
    assert_ok(&outcome, &service, &work);
    assert_served(&service, &outcome, &[]).await;
    work.passed();
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_basic_rdd_and_dataframe_with_batch_fetch() {
    run_simple("basic", None, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_old_fetch_protocol_open_blocks() {
    run_simple("oldproto", None, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_fetch_to_disk_stream_requests() {
    run_simple("fetch_to_disk", None, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_dynamic_allocation_serves_removed_executors_output() {
    run_simple("dynalloc", None, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_sasl_authentication() {
    run_simple("auth", Some(SECRET), &["--secret", SECRET]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_wrong_secret_cannot_register() {
    let _serial = SPARK.lock().await;
    spark_env();
    let work = WorkDir::new("auth_wrong_secret");
    let spark = free_addr();
    let service = Service::start(&work, spark, Some(SECRET)).await;
    let job = JobProcess::spawn(
        "auth",
        spark.port(),
        &work,
        &["--secret", SECRET, "--wrong-secret"],
    );
    let outcome = finish(job, NoHook).await;
    // ok=true here means: the executors failed to register and the job did not run.
    assert_ok(&outcome, &service, &work);
    if let Some((served, _)) = service.spark_bytes_served().await {
        assert_eq!(
            served, 0.0,
            "kess served bytes to an application with the wrong secret"
        );
    }
    work.passed();
}

/// Restarts kess (kill -9, start on the same ports and data dir) when jobs.py is ready.
struct Restarter {
    service: Option<Service>,
    spark: SocketAddr,
    done_file: PathBuf,
    restarted: bool,
}

impl AsyncLineHook for Restarter {
    async fn line(&mut self, line: &str) {
        if line.trim() != "READY_FOR_RESTART" {
            return;
        }
        let service = self.service.take().expect("service");
        self.service = Some(service.restart(self.spark).await);
        self.restarted = true;
        std::fs::write(&self.done_file, b"").expect("create the restart-done file");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_kess_restart_between_stages_keeps_registrations_and_output() {
    let _serial = SPARK.lock().await;
    spark_env();
    let work = WorkDir::new("restart_between_stages");
    let spark = free_addr();
    let service = Service::start(&work, spark, None).await;
    let done_file = work.0.join("restart-done");
    let job = JobProcess::spawn(
        "restart_between_stages",
        spark.port(),
        &work,
        &["--restart-done-file", done_file.to_str().unwrap()],
    );
    let mut hook = Restarter {
        service: Some(service),
        spark,
        done_file,
        restarted: false,
    };
    let outcome = finish(job, &mut hook).await;
    let service = hook.service.take().expect("service");
    // jobs.py checked that the map stage was skipped, not recomputed, and the result is right.
    assert_ok(&outcome, &service, &work);
    assert!(hook.restarted, "jobs.py never printed READY_FOR_RESTART");
    assert_eq!(
        outcome.details()["map_stage_recomputed"],
        Value::Bool(false)
    );
    // Only the restarted process's counters: what it served after the restart.
    assert_served(&service, &outcome, &["after_restart"]).await;
    work.passed();
}

/// The "node IP" of the plugin tests: kess listens here, executors and driver run on 127.0.0.1.
const NODE_IP: &str = "127.0.0.2";

/// A port that is free on `NODE_IP`.
fn free_node_addr() -> SocketAddr {
    free_addr_on(NODE_IP.parse().expect("NODE_IP"))
}

fn free_addr_on(ip: std::net::IpAddr) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("bind an ephemeral port on {ip}: {e}"));
    l.local_addr().expect("local addr")
}

/// `kess shuffle plugin: removed N file(s) of shuffle S …` lines of the driver log: S -> N.
fn removed_by_shuffle(driver_log: &str) -> std::collections::BTreeMap<u64, u64> {
    let mut removed = std::collections::BTreeMap::new();
    for rest in driver_log
        .lines()
        .filter_map(|l| l.split("kess shuffle plugin: removed ").nth(1))
    {
        let words: Vec<&str> = rest.split_whitespace().collect();
        // N file(s) of shuffle S from ...
        if let (Some(n), Some(s)) = (words.first(), words.get(4)) {
            if let (Ok(n), Ok(s)) = (n.parse::<u64>(), s.parse::<u64>()) {
                *removed.entry(s).or_insert(0) += n;
            }
        }
    }
    removed
}

/// The plugin's own arguments to jobs.py, with kess at `kess_host`.
fn plugin_args(env: &SparkEnv, kess_host: &str) -> Vec<String> {
    vec![
        "--plugin-jar".into(),
        env.plugin_jar.to_string_lossy().into_owned(),
        "--kess-host".into(),
        kess_host.into(),
    ]
}

/// Dynamic allocation releases every executor after a shuffle; the next job reuses that shuffle
/// without recomputing it, fetched from kess at the node address the plugin advertised; dropping
/// the shuffle then deletes its files through kess.
/// With `secret`, kess requires SASL and the application runs with spark.authenticate=true.
/// With `pod`, the application runs in that network namespace and kess listens on `node_ip`, the
/// host's end of the pod network.
async fn run_plugin(
    name: &str,
    secret: Option<&str>,
    node_ip: std::net::IpAddr,
    pod: Option<&Netns>,
) -> Service {
    let _serial = SPARK.lock().await;
    let env = spark_env();
    let work = WorkDir::new(name);
    let spark = free_addr_on(node_ip);
    let service = Service::start(&work, spark, secret).await;
    let mut args = plugin_args(env, &node_ip.to_string());
    if let Some(s) = secret {
        args.extend(["--secret".to_string(), s.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = JobProcess::spawn_in(pod, "plugin", spark.port(), &work, &args);
    let outcome = finish(job, NoHook).await;
    // jobs.py checked: results, map stage skipped and not recomputed, registrations through the
    // plugin only, shuffle files on disk after the executors left and gone after the drop.
    assert_ok(&outcome, &service, &work);
    assert_eq!(outcome.details()["map_stage_skipped"], Value::Bool(true));
    assert_eq!(
        outcome.details()["map_stage_recomputed"],
        Value::Bool(false)
    );
    assert_served(&service, &outcome, &[]).await;
    if let Service::Kess(daemon) = &service {
        let page = daemon.metrics().await;
        let registrations = metric(&page, "kess_spark_registrations_total");
        assert!(
            registrations >= 1.0,
            "kess counted {registrations} Spark registrations; metrics:\n{page}"
        );
    }
    // The driver's plugin logs how many files each kess reported removed (its BlocksRemoved
    // answer): for the shuffle jobs.py dropped, and at application end for the one it left.
    let driver_log = std::fs::read_to_string(&outcome.stderr).unwrap_or_default();
    let removed = removed_by_shuffle(&driver_log);
    let left: Vec<u64> = outcome.details()["shuffles_left_for_app_end"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    assert!(
        !left.is_empty() && left.iter().all(|s| removed.contains_key(s)),
        "files removed through kess per shuffle: {removed:?}; shuffles left for the application's \
         end: {left:?}; driver stderr tail:\n{}",
        tail(&outcome.stderr, 40)
    );
    assert!(
        removed.len() > left.len() && removed.values().all(|&n| n > 0),
        "the dropped shuffle's files were not removed through kess: {removed:?}"
    );
    work.passed();
    service
}

fn node_ip() -> std::net::IpAddr {
    NODE_IP.parse().expect("NODE_IP")
}

#[tokio::test(flavor = "multi_thread")]
async fn spark_plugin_serves_released_executors_output_without_host_network() {
    run_plugin("plugin", None, node_ip(), None).await;
}

/// The same with the application in a network namespace of its own, wired to the host by a
/// bridge of veths as flannel wires pods: executors reach kess from their pod address, and kess
/// counts them as peers on this node (no pacing). Needs root (CAP_NET_ADMIN); without it the
/// test says so and passes.
#[tokio::test(flavor = "multi_thread")]
async fn spark_plugin_from_a_pod_network_namespace() {
    let Some(mut pod) = Netns::new("spark") else {
        return;
    };
    let (host, pod_ip) = pod.bridge_to_host(20);
    let service = run_plugin("plugin_pod", None, host.into(), Some(&pod)).await;
    let Service::Kess(daemon) = &service else {
        return;
    };
    let page = daemon.metrics().await;
    let series = |peers: &str, via: &str| {
        metric(
            &page,
            &format!(
                "kess_tcp_connections_total{{listener=\"spark\",peers=\"{peers}\",via=\"{via}\"}}"
            ),
        )
    };
    let from_pod = series("local", "pod_bridge");
    assert!(
        from_pod >= 2.0,
        "kess counted {from_pod} Spark connections from pods on this node ({pod_ip}); metrics:\n{page}"
    );
    let remote: f64 = ["gateway", "device", "lookup_failed"]
        .iter()
        .map(|via| series("remote", via))
        .sum();
    assert_eq!(remote, 0.0, "metrics:\n{page}");
}

/// The same with spark.authenticate=true: the plugin's registration and the driver's removals use
/// the application's secret, as Spark's own shuffle client does.
#[tokio::test(flavor = "multi_thread")]
async fn spark_plugin_with_sasl_authentication() {
    run_plugin("plugin_auth", Some(SECRET), node_ip(), None).await;
}

/// With no kess at the configured address, map tasks fail with the plugin's message, which names
/// the address and says what to check.
#[tokio::test(flavor = "multi_thread")]
async fn spark_plugin_wrong_kess_address_fails_with_clear_message() {
    let _serial = SPARK.lock().await;
    let env = spark_env();
    let work = WorkDir::new("plugin_bad_address");
    // Nothing listens here.
    let nowhere = free_node_addr();
    let args = plugin_args(env, NODE_IP);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = JobProcess::spawn("plugin_bad_address", nowhere.port(), &work, &args);
    let outcome = finish(job, NoHook).await;
    assert!(
        outcome.json["ok"].as_bool() == Some(true) && outcome.exit_ok,
        "plugin_bad_address failed: {}\n\ndetails: {}\n\ndriver stderr tail:\n{}",
        outcome.details()["error"],
        serde_json::to_string_pretty(outcome.details()).unwrap_or_default(),
        tail(&outcome.stderr, 60),
    );
    let message = outcome.details()["plugin_message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains(&format!("kess at {nowhere}")),
        "the plugin's failure does not name {nowhere}: {message}"
    );
    work.passed();
}

/// The driver refuses, at startup and with a message naming the setting, the settings the plugin
/// cannot serve (shuffle service on, decommission shuffle migration, push-based shuffle).
#[tokio::test(flavor = "multi_thread")]
async fn spark_plugin_refuses_settings_it_cannot_serve() {
    let _serial = SPARK.lock().await;
    let env = spark_env();
    let work = WorkDir::new("plugin_refusals");
    let args = plugin_args(env, NODE_IP);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = JobProcess::spawn("plugin_refusals", 7337, &work, &args);
    let outcome = finish(job, NoHook).await;
    assert!(
        outcome.json["ok"].as_bool() == Some(true) && outcome.exit_ok,
        "plugin_refusals failed: {}\n\ndetails: {}\n\ndriver stderr tail:\n{}",
        outcome.details()["error"],
        serde_json::to_string_pretty(outcome.details()).unwrap_or_default(),
        tail(&outcome.stderr, 60),
    );
    let refused = outcome.details()["refusals"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|x| x["refused"] == Value::Bool(true))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(refused, 3, "details: {}", outcome.details());
    work.passed();
}
