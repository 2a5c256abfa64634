//! Every metric kess exports, named in one place. Handlers call the small functions below
//! rather than naming metrics inline, so the names and labels stay consistent.

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const BYTES_SERVED: &str = "kess_bytes_served_total";
pub const BLOCKS_SERVED: &str = "kess_blocks_served_total";
pub const BYTES_RECEIVED: &str = "kess_bytes_received_total";
pub const FETCH_LATENCY: &str = "kess_fetch_latency_seconds";
pub const ACTIVE_STREAMS: &str = "kess_active_streams";
pub const PUSHES: &str = "kess_pushes_total";
pub const REGISTERED_APPS: &str = "kess_registered_applications";
pub const REGISTERED_EXECUTORS: &str = "kess_registered_executors";
pub const STORED_BYTES: &str = "kess_stored_bytes";
pub const STORED_OUTPUTS: &str = "kess_stored_map_outputs";
pub const DISK_FREE: &str = "kess_disk_free_bytes";
pub const CHECKSUM_FAILURES: &str = "kess_checksum_failures_total";
pub const ERRORS: &str = "kess_errors_total";
pub const RECOVERED_OUTPUTS: &str = "kess_recovered_map_outputs_total";
pub const RECOVERY_DISCARDED: &str = "kess_recovery_discarded_total";
pub const APPS_REMOVED: &str = "kess_applications_removed_total";
pub const BYTES_FREED: &str = "kess_bytes_freed_total";
pub const CACHE_LOOKUPS: &str = "kess_cache_lookups_total";
pub const SPARK_REGISTRATIONS: &str = "kess_spark_registrations_total";
pub const SPARK_BLOCKS_REMOVED: &str = "kess_spark_blocks_removed_total";
pub const SPARK_OPEN_STREAMS: &str = "kess_spark_open_streams";
pub const SPARK_CONNECTIONS: &str = "kess_spark_connections";
pub const CORRUPTION_DIAGNOSES: &str = "kess_spark_corruption_diagnoses_total";
pub const APPS_EXPIRED: &str = "kess_applications_expired_total";
pub const HEAP_TRIMS: &str = "kess_heap_trims_total";
pub const TCP_CONGESTION: &str = "kess_tcp_congestion_control_info";
pub const TCP_CONNECTIONS: &str = "kess_tcp_connections_total";
pub const SPARK_UNCACHED_BLOCKS: &str = "kess_spark_uncached_blocks_total";
pub const SPARK_PIPES_IN_USE: &str = "kess_spark_pipes_in_use";
pub const SPARK_PIPE_REQUESTS: &str = "kess_spark_pipe_requests_total";

/// Protocol label values.
pub const GRPC: &str = "grpc";
pub const SPARK: &str = "spark";

/// Installs the global Prometheus recorder and describes every metric.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(FETCH_LATENCY.to_string()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Prefix("kess_controller_".to_string()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(BYTES_SERVED, "Block bytes sent to clients, by protocol.");
    describe_counter!(
        BLOCKS_SERVED,
        "Blocks (partitions or ranges) sent, by protocol."
    );
    describe_counter!(BYTES_RECEIVED, "Map output bytes received, by protocol.");
    describe_histogram!(
        FETCH_LATENCY,
        "Time to serve one fetch request, by protocol."
    );
    describe_gauge!(
        ACTIVE_STREAMS,
        "Streams in progress, by protocol and direction."
    );
    describe_counter!(PUSHES, "Map output pushes by outcome.");
    describe_gauge!(
        REGISTERED_APPS,
        "Applications with at least one registered executor."
    );
    describe_gauge!(REGISTERED_EXECUTORS, "Executors currently registered.");
    describe_gauge!(STORED_BYTES, "Bytes of committed map outputs kess stores.");
    describe_gauge!(STORED_OUTPUTS, "Committed map outputs kess stores.");
    describe_gauge!(DISK_FREE, "Free bytes on the data directory's filesystem.");
    describe_counter!(
        CHECKSUM_FAILURES,
        "Blocks refused because their bytes no longer match their CRC32."
    );
    describe_counter!(ERRORS, "Requests that failed, by protocol and kind.");
    describe_counter!(
        RECOVERED_OUTPUTS,
        "Committed map outputs found on disk at start."
    );
    describe_counter!(
        RECOVERY_DISCARDED,
        "Partial or damaged outputs discarded at start."
    );
    describe_counter!(APPS_REMOVED, "Applications whose data was removed.");
    describe_counter!(BYTES_FREED, "Bytes deleted by application removal.");
    describe_counter!(
        HEAP_TRIMS,
        "Times free heap memory was returned to the OS after the last gRPC stream ended."
    );
    describe_counter!(
        SPARK_UNCACHED_BLOCKS,
        "Spark block bodies not in the page cache, sent from the blocking pool so only their connection waits for the disk."
    );
    describe_gauge!(
        SPARK_PIPES_IN_USE,
        "Pipes carrying a batch of Spark block bodies to a connection right now (at most --spark-pipe-bytes / 1 MiB)."
    );
    describe_counter!(
        SPARK_PIPE_REQUESTS,
        "Spark connections asking for a pipe for their batch of block bodies, by outcome (lent; none_free: every pipe of the budget in use, so the body went out with sendfile)."
    );
    describe_gauge!(
        TCP_CONGESTION,
        "1 for the TCP congestion control the Spark and gRPC listeners' connections use, by peers (local: this host; remote: other hosts)."
    );
    describe_counter!(
        TCP_CONNECTIONS,
        "Connections accepted on the Spark and gRPC ports, by peers (local: this node's host or pods; remote: elsewhere) and by what told them apart (via: loopback, host_address, pod_veth, pod_bridge, gateway, device, not_looked_up, lookup_failed)."
    );
    describe_counter!(
        CACHE_LOOKUPS,
        "Index and map cache lookups, by cache and result."
    );
}

