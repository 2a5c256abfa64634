//! `kess controller`: observe, decide, apply, once per round, while holding the lease.
//!
//! Reflectors keep in-memory copies of the pods Spark labels (`spark-role`), the nodes' metadata,
//! the `ExecutorPool`s and the kess DaemonSet's pods. Every round (every `--interval`, or sooner
//! when a pool's batch delay is shorter) the leader polls every daemon's shuffle state, builds the
//! [`ObservedView`], calls [`decide`] and applies the actions. Replicas that do not hold the lease
//! keep their caches warm and do nothing else.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use metrics_exporter_prometheus::PrometheusHandle;

use super::apply::{
    executor_pod, next_executor_ids, node_annotation_patch, pool_reference, pool_status,
    pool_status_patch, KubeWriter,
};
use super::crd::ExecutorPool;
use super::daemons::{DaemonClients, DaemonError, RemovalThrottle};
use super::lease::LeaderElector;
use super::observe::{daemon_addresses, parse_daemon_override, pod_view, pool_view};
use super::policy::{
    decide, Action, NodeView, ObjectRef, ObservedView, PodPhase, PodView, PolicyConfig, Timestamp,
    LABEL_SPARK_ROLE,
};
use crate::daemon::BoxError;
use crate::http::{self, Readiness};
use crate::metrics;

/// Name the controller reports events and writes fields as.
pub const CONTROLLER_NAME: &str = "kess-controller";

#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// HTTP listen address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KESS_CONTROLLER_HTTP_ADDR",
        default_value = "127.0.0.1:9465"
    )]
    pub http_addr: SocketAddr,
    /// Longest time between two rounds (a pool with a shorter batchDelay gets its rounds sooner).
    #[arg(long, env = "KESS_CONTROLLER_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// A node's daemon at a fixed URL (NODE=URL, repeatable or comma-separated); replaces what
    /// discovery finds for that node. For laptops and tests.
    #[arg(long = "daemon", env = "KESS_CONTROLLER_DAEMONS", value_delimiter = ',', value_parser = parse_daemon_override)]
    pub daemons: Vec<(String, String)>,
    /// Namespace of the kess DaemonSet's pods.
    #[arg(long, env = "KESS_DAEMON_NAMESPACE", default_value = "kess-system")]
    pub daemon_namespace: String,
    /// Label selector of the kess DaemonSet's pods; empty turns discovery off (only --daemon).
    #[arg(
        long,
        env = "KESS_DAEMON_SELECTOR",
        default_value = "app.kubernetes.io/name=kess,app.kubernetes.io/component=daemon"
    )]
    pub daemon_selector: String,
    /// The daemons' gRPC port (the DaemonSet's --grpc-addr port).
    #[arg(long, env = "KESS_DAEMON_GRPC_PORT", default_value_t = 7447)]
    pub daemon_grpc_port: u16,
    /// How long a daemon may take to answer before it counts as unknown for the round.
    #[arg(long, env = "KESS_DAEMON_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub daemon_timeout: Duration,
    /// How long data of an application with no driver pod and no live pod in sight must be
    /// inactive before it is removed (covers drivers deleted while the controller was down).
    #[arg(long, env = "KESS_ORPHAN_GRACE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub orphan_grace: Duration,
    /// Name of the Lease that elects the active replica.
    #[arg(long, env = "KESS_LEASE_NAME", default_value = "kess-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kess-system")]
    pub lease_namespace: String,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a Lease holder that stops renewing keeps it.
    #[arg(long, env = "KESS_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Log format.
    #[arg(long, env = "KESS_LOG_FORMAT", value_enum, default_value_t = crate::config::LogFormat::Text)]
    pub log_format: crate::config::LogFormat,
}

/// Why a controller call failed. Each kind is a label value of `kess_controller_errors_total`.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("creating pod {pod} of pool {pool}: {source}")]
    CreatePod {
        pool: ObjectRef,
        pod: String,
        source: kube::Error,
    },
    #[error("pool {pool} cannot make pods: {message}")]
    PoolTemplate { pool: ObjectRef, message: String },
    #[error("deleting pod {pod}: {source}")]
    DeletePod { pod: ObjectRef, source: kube::Error },
    #[error("patching annotations of node {node}: {source}")]
    PatchNode { node: String, source: kube::Error },
    #[error("patching status of pool {pool}: {source}")]
    PatchPoolStatus {
        pool: ObjectRef,
        source: kube::Error,
    },
    #[error("polling daemon: {0}")]
    DaemonPoll(DaemonError),
    #[error("removing application {app_id}: {source}")]
    RemoveApplication { app_id: String, source: DaemonError },
    #[error("lease {lease}: {source}")]
    Lease { lease: String, source: kube::Error },
    #[error("publishing event about {about}: {source}")]
    Event { about: String, source: kube::Error },
}

