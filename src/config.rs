//! Command-line and environment configuration. Every setting has a default that works on a
//! laptop, a flag, and a `KESS_*` environment variable (the DaemonSet uses the variables).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "kess", version, about = "Kubernetes external shuffle service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the per-node shuffle daemon.
    Daemon(Box<DaemonConfig>),
    /// Print a daemon's shuffle state (per application and executor) as JSON.
    State(StateArgs),
    /// Delete every map output and registration of an application on a daemon.
    RemoveApp(RemoveAppArgs),
    /// Measure fetch throughput against a raw-TCP reference on this machine.
    Bench(crate::bench::BenchArgs),
    /// Benchmark kess against Spark's Java shuffle service on the same files (`benches/ess.sh`
    /// starts the Java service and runs this).
    BenchEss(crate::bench::ess::EssBenchArgs),
    /// Run the controller: app cleanup, node guards, ExecutorPool allocation.
    Controller(Box<crate::controller::run::ControllerArgs>),
    /// Print the ExecutorPool CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
}

#[derive(Debug, Clone, Args)]
pub struct DaemonConfig {
    /// Where map outputs, registrations and temp files live.
    #[arg(long, env = "KESS_DATA_DIR", default_value = "./kess-data")]
    pub data_dir: PathBuf,
    /// gRPC (kess.v1, health, reflection) listen address.
    #[arg(long, env = "KESS_GRPC_ADDR", default_value = "127.0.0.1:7447")]
    pub grpc_addr: SocketAddr,
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(long, env = "KESS_HTTP_ADDR", default_value = "127.0.0.1:9464")]
    pub http_addr: SocketAddr,
    /// fsync every committed output and registration: survives node crashes, costs latency.
    /// Off, a commit is an atomic rename that survives daemon crashes.
    #[arg(long, env = "KESS_FSYNC", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub fsync: bool,
    /// Pushes are refused (RESOURCE_EXHAUSTED) while the data disk has less free space.
    #[arg(long, env = "KESS_MIN_FREE_BYTES", default_value = "256MiB")]
    pub min_free_bytes: ByteSize,
    /// Largest gRPC message accepted; larger ones are refused with OUT_OF_RANGE.
    #[arg(long, env = "KESS_MAX_MESSAGE_BYTES", default_value = "8MiB")]
    pub max_message_bytes: ByteSize,
    /// Default size of the chunks a fetched partition is split into.
    #[arg(long, env = "KESS_FETCH_CHUNK_BYTES", default_value = "1MiB")]
    pub fetch_chunk_bytes: ByteSize,
    /// Memory for cached index files.
    #[arg(long, env = "KESS_INDEX_CACHE_BYTES", default_value = "64MiB")]
    pub index_cache_bytes: ByteSize,
    /// Most data files kept open at once (read per chunk for gRPC, sent with sendfile for Spark).
    #[arg(long, env = "KESS_MAX_OPEN_FILES", default_value_t = 4096)]
    pub max_open_files: usize,
    /// On SIGTERM, how long in-flight streams may run before the daemon exits anyway.
    #[arg(long, env = "KESS_GRACE_PERIOD", default_value = "30s", value_parser = humantime::parse_duration)]
    pub grace_period: Duration,
    /// Spark shuffle-service protocol listen address (Spark's `spark.shuffle.service.port`).
    #[arg(long, env = "KESS_SPARK_ADDR", default_value = "127.0.0.1:7337")]
    pub spark_addr: SocketAddr,
    /// Directories under which Spark executors' local dirs must lie (comma-separated);
    /// registrations naming other dirs are refused.
    #[arg(
        long,
        env = "KESS_SPARK_ALLOWED_ROOTS",
        value_delimiter = ',',
        default_value = "/tmp"
    )]
    pub spark_allowed_roots: Vec<PathBuf>,
    /// Require SASL (`spark.authenticate=true`) with this secret on the Spark port.
    #[arg(long, env = "KESS_SPARK_AUTH_SECRET", hide_env_values = true)]
    pub spark_auth_secret: Option<String>,
    /// Like --spark-auth-secret, read from a file (a mounted Kubernetes Secret).
    #[arg(
        long,
        env = "KESS_SPARK_AUTH_SECRET_FILE",
        conflicts_with = "spark_auth_secret"
    )]
    pub spark_auth_secret_file: Option<PathBuf>,
    /// Most concurrent connections on the Spark port.
    #[arg(long, env = "KESS_SPARK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub spark_max_connections: usize,
    /// TCP congestion control for connections from other hosts to the Spark and gRPC ports
    /// (e.g. `cubic`, `bbr`); unset, the node's default.
    #[arg(long, env = "KESS_TCP_CONGESTION")]
    pub tcp_congestion: Option<String>,
    /// TCP congestion control for connections from this node (see --local-peers). The default,
    /// `reno`, does not pace: BBR without an fq qdisc paces with a timer per socket, which costs
    /// CPU and throughput where no network lies between the two ends (README "Performance").
    /// `same` gives them what other connections get.
    #[arg(long, env = "KESS_LOCAL_TCP_CONGESTION", default_value = "reno")]
    pub local_tcp_congestion: String,
    /// Which peers get --local-tcp-congestion: `host` (loopback, or a peer at the very address
    /// it dialled) or `node` (also this host's other addresses and pods on this node: peers the
    /// kernel routes to directly through a veth, or through a bridge of veths).
    #[arg(long, env = "KESS_LOCAL_PEERS", value_enum, default_value_t = crate::tcp::LocalPeers::Node)]
    pub local_peers: crate::tcp::LocalPeers,
    /// Spark connections idle this long are closed.
    #[arg(long, env = "KESS_SPARK_IDLE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub spark_idle_timeout: Duration,
    /// Pipe memory for sending Spark block bodies in batches (1 MiB pipes, each lent to one
    /// connection for one batch of replies; connections finding none free use sendfile per
    /// block); `0` turns pipes off. Counts against the user's pipe budget
    /// (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default) shared with every process of
    /// that user on the node.
    #[arg(long, env = "KESS_SPARK_PIPE_BYTES", default_value = "16MiB")]
    pub spark_pipe_bytes: ByteSize,
    /// Largest request frame accepted on the Spark port.
    #[arg(long, env = "KESS_SPARK_MAX_FRAME_BYTES", default_value = "16MiB")]
    pub spark_max_frame_bytes: ByteSize,
    /// Applications with no activity for this long are removed (data and registrations), for
    /// applications no controller cleans up; `0s` turns it off.
    #[arg(long, env = "KESS_APP_IDLE_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub app_idle_ttl: Duration,
    /// This node's name, reported in the shuffle state (the DaemonSet sets it from spec.nodeName).
    #[arg(long, env = "KESS_NODE_NAME", default_value = "")]
    pub node_name: String,
    /// Log format.
    #[arg(long, env = "KESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon's gRPC address.
    #[arg(long, env = "KESS_SERVER", default_value = "http://127.0.0.1:7447")]
    pub server: String,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this application.
    #[arg(long)]
    pub app: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveAppArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    pub app: String,
}