/// The counters bumped for every block a protocol serves, looked up once per listener (Spark)
/// or stream (gRPC) rather than per block: a registry lookup hashes the labels every time, which
/// showed in profiles of the fetch path.
#[derive(Clone)]
pub struct ServedCounters {
    bytes: Counter,
    blocks: Counter,
}

impl ServedCounters {
    pub fn new(protocol: &'static str) -> Self {
        Self {
            bytes: counter!(BYTES_SERVED, "protocol" => protocol),
            blocks: counter!(BLOCKS_SERVED, "protocol" => protocol),
        }
    }

    pub fn bytes(&self, bytes: u64) {
        self.bytes.increment(bytes);
    }

    pub fn block(&self) {
        self.blocks.increment(1);
    }
}

pub fn bytes_received(protocol: &'static str, bytes: u64) {
    counter!(BYTES_RECEIVED, "protocol" => protocol).increment(bytes);
}

pub fn fetch_latency(protocol: &'static str, elapsed: Duration) {
    histogram!(FETCH_LATENCY, "protocol" => protocol).record(elapsed.as_secs_f64());
}

pub fn push_outcome(outcome: &'static str) {
    counter!(PUSHES, "outcome" => outcome).increment(1);
}

pub fn checksum_failure(protocol: &'static str) {
    counter!(CHECKSUM_FAILURES, "protocol" => protocol).increment(1);
}

pub fn error(protocol: &'static str, kind: &'static str) {
    counter!(ERRORS, "protocol" => protocol, "kind" => kind).increment(1);
}

/// Hit and miss counters of one cache, looked up once when the cache is built.
pub struct CacheCounters {
    hit: Counter,
    miss: Counter,
}

impl CacheCounters {
    pub fn new(cache: &'static str) -> Self {
        Self {
            hit: counter!(CACHE_LOOKUPS, "cache" => cache, "result" => "hit"),
            miss: counter!(CACHE_LOOKUPS, "cache" => cache, "result" => "miss"),
        }
    }

    pub fn lookup(&self, hit: bool) {
        if hit { &self.hit } else { &self.miss }.increment(1);
    }
}

pub fn store_totals(apps: usize, executors: usize, outputs: usize, bytes: u64) {
    gauge!(REGISTERED_APPS).set(apps as f64);
    gauge!(REGISTERED_EXECUTORS).set(executors as f64);
    gauge!(STORED_OUTPUTS).set(outputs as f64);
    gauge!(STORED_BYTES).set(bytes as f64);
}

pub fn disk_free(bytes: u64) {
    gauge!(DISK_FREE).set(bytes as f64);
}

pub fn recovery(recovered: u64, discarded: u64) {
    counter!(RECOVERED_OUTPUTS).increment(recovered);
    counter!(RECOVERY_DISCARDED).increment(discarded);
}

pub fn app_removed(bytes_freed: u64) {
    counter!(APPS_REMOVED).increment(1);
    counter!(BYTES_FREED).increment(bytes_freed);
}

pub fn spark_registration() {
    counter!(SPARK_REGISTRATIONS).increment(1);
}