impl ControllerError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::CreatePod { .. } => "create_pod",
            Self::PoolTemplate { .. } => "pool_template",
            Self::DeletePod { .. } => "delete_pod",
            Self::PatchNode { .. } => "patch_node",
            Self::PatchPoolStatus { .. } => "patch_pool_status",
            Self::DaemonPoll(_) => "daemon_unreachable",
            Self::RemoveApplication { .. } => "remove_application",
            Self::Lease { .. } => "lease",
            Self::Event { .. } => "event",
        }
    }

    fn record(&self) {
        metrics::controller_error(self.metric_label());
        tracing::warn!(error = %self, kind = self.metric_label(), "controller call failed");
    }
}

/// What the reflectors hold at the start of a round.
pub struct Snapshot {
    pub pods: Vec<Arc<Pod>>,
    pub nodes: Vec<Arc<PartialObjectMeta<Node>>>,
    pub pools: Vec<Arc<ExecutorPool>>,
    pub daemon_pods: Vec<Arc<Pod>>,
}

/// How long a write the caches have not reflected yet is assumed to be on its way.
const IN_FLIGHT_TTL: Duration = Duration::from_secs(60);

/// Pods created or deleted by this controller that the caches do not show yet. They are laid
/// over the cached pods so that the next round does not create the same executors again (or
/// count a deleted one) just because the watch has not caught up.
#[derive(Default)]
pub struct InFlight {
    created: HashMap<ObjectRef, (PodView, Instant)>,
    deleted: HashMap<ObjectRef, Instant>,
}

impl InFlight {
    pub fn created(&mut self, pod: PodView, now: Instant) {
        self.created.insert(pod.pod.clone(), (pod, now));
    }

    pub fn deleted(&mut self, pod: ObjectRef, now: Instant) {
        self.deleted.insert(pod, now);
    }

    /// Lays the writes over the cached pods and forgets those the cache now shows (or that are
    /// older than the TTL: the watch has surely caught up, or the write was lost).
    pub fn overlay(&mut self, pods: &mut Vec<PodView>, now_ts: Timestamp, now: Instant) {
        self.created
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < IN_FLIGHT_TTL);
        self.deleted
            .retain(|_, at| now.saturating_duration_since(*at) < IN_FLIGHT_TTL);
        let mut present = HashSet::new();
        for pod in pods.iter_mut() {
            self.created.remove(&pod.pod);
            if pod.deletion_timestamp.is_some() {
                self.deleted.remove(&pod.pod);
            } else if self.deleted.contains_key(&pod.pod) {
                pod.deletion_timestamp = Some(now_ts);
            }
            present.insert(pod.pod.clone());
        }
        self.deleted.retain(|pod, _| present.contains(pod));
        pods.extend(self.created.values().map(|(pod, _)| pod.clone()));
    }
}

/// The leader's state between rounds.
pub struct Reconciler {
    writer: KubeWriter,
    recorder: Option<Recorder>,
    daemons: DaemonClients,
    throttle: RemovalThrottle,
    in_flight: InFlight,
    last_rounds: HashMap<ObjectRef, Timestamp>,
    policy: PolicyConfig,
    overrides: BTreeMap<String, String>,
    grpc_port: u16,
}

/// Wall-clock time as the policy counts it.
pub fn now_timestamp() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_ms(ms)
}