impl DaemonConfig {
    /// `--local-tcp-congestion`, with `same` as none of its own.
    pub fn local_congestion(&self) -> Option<&str> {
        crate::tcp::local_algorithm(&self.local_tcp_congestion)
    }

    /// The Spark authentication secret, from the flag or the file.
    pub fn spark_secret(&self) -> std::io::Result<Option<String>> {
        match (&self.spark_auth_secret, &self.spark_auth_secret_file) {
            (Some(s), _) => Ok(Some(s.clone())),
            (None, Some(path)) => Ok(Some(std::fs::read_to_string(path)?.trim_end().to_string())),
            (None, None) => Ok(None),
        }
    }

    /// The defaults, as `kess daemon` with no flags and no environment would use them.
    pub fn defaults() -> Self {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            config: DaemonConfig,
        }
        Only::parse_from(["kess"]).config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from([
            "kess",
            "daemon",
            "--data-dir",
            "/d",
            "--fsync",
            "--min-free-bytes",
            "1GiB",
            "--grace-period",
            "5s",
        ]);
        let Command::Daemon(c) = cli.command else {
            panic!("expected daemon")
        };
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert!(c.fsync);
        assert_eq!(c.min_free_bytes.as_u64(), 1 << 30);
        assert_eq!(c.grace_period, Duration::from_secs(5));
        assert_eq!(c.grpc_addr.port(), 7447);
    }
}