pub fn spark_blocks_removed(n: u64) {
    counter!(SPARK_BLOCKS_REMOVED).increment(n);
}

pub fn spark_open_streams(delta: f64) {
    gauge!(SPARK_OPEN_STREAMS).increment(delta);
}

pub fn spark_connections(delta: f64) {
    gauge!(SPARK_CONNECTIONS).increment(delta);
}

pub fn corruption_diagnosis(cause: &'static str) {
    counter!(CORRUPTION_DIAGNOSES, "cause" => cause).increment(1);
}

pub fn app_expired() {
    counter!(APPS_EXPIRED).increment(1);
}

pub fn tcp_congestion_control(listener: &'static str, peers: &'static str, algorithm: String) {
    gauge!(TCP_CONGESTION, "listener" => listener, "peers" => peers, "algorithm" => algorithm)
        .set(1.0);
}

pub fn tcp_connection(listener: &'static str, reason: crate::tcp::Reason) {
    counter!(TCP_CONNECTIONS, "listener" => listener, "peers" => reason.peers().label(), "via" => reason.label())
        .increment(1);
}

pub fn spark_uncached_block() {
    counter!(SPARK_UNCACHED_BLOCKS).increment(1);
}

pub fn spark_pipes_in_use(delta: f64) {
    gauge!(SPARK_PIPES_IN_USE).increment(delta);
}

pub fn spark_pipe_request(outcome: &'static str) {
    counter!(SPARK_PIPE_REQUESTS, "outcome" => outcome).increment(1);
}

pub fn heap_trimmed() {
    counter!(HEAP_TRIMS).increment(1);
}

/// Counts a stream as active (and the daemon as busy, see `memory`) for as long as the guard
/// lives.
pub struct ActiveStream {
    protocol: &'static str,
    direction: &'static str,
    _busy: crate::memory::Busy,
}

impl ActiveStream {
    pub fn start(protocol: &'static str, direction: &'static str) -> Self {
        gauge!(ACTIVE_STREAMS, "protocol" => protocol, "direction" => direction).increment(1.0);
        Self {
            protocol,
            direction,
            _busy: crate::memory::Busy::start(),
        }
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        gauge!(ACTIVE_STREAMS, "protocol" => self.protocol, "direction" => self.direction)
            .decrement(1.0);
    }
}

// ---- the controller (`kess controller`) ----

pub const CONTROLLER_ROUNDS: &str = "kess_controller_rounds_total";
pub const CONTROLLER_ACTIONS: &str = "kess_controller_actions_total";
pub const CONTROLLER_ERRORS: &str = "kess_controller_errors_total";
pub const CONTROLLER_BYTES_FREED: &str = "kess_controller_bytes_freed_total";
pub const CONTROLLER_DECISION_SECONDS: &str = "kess_controller_decision_seconds";
pub const CONTROLLER_ROUND_SECONDS: &str = "kess_controller_round_seconds";
pub const CONTROLLER_LEADER: &str = "kess_controller_leader";
pub const CONTROLLER_DAEMONS: &str = "kess_controller_daemons";

/// Describes the controller's metrics (call after [`install`]).
pub fn describe_controller() {
    describe_counter!(
        CONTROLLER_ROUNDS,
        "Reconcile rounds run while holding the lease."
    );
    describe_counter!(
        CONTROLLER_ACTIONS,
        "Actions applied, by kind (create_pod, delete_pod, remove_application, guard_node, unguard_node, update_pool_status)."
    );
    describe_counter!(
        CONTROLLER_ERRORS,
        "Failed calls, by error kind (see ControllerError::metric_label)."
    );
    describe_counter!(
        CONTROLLER_BYTES_FREED,
        "Shuffle bytes daemons freed on the controller's RemoveApplication calls."
    );
    describe_histogram!(
        CONTROLLER_DECISION_SECONDS,
        "Time the pure decision function took per round."
    );
    describe_histogram!(
        CONTROLLER_ROUND_SECONDS,
        "Time of a whole round: observe, poll daemons, decide, apply."
    );
    describe_gauge!(
        CONTROLLER_LEADER,
        "1 while this replica holds the controller lease."
    );
    describe_gauge!(
        CONTROLLER_DAEMONS,
        "Daemons in the last round, by state (known, unknown)."
    );
}

pub fn controller_action(kind: &'static str, count: u64) {
    counter!(CONTROLLER_ACTIONS, "action" => kind).increment(count);
}

pub fn controller_error(kind: &'static str) {
    counter!(CONTROLLER_ERRORS, "error" => kind).increment(1);
}