impl Reconciler {
    pub fn new(client: Client, identity: &str, args: &ControllerArgs) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.to_owned(),
                instance: Some(identity.to_owned()),
            },
        );
        Self {
            writer: KubeWriter::new(client),
            recorder: Some(recorder),
            daemons: DaemonClients::new(args.daemon_timeout),
            throttle: RemovalThrottle::new(
                Duration::from_secs(30),
                Duration::from_secs(1),
                Duration::from_secs(300),
            ),
            in_flight: InFlight::default(),
            last_rounds: HashMap::new(),
            policy: PolicyConfig {
                orphan_grace: args.orphan_grace,
            },
            overrides: args.daemons.iter().cloned().collect(),
            grpc_port: args.daemon_grpc_port,
        }
    }

    /// One round: observe, decide, apply. Returns when the next round is due at the latest.
    pub async fn round(&mut self, snapshot: &Snapshot) -> Option<Timestamp> {
        let round_started = Instant::now();
        let addresses = daemon_addresses(&snapshot.daemon_pods, self.grpc_port, &self.overrides);
        self.daemons.retain(&addresses);
        let mut polled = self.daemons.poll_all(&addresses).await;
        let (mut known, mut unknown) = (0u32, 0u32);
        let now = now_timestamp();
        let nodes: Vec<NodeView> = snapshot
            .nodes
            .iter()
            .map(|node| {
                let name = node.name_any();
                let daemon = match polled.remove(&name) {
                    Some(Ok(state)) => Some(state),
                    Some(Err(error)) => {
                        ControllerError::DaemonPoll(error).record();
                        None
                    }
                    None => None,
                };
                if daemon.is_some() {
                    known += 1;
                } else {
                    unknown += 1;
                }
                NodeView {
                    annotations: node.annotations().clone(),
                    name,
                    daemon,
                }
            })
            .collect();
        ::metrics::gauge!(metrics::CONTROLLER_DAEMONS, "state" => "known").set(known);
        ::metrics::gauge!(metrics::CONTROLLER_DAEMONS, "state" => "unknown").set(unknown);

        let mut pods: Vec<PodView> = snapshot.pods.iter().map(|pod| pod_view(pod)).collect();
        self.in_flight.overlay(&mut pods, now, Instant::now());
        let mut pools = Vec::new();
        let mut pool_objects = HashMap::new();
        for pool in &snapshot.pools {
            let key = ObjectRef::new(pool.namespace().unwrap_or_default(), pool.name_any());
            match pool_view(pool, self.last_rounds.get(&key).copied()) {
                Ok(view) => pools.push(view),
                Err(message) => self.report_invalid_pool(pool, &message).await,
            }
            pool_objects.insert(key, Arc::clone(pool));
        }
        self.last_rounds
            .retain(|pool, _| pool_objects.contains_key(pool));
        let view = ObservedView { nodes, pods, pools };

        let decided = Instant::now();
        let decision = decide(&view, &self.policy, now);
        ::metrics::histogram!(metrics::CONTROLLER_DECISION_SECONDS)
            .record(decided.elapsed().as_secs_f64());
        for action in decision.actions {
            self.apply(action, &view, &pool_objects, &addresses).await;
        }
        self.throttle
            .forget_older_than(Duration::from_secs(3600), Instant::now());
        ::metrics::counter!(metrics::CONTROLLER_ROUNDS).increment(1);
        ::metrics::histogram!(metrics::CONTROLLER_ROUND_SECONDS)
            .record(round_started.elapsed().as_secs_f64());
        decision.next_round_at
    }

    async fn apply(
        &mut self,
        action: Action,
        view: &ObservedView,
        pools: &HashMap<ObjectRef, Arc<ExecutorPool>>,
        addresses: &BTreeMap<String, String>,
    ) {
        match &action {
            Action::CreatePods { pool, count } => {
                let Some(object) = pools.get(pool) else {
                    return;
                };
                self.create_pods(object, *count, view).await;
            }
            Action::DeletePod { pod, reason } => match self.writer.delete_pod(pod).await {
                Ok(()) => {
                    self.in_flight.deleted(pod.clone(), Instant::now());
                    metrics::controller_action("delete_pod", 1);
                    tracing::info!(pod = %pod, ?reason, "deleted executor pod");
                    let regarding = pod_reference(pod);
                    let note = format!("deleted executor pod {pod}: {reason:?}");
                    self.event(&regarding, "ExecutorDeleted", "DeletePod", note)
                        .await;
                }
                Err(source) => ControllerError::DeletePod {
                    pod: pod.clone(),
                    source,
                }
                .record(),
            },
            Action::RemoveApplication {
                node,
                app_id,
                reason,
            } => {
                let Some(url) = addresses.get(node) else {
                    // No daemon runs there, so there is no data to remove.
                    return;
                };
                let now = Instant::now();
                if !self.throttle.allows(node, app_id, now) {
                    return;
                }
                match self.daemons.remove_application(node, url, app_id).await {
                    Ok(bytes_freed) => {
                        self.throttle.succeeded(node, app_id, now);
                        metrics::controller_action("remove_application", 1);
                        ::metrics::counter!(metrics::CONTROLLER_BYTES_FREED).increment(bytes_freed);
                        tracing::info!(node = %node, app = %app_id, bytes_freed, ?reason, "removed finished application's shuffle data");
                        if bytes_freed > 0 {
                            let note = format!(
                                "removed {bytes_freed} bytes of finished application {app_id} ({reason:?})"
                            );
                            self.event(
                                &node_reference(node),
                                "ShuffleDataRemoved",
                                "RemoveApplication",
                                note,
                            )
                            .await;
                        }
                    }
                    Err(source) => {
                        self.throttle.failed(node, app_id, now);
                        ControllerError::RemoveApplication {
                            app_id: app_id.clone(),
                            source,
                        }
                        .record();
                    }
                }
            }
            Action::GuardNode { node, .. } | Action::UnguardNode { node, .. } => {
                let Some((_, patch)) = node_annotation_patch(&action) else {
                    return;
                };
                let (kind, reason, verb) = if matches!(action, Action::GuardNode { .. }) {
                    ("guard_node", "NodeGuarded", "holds shuffle data of a running application; marked so autoscalers keep it")
                } else {
                    (
                        "unguard_node",
                        "NodeUnguarded",
                        "holds no live shuffle data any more; kess's autoscaler marks removed",
                    )
                };
                match self.writer.patch_node_annotations(node, &patch).await {
                    Ok(()) => {
                        metrics::controller_action(kind, 1);
                        tracing::info!(node = %node, patch = %patch, "{reason}");
                        self.event(
                            &node_reference(node),
                            reason,
                            kind,
                            format!("node {node} {verb}"),
                        )
                        .await;
                    }
                    Err(source) => ControllerError::PatchNode {
                        node: node.clone(),
                        source,
                    }
                    .record(),
                }
            }
            Action::UpdatePoolStatus { pool, status } => {
                self.last_rounds.insert(pool.clone(), status.last_round);
                let Some(object) = pools.get(pool) else {
                    return;
                };
                let previous = object.status.as_ref();
                let next = pool_status(&pool.name, status, previous, &rfc3339_now());
                if previous == Some(&next) {
                    return;
                }
                let patch = pool_status_patch(previous, &next);
                match self.writer.patch_pool_status(pool, &patch).await {
                    Ok(()) => metrics::controller_action("update_pool_status", 1),
                    Err(source) => ControllerError::PatchPoolStatus {
                        pool: pool.clone(),
                        source,
                    }
                    .record(),
                }
            }
        }
    }

    async fn create_pods(&mut self, pool: &ExecutorPool, count: u32, view: &ObservedView) {
        let pool_ref = ObjectRef::new(pool.namespace().unwrap_or_default(), pool.name_any());
        let app_id = pool.spec.app_id.as_str();
        let pod_ids = view
            .pods
            .iter()
            .filter(|pod| {
                pod.app_id() == Some(app_id)
                    || (pod.owner_pool.as_deref() == Some(pool_ref.name.as_str())
                        && pod.pod.namespace == pool_ref.namespace)
            })
            .filter_map(|pod| pod.executor_id.as_deref());
        let daemon_ids = view
            .nodes
            .iter()
            .filter_map(|node| node.daemon.as_ref())
            .flat_map(|daemon| daemon.applications.iter())
            .filter(|app| app.app_id == app_id)
            .flat_map(|app| app.executors.iter().map(|e| e.executor_id.as_str()));
        let ids = next_executor_ids(pod_ids.chain(daemon_ids), count);
        let mut built = Vec::new();
        for id in ids {
            match executor_pod(pool, id) {
                Ok(pod) => built.push(pod),
                Err(message) => {
                    ControllerError::PoolTemplate {
                        pool: pool_ref.clone(),
                        message,
                    }
                    .record();
                    return;
                }
            }
        }
        let writer = self.writer.clone();
        let results =
            futures::future::join_all(built.iter().map(|pod| writer.create_pod(pod))).await;
        let mut created = 0u64;
        for (pod, result) in built.iter().zip(results) {
            match result {
                Ok(_) => {
                    created += 1;
                    let mut seen = pod_view(pod);
                    seen.creation_timestamp = now_timestamp();
                    seen.phase = PodPhase::Pending;
                    self.in_flight.created(seen, Instant::now());
                }
                Err(source) => ControllerError::CreatePod {
                    pool: pool_ref.clone(),
                    pod: pod.name_any(),
                    source,
                }
                .record(),
            }
        }
        if created > 0 {
            metrics::controller_action("create_pod", created);
            tracing::info!(pool = %pool_ref, created, requested = count, "created executor pods");
            let note = format!("created {created} executor pods");
            self.event(
                &pool_reference(pool),
                "ExecutorsCreated",
                "CreatePods",
                note,
            )
            .await;
        }
    }

    async fn report_invalid_pool(&mut self, pool: &ExecutorPool, message: &str) {
        let pool_ref = ObjectRef::new(pool.namespace().unwrap_or_default(), pool.name_any());
        let status = super::policy::PoolStatus {
            expected: pool.spec.replicas,
            requested: 0,
            registered: 0,
            pending: 0,
            registration_unknown: 0,
            safe_to_remove: 0,
            shuffle_bytes_per_node: BTreeMap::new(),
            conditions: vec![super::policy::PoolCondition::InvalidSpec {
                message: message.to_owned(),
            }],
            last_round: now_timestamp(),
        };
        let previous = pool.status.as_ref();
        let next = pool_status(&pool_ref.name, &status, previous, &rfc3339_now());
        if previous == Some(&next) {
            return;
        }
        if let Err(source) = self
            .writer
            .patch_pool_status(&pool_ref, &pool_status_patch(previous, &next))
            .await
        {
            ControllerError::PatchPoolStatus {
                pool: pool_ref,
                source,
            }
            .record();
        }
    }

    async fn event(&self, regarding: &ObjectReference, reason: &str, action: &str, note: String) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let event = Event {
            type_: EventType::Normal,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(source) = recorder.publish(&event, regarding).await {
            ControllerError::Event {
                about: regarding.name.clone().unwrap_or_default(),
                source,
            }
            .record();
        }
    }
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn node_reference(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Node".to_owned()),
        name: Some(node.to_owned()),
        ..ObjectReference::default()
    }
}

fn pod_reference(pod: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Starts a reflector for `api` and returns its store; the watch restarts with backoff on errors.
fn reflect<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                metrics::controller_error("watch");
                tracing::warn!(%error, "watch failed; retrying");
            }
        }
    });
    store
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub async fn run(args: ControllerArgs, metrics_handle: PrometheusHandle) -> Result<(), BoxError> {
    metrics::describe_controller();
    let client = Client::try_default().await?;
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("kess-controller-{}", uuid::Uuid::new_v4()));

    let readiness = Readiness::default();
    let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
    let http_addr = listener.local_addr()?;
    let router = http::router(metrics_handle, readiness.clone(), Arc::new(|| {}));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "controller HTTP server stopped");
        }
    });
    tracing::info!(%http_addr, %identity, "kess controller starting");

    // Only pods Spark labels matter: drivers and executors (pool pods carry the label too).
    let pods = reflect(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels(LABEL_SPARK_ROLE),
    );
    // Nodes: metadata only (name and annotations are all the policy reads).
    let nodes = reflect(
        Api::<PartialObjectMeta<Node>>::all(client.clone()),
        watcher::Config::default(),
    );
    let pools = reflect(
        Api::<ExecutorPool>::all(client.clone()),
        watcher::Config::default(),
    );
    let daemon_pods = if args.daemon_selector.is_empty() {
        None
    } else {
        Some(reflect(
            Api::<Pod>::namespaced(client.clone(), &args.daemon_namespace),
            watcher::Config::default().labels(&args.daemon_selector),
        ))
    };
    let synced = async {
        pods.wait_until_ready().await?;
        nodes.wait_until_ready().await?;
        pools.wait_until_ready().await?;
        if let Some(store) = &daemon_pods {
            store.wait_until_ready().await?;
        }
        Ok::<(), reflector::store::WriterDropped>(())
    };
    tokio::select! {
        result = synced => result?,
        result = crate::daemon::wait_for_signal() => return Ok(result?),
    }
    readiness.set(true);
    tracing::info!("caches synced");

    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client.clone(), &args.lease_namespace),
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    let renew_every = args.lease_duration / 3;
    let mut next_renewal = Instant::now();
    let mut reconciler = Reconciler::new(client, &identity, &args);
    let mut next_round = Instant::now();
    let signal = crate::daemon::wait_for_signal();
    let mut signal = std::pin::pin!(signal);
    loop {
        let wake = next_round.min(next_renewal);
        tokio::select! {
            _ = &mut signal => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        if now >= next_renewal {
            if let Err(source) = elector.step().await {
                ControllerError::Lease {
                    lease: args.lease_name.clone(),
                    source,
                }
                .record();
            }
            next_renewal = now + renew_every;
        }
        let leader = elector.is_leader(Instant::now());
        ::metrics::gauge!(metrics::CONTROLLER_LEADER).set(if leader { 1.0 } else { 0.0 });
        if Instant::now() < next_round {
            continue;
        }
        next_round = Instant::now() + args.interval;
        if !leader {
            continue;
        }
        let snapshot = Snapshot {
            pods: pods.state(),
            nodes: nodes.state(),
            pools: pools.state(),
            daemon_pods: daemon_pods.as_ref().map(Store::state).unwrap_or_default(),
        };
        if let Some(due) = reconciler.round(&snapshot).await {
            let wait_ms = due
                .unix_ms()
                .saturating_sub(now_timestamp().unix_ms())
                .max(50);
            let wait = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0));
            next_round = next_round.min(Instant::now() + wait);
        }
    }
    readiness.set(false);
    tracing::info!("signal received; controller stopping");
    if let Err(source) = elector.release().await {
        ControllerError::Lease {
            lease: args.lease_name.clone(),
            source,
        }
        .record();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, deleting: bool) -> PodView {
        PodView {
            pod: ObjectRef::new("spark", name),
            node: None,
            labels: BTreeMap::new(),
            phase: PodPhase::Pending,
            deletion_timestamp: deleting.then(|| Timestamp::from_unix_ms(1)),
            creation_timestamp: Timestamp::from_unix_ms(0),
            owner_pool: Some("etl".to_owned()),
            executor_id: None,
        }
    }

    #[test]
    fn created_pods_count_until_the_cache_shows_them() {
        let mut in_flight = InFlight::default();
        let start = Instant::now();
        in_flight.created(pod("etl-exec-1", false), start);
        let mut cached = Vec::new();
        in_flight.overlay(&mut cached, Timestamp::from_unix_ms(5), start);
        assert_eq!(cached.len(), 1, "not yet in the cache: laid over it");
        let mut cached = vec![pod("etl-exec-1", false)];
        in_flight.overlay(&mut cached, Timestamp::from_unix_ms(5), start);
        assert_eq!(cached.len(), 1, "in the cache: not counted twice");
        let mut cached = Vec::new();
        in_flight.overlay(&mut cached, Timestamp::from_unix_ms(5), start);
        assert!(cached.is_empty(), "seen once, then forgotten");
    }

    #[test]
    fn deleted_pods_count_as_terminating_until_the_cache_says_so() {
        let mut in_flight = InFlight::default();
        let start = Instant::now();
        in_flight.deleted(ObjectRef::new("spark", "etl-exec-2"), start);
        let mut cached = vec![pod("etl-exec-2", false), pod("etl-exec-3", false)];
        in_flight.overlay(&mut cached, Timestamp::from_unix_ms(9), start);
        assert_eq!(
            cached[0].deletion_timestamp,
            Some(Timestamp::from_unix_ms(9))
        );
        assert_eq!(cached[1].deletion_timestamp, None);
        // Past the TTL the overlay is dropped: the watch has surely caught up by then.
        let mut cached = vec![pod("etl-exec-2", false)];
        in_flight.overlay(
            &mut cached,
            Timestamp::from_unix_ms(9),
            start + IN_FLIGHT_TTL,
        );
        assert_eq!(cached[0].deletion_timestamp, None);
    }

    #[test]
    fn every_error_kind_has_its_own_metric_label() {
        let status = || {
            kube::Error::Api(
                kube::core::Status::failure("boom", "Conflict")
                    .with_code(409)
                    .boxed(),
            )
        };
        let errors = [
            ControllerError::CreatePod {
                pool: ObjectRef::new("a", "b"),
                pod: "p".to_owned(),
                source: status(),
            },
            ControllerError::DeletePod {
                pod: ObjectRef::new("a", "b"),
                source: status(),
            },
            ControllerError::PatchNode {
                node: "n".to_owned(),
                source: status(),
            },
            ControllerError::PatchPoolStatus {
                pool: ObjectRef::new("a", "b"),
                source: status(),
            },
            ControllerError::Lease {
                lease: "l".to_owned(),
                source: status(),
            },
        ];
        let labels: HashSet<&str> = errors.iter().map(ControllerError::metric_label).collect();
        assert_eq!(labels.len(), errors.len());
        assert!(errors[0].to_string().contains("a/b"), "{}", errors[0]);
    }
}
