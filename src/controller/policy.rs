//! The controller's decisions as one pure function of what it observed.
//!
//! [`decide`] takes a snapshot of the cluster ([`ObservedView`]: nodes with their annotations and
//! the state their kess daemon reported, pods, `ExecutorPool`s) and the current time, and returns
//! the [`Action`]s that move the cluster toward what it should be. It reads no clock, keeps no
//! state between calls and talks to nothing, so that:
//!
//! * a restarted controller catches up by itself: whatever it missed while it was down is still
//!   visible in the next view (a finished application's data on a daemon, a guard annotation that
//!   is no longer needed);
//! * every rule can be tested by writing down a view and reading the actions;
//! * the simulator in [`super::sim`] runs exactly the code the controller runs.
//!
//! Three rules live here:
//!
//! 1. **Application cleanup**: the data of a finished application is removed from every daemon
//!    that holds it, and from every daemon whose state is unknown.
//! 2. **Node guard**: a node holding shuffle bytes of an application that is not finished carries
//!    the annotations that stop cluster-autoscaler and Karpenter from removing it; kess records
//!    which of those annotations it set and later removes exactly those.
//! 3. **ExecutorPool allocation**: pools scale up in paced batches, count an executor only once it
//!    has registered with its node's daemon, replace pods that never register, and scale down only
//!    executors whose removal cannot lose or interrupt shuffle writes.
//!
//! The function is linear in the size of the view: everything is indexed once with hash maps
//! before the rules run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Pod label that Spark puts on the driver and executor pods of one application; its value is the
/// application id that executors register with at the shuffle service.
pub const LABEL_APP_ID: &str = "spark-app-selector";
/// Pod label that Spark uses to tell driver pods from executor pods.
pub const LABEL_SPARK_ROLE: &str = "spark-role";
/// Value of [`LABEL_SPARK_ROLE`] on driver pods.
pub const ROLE_DRIVER: &str = "driver";
/// Value of [`LABEL_SPARK_ROLE`] on executor pods.
pub const ROLE_EXECUTOR: &str = "executor";

/// Node annotation that makes cluster-autoscaler skip the node when scaling down.
pub const ANNOTATION_SCALE_DOWN_DISABLED: &str =
    "cluster-autoscaler.kubernetes.io/scale-down-disabled";
/// Node annotation that makes Karpenter leave the node alone when consolidating.
pub const ANNOTATION_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// Every annotation a guarded node carries, each with the value [`GUARD_VALUE`].
pub const GUARD_ANNOTATIONS: [&str; 2] =
    [ANNOTATION_SCALE_DOWN_DISABLED, ANNOTATION_DO_NOT_DISRUPT];
/// The value both autoscalers look for; any other value counts as absent.
pub const GUARD_VALUE: &str = "true";
/// Node annotation listing (comma-separated) the guard annotations that kess itself set, so that
/// it removes exactly those and never one a person or another tool had put there.
pub const ANNOTATION_GUARD_OWNED_KEYS: &str = "kess.io/guard-owned-keys";

/// A point in time, in milliseconds since the Unix epoch: the unit the daemons report activity in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_ms(unix_ms: i64) -> Self {
        Self(unix_ms)
    }

    pub const fn unix_ms(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(duration_ms(duration)))
    }

    /// Whether strictly more than `duration` lies between `self` and `now`. A timestamp in the
    /// future (clock skew between nodes) is never old.
    pub fn is_older_than(self, duration: Duration, now: Timestamp) -> bool {
        now.0.saturating_sub(self.0) > duration_ms(duration)
    }
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Serializes a [`Duration`] as whole milliseconds, the way the pool spec and status store it.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

/// Names a namespaced object (a pod or an `ExecutorPool`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Everything the controller saw in one pass; the only input of [`decide`] besides the time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedView {
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub pools: Vec<PoolView>,
}

/// A node, its annotations, and what its kess daemon reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    /// `None` when the daemon did not answer (or there is none): its state is unknown, which is
    /// never the same as empty. Decisions that need the state (unguarding, scale-down, counting
    /// registrations) leave such a node alone.
    pub daemon: Option<DaemonState>,
}

/// What one kess daemon holds, as `GetShuffleState` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonState {
    pub disk_free_bytes: u64,
    pub applications: Vec<ApplicationState>,
}

/// One application's data and executors on one daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationState {
    pub app_id: String,
    pub bytes_stored: u64,
    pub committed_outputs: u64,
    /// Latest write, commit, fetch or registration of any executor of this application on this
    /// daemon; it dates an application whose driver is no longer visible.
    pub last_activity: Timestamp,
    pub executors: Vec<ExecutorState>,
}

/// One executor's registration and data on one daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorState {
    pub executor_id: String,
    /// Registered and not unregistered. Only a registered executor counts as allocated: a pod can
    /// be Running long before (or without ever) registering.
    pub registered: bool,
    pub committed_outputs: u64,
    pub bytes_stored: u64,
    /// Map outputs being written and not yet committed: removing the executor now would lose them.
    pub writes_in_flight: u32,
    pub fetches_in_flight: u32,
    pub last_activity: Timestamp,
}

/// Pod phase as Kubernetes reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The parts of a pod the controller decides on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodView {
    pub pod: ObjectRef,
    /// Node the pod is bound to; `None` while unscheduled.
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub phase: PodPhase,
    /// Set once the pod is being deleted; such a pod no longer counts for anything.
    pub deletion_timestamp: Option<Timestamp>,
    pub creation_timestamp: Timestamp,
    /// Name of the `ExecutorPool` (in the pod's namespace) that owns the pod, from its owner
    /// references. Pods without one, in particular executors created by a Spark driver, are never
    /// created or deleted by the controller.
    pub owner_pool: Option<String>,
    /// Executor id the pod registers with at the daemon (Spark's `spark-exec-id`).
    pub executor_id: Option<String>,
}

impl PodView {
    pub fn app_id(&self) -> Option<&str> {
        self.labels.get(LABEL_APP_ID).map(String::as_str)
    }

    pub fn spark_role(&self) -> Option<&str> {
        self.labels.get(LABEL_SPARK_ROLE).map(String::as_str)
    }

    pub fn is_terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// Succeeded or Failed: the containers will not run again.
    pub fn has_ended(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Neither ended nor being deleted. `Unknown` counts as live: a pod on an unreachable node may
    /// well still be running, and treating it as gone could delete live data.
    pub fn is_live(&self) -> bool {
        !self.has_ended() && !self.is_terminating()
    }
}

/// The scaling part of an `ExecutorPool` spec (`kess.io/v1alpha1`). The CRD's spec flattens this
/// next to the executor pod template, which the policy never looks at: it only says how many pods
/// to create and the layer that applies actions stamps them from the template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Spark application the pool's executors belong to (their `spark-app-selector`).
    pub app_id: String,
    #[serde(default)]
    pub min_executors: u32,
    pub max_executors: u32,
    /// Most pods created, or removed by scale-down, in one allocation round.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Least time between two allocation rounds of this pool.
    #[serde(
        default = "default_batch_delay",
        with = "millis",
        rename = "batchDelayMs"
    )]
    pub batch_delay: Duration,
    /// How long an executor must have been without shuffle activity before scale-down may take it.
    #[serde(
        default = "default_idle_timeout",
        with = "millis",
        rename = "idleTimeoutMs"
    )]
    pub idle_timeout: Duration,
    /// How long a pod may exist without registering before it is deleted and requested anew.
    #[serde(
        default = "default_pending_timeout",
        with = "millis",
        rename = "pendingTimeoutMs"
    )]
    pub pending_timeout: Duration,
}

/// Default of [`PoolSpec::batch_size`].
pub const DEFAULT_BATCH_SIZE: u32 = 5;
/// Default of [`PoolSpec::batch_delay`].
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_secs(1);
/// Default of [`PoolSpec::idle_timeout`]: Spark's own `executorIdleTimeout` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of [`PoolSpec::pending_timeout`]: long enough for a node to be provisioned and an image
/// pulled.
pub const DEFAULT_PENDING_TIMEOUT: Duration = Duration::from_secs(300);

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}
fn default_batch_delay() -> Duration {
    DEFAULT_BATCH_DELAY
}
fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_pending_timeout() -> Duration {
    DEFAULT_PENDING_TIMEOUT
}

impl PoolSpec {
    /// A spec for `app_id` with at most `max_executors` and every other field at its default.
    pub fn new(app_id: impl Into<String>, max_executors: u32) -> Self {
        Self {
            app_id: app_id.into(),
            min_executors: 0,
            max_executors,
            batch_size: DEFAULT_BATCH_SIZE,
            batch_delay: DEFAULT_BATCH_DELAY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            pending_timeout: DEFAULT_PENDING_TIMEOUT,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.min_executors > self.max_executors {
            return Err(format!(
                "minExecutors {} is greater than maxExecutors {}",
                self.min_executors, self.max_executors
            ));
        }
        if self.batch_size == 0 {
            return Err("batchSize must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// One `ExecutorPool` as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub pool: ObjectRef,
    pub spec: PoolSpec,
    /// Desired executors as set through the scale subresource (kubectl, HPA, KEDA), before
    /// clamping to `[min, max]`.
    pub expected: u32,
    /// When the pool's last allocation round ran ([`PoolStatus::last_round`]); `None` if never.
    /// A round runs only once `batch_delay` has passed since then.
    pub last_round: Option<Timestamp>,
}

/// Controller-wide settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// How long an application with data on a daemon, but with no driver pod and no other live
    /// pod in sight, must have been inactive before it counts as finished. Covers drivers deleted
    /// while the controller was down, and keeps data of an application whose driver simply has not
    /// been observed yet.
    #[serde(with = "millis", rename = "orphanGraceMs")]
    pub orphan_grace: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            orphan_grace: Duration::from_secs(600),
        }
    }
}

/// What [`decide`] asks for, in a deterministic order: cleanup, then node guards, then pools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// Earliest time at which some pool's next allocation round is due, so the controller can
    /// sleep until then (or until the view changes). `None` when there are no valid pools.
    pub next_round_at: Option<Timestamp>,
}

/// One change for the layer that applies actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Create `count` pods from the pool's template.
    CreatePods { pool: ObjectRef, count: u32 },
    /// Delete a pod owned by an `ExecutorPool`; never issued for any other pod.
    DeletePod {
        pod: ObjectRef,
        reason: DeleteReason,
    },
    /// Remove everything the daemon on `node` holds for the application.
    RemoveApplication {
        node: String,
        app_id: String,
        reason: FinishReason,
    },
    /// Set `keys_to_add` to [`GUARD_VALUE`] and [`ANNOTATION_GUARD_OWNED_KEYS`] to `owned_keys`.
    GuardNode {
        node: String,
        keys_to_add: Vec<String>,
        /// Every guard key kess owns on the node after this action, sorted.
        owned_keys: Vec<String>,
    },
    /// Delete `keys_to_remove` (only keys kess set) and [`ANNOTATION_GUARD_OWNED_KEYS`].
    UnguardNode {
        node: String,
        keys_to_remove: Vec<String>,
    },
    /// Replace the pool's status; issued once per allocation round.
    UpdatePoolStatus { pool: ObjectRef, status: PoolStatus },
}

impl Action {
    /// For [`Action::GuardNode`] and [`Action::UnguardNode`], the node and the annotation changes
    /// as a merge patch (`None` deletes the key), so that every applier writes the same thing.
    pub fn node_annotation_patch(&self) -> Option<(&str, BTreeMap<String, Option<String>>)> {
        match self {
            Action::GuardNode {
                node,
                keys_to_add,
                owned_keys,
            } => {
                let mut patch: BTreeMap<String, Option<String>> = keys_to_add
                    .iter()
                    .map(|key| (key.clone(), Some(GUARD_VALUE.to_owned())))
                    .collect();
                patch.insert(
                    ANNOTATION_GUARD_OWNED_KEYS.to_owned(),
                    Some(owned_keys.join(",")),
                );
                Some((node, patch))
            }
            Action::UnguardNode {
                node,
                keys_to_remove,
            } => {
                let mut patch: BTreeMap<String, Option<String>> = keys_to_remove
                    .iter()
                    .map(|key| (key.clone(), None))
                    .collect();
                patch.insert(ANNOTATION_GUARD_OWNED_KEYS.to_owned(), None);
                Some((node, patch))
            }
            _ => None,
        }
    }
}

/// Why a pool pod is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeleteReason {
    /// Existed longer than `pending_timeout` without registering; the next round replaces it.
    PendingTimeout,
    /// Its containers ended (Succeeded/Failed); the next round replaces it.
    ExecutorEnded,
    /// Scale-down of a registered executor that was idle with all writes committed.
    ScaleDown,
    /// Scale-down of a pod that had not registered yet, so holds nothing.
    ScaleDownNotRegistered,
    /// The pool's application finished; its data is being removed, so its executors go too.
    ApplicationFinished,
}

/// Why an application counts as finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FinishReason {
    DriverSucceeded,
    DriverFailed,
    /// The driver pod is being deleted.
    DriverDeleted,
    /// No driver pod and no other live pod, and no activity for longer than `orphan_grace`.
    Orphaned,
}

/// What the `ExecutorPool` status shows after a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// `spec.expected` clamped to `[min, max]` (0 once the application finished).
    pub expected: u32,
    /// Pods of the pool that exist, have not ended and are not being deleted.
    pub requested: u32,
    /// Requested pods whose executor is registered with the daemon on their node.
    pub registered: u32,
    /// Requested pods known not to be registered (their daemon answered without them).
    pub pending: u32,
    /// Requested pods on a node whose daemon state is unknown. They count as present (no
    /// replacement is created for them) but are never scaled down or timed out.
    pub registration_unknown: u32,
    /// Registered executors that scale-down could remove right now.
    pub safe_to_remove: u32,
    /// Bytes the pool's application holds on each node's daemon (known daemons only).
    pub shuffle_bytes_per_node: BTreeMap<String, u64>,
    pub conditions: Vec<PoolCondition>,
    /// When this round ran; fed back as [`PoolView::last_round`] to pace the next one.
    pub last_round: Timestamp,
}

/// Why a pool is not (yet) where `expected` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PoolCondition {
    /// Pods exist that have not registered; no new pods are created until they do or time out.
    WaitingForRegistration { pending: u32 },
    /// Pods deleted this round for not registering within `pending_timeout`.
    PendingTimedOut { deleted: u32 },
    /// The requested replicas were above `max` and were lowered to it.
    AtMaximum { replicas: u32, max: u32 },
    /// The requested replicas were below `min` and were raised to it.
    RaisedToMinimum { replicas: u32, min: u32 },
    /// Fewer executors than wanted could be scaled down, `executors` of them for `reason`.
    ScaleDownBlocked {
        reason: ScaleDownBlockReason,
        executors: u32,
    },
    /// Pods on nodes whose daemon state is unknown.
    RegistrationUnknown { executors: u32 },
    /// The pool's application finished: nothing is created and existing pods are released.
    ApplicationFinished,
    /// The spec cannot be acted on; nothing is done for the pool.
    InvalidSpec { message: String },
}

/// Why a registered executor is not safe to scale down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ScaleDownBlockReason {
    /// Map outputs are being written and not committed.
    WritesInFlight,
    /// Shuffle activity within `idle_timeout`.
    NotIdle,
    /// The daemon on its node did not report, so nothing is known about its writes.
    DaemonUnknown,
}

/// Where an application stands, as far as its shuffle data is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppLifecycle {
    /// A driver pod is observed and has not ended.
    Running,
    /// No driver observed, but pods or recent activity say the application may still be there.
    Unconfirmed,
    Finished(FinishReason),
}

/// What the pods and daemons say about one application.
#[derive(Default)]
struct AppEvidence {
    driver_seen: bool,
    driver_live: bool,
    driver_end: Option<FinishReason>,
    other_pod_live: bool,
    last_activity: Option<Timestamp>,
}

impl AppEvidence {
    fn lifecycle(&self, config: &PolicyConfig, now: Timestamp) -> AppLifecycle {
        if self.driver_seen {
            if self.driver_live {
                return AppLifecycle::Running;
            }
            return AppLifecycle::Finished(self.driver_end.unwrap_or(FinishReason::DriverDeleted));
        }
        if self.other_pod_live {
            return AppLifecycle::Unconfirmed;
        }
        match self.last_activity {
            Some(at) if at.is_older_than(config.orphan_grace, now) => {
                AppLifecycle::Finished(FinishReason::Orphaned)
            }
            _ => AppLifecycle::Unconfirmed,
        }
    }
}

/// Failed beats Succeeded beats Deleted when several ended driver pods disagree: the most
/// informative reason is reported.
fn driver_end_reason(pod: &PodView) -> FinishReason {
    match pod.phase {
        PodPhase::Failed => FinishReason::DriverFailed,
        PodPhase::Succeeded => FinishReason::DriverSucceeded,
        _ => FinishReason::DriverDeleted,
    }
}

fn finish_reason_rank(reason: FinishReason) -> u8 {
    match reason {
        FinishReason::DriverFailed => 3,
        FinishReason::DriverSucceeded => 2,
        FinishReason::DriverDeleted => 1,
        FinishReason::Orphaned => 0,
    }
}

/// The view indexed once so that every rule runs in time linear in the view.
struct ViewIndex<'a> {
    nodes_by_name: HashMap<&'a str, &'a NodeView>,
    /// Pool pods keyed by (namespace, pool name).
    pool_pods: HashMap<(&'a str, &'a str), Vec<&'a PodView>>,
    /// State of applications that have a pool, keyed by (node, app). A pod's executor is then
    /// found among the few executors its application has on its node.
    pool_app_states: HashMap<(&'a str, &'a str), &'a ApplicationState>,
    /// Nodes holding data of applications that have a pool, with the bytes held.
    pool_app_bytes: HashMap<&'a str, Vec<(&'a str, u64)>>,
    lifecycles: HashMap<&'a str, AppLifecycle>,
}

impl<'a> ViewIndex<'a> {
    fn build(view: &'a ObservedView, config: &PolicyConfig, now: Timestamp) -> Self {
        let pool_apps: HashMap<(&str, &str), &str> = view
            .pools
            .iter()
            .map(|pool| {
                (
                    (pool.pool.namespace.as_str(), pool.pool.name.as_str()),
                    pool.spec.app_id.as_str(),
                )
            })
            .collect();
        let pool_app_ids: std::collections::HashSet<&str> = pool_apps.values().copied().collect();

        let mut evidence: HashMap<&str, AppEvidence> = HashMap::new();
        let mut pool_pods: HashMap<(&str, &str), Vec<&PodView>> = HashMap::new();
        for pod in &view.pods {
            let pool_key = pod
                .owner_pool
                .as_deref()
                .map(|pool| (pod.pod.namespace.as_str(), pool));
            if let Some(key) = pool_key {
                pool_pods.entry(key).or_default().push(pod);
            }
            // A pool pod belongs to its pool's application even if its template forgot the label.
            let app = pod
                .app_id()
                .or_else(|| pool_key.and_then(|key| pool_apps.get(&key).copied()));
            let Some(app) = app else { continue };
            let entry = evidence.entry(app).or_default();
            if pod.spark_role() == Some(ROLE_DRIVER) {
                entry.driver_seen = true;
                if pod.is_live() {
                    entry.driver_live = true;
                } else {
                    let reason = driver_end_reason(pod);
                    let better = entry.driver_end.is_none_or(|current| {
                        finish_reason_rank(reason) > finish_reason_rank(current)
                    });
                    if better {
                        entry.driver_end = Some(reason);
                    }
                }
            } else if pod.is_live() {
                entry.other_pod_live = true;
            }
        }

        let mut nodes_by_name = HashMap::with_capacity(view.nodes.len());
        let mut pool_app_states = HashMap::new();
        let mut pool_app_bytes: HashMap<&str, Vec<(&str, u64)>> = HashMap::new();
        for node in &view.nodes {
            nodes_by_name.insert(node.name.as_str(), node);
            let Some(daemon) = &node.daemon else { continue };
            for app in &daemon.applications {
                let entry = evidence.entry(app.app_id.as_str()).or_default();
                entry.last_activity = entry.last_activity.max(Some(app.last_activity));
                if !pool_app_ids.contains(app.app_id.as_str()) {
                    continue;
                }
                pool_app_bytes
                    .entry(app.app_id.as_str())
                    .or_default()
                    .push((node.name.as_str(), app.bytes_stored));
                pool_app_states.insert((node.name.as_str(), app.app_id.as_str()), app);
            }
        }

        let lifecycles = evidence
            .iter()
            .map(|(app, evidence)| (*app, evidence.lifecycle(config, now)))
            .collect();
        Self {
            nodes_by_name,
            pool_pods,
            pool_app_states,
            pool_app_bytes,
            lifecycles,
        }
    }

    /// Applications nobody has seen (no pod, no data) are unconfirmed, not finished.
    fn lifecycle(&self, app_id: &str) -> AppLifecycle {
        self.lifecycles
            .get(app_id)
            .copied()
            .unwrap_or(AppLifecycle::Unconfirmed)
    }

    fn finish_reason(&self, app_id: &str) -> Option<FinishReason> {
        match self.lifecycle(app_id) {
            AppLifecycle::Finished(reason) => Some(reason),
            _ => None,
        }
    }
}

/// Decides what the controller should do now, given what it observed.
///
/// Pure and deterministic: the same view, config and time give the same actions in the same
/// order. See the module documentation for the rules.
pub fn decide(view: &ObservedView, config: &PolicyConfig, now: Timestamp) -> Decision {
    let index = ViewIndex::build(view, config, now);
    let mut actions = Vec::new();
    cleanup_applications(view, &index, &mut actions);
    guard_nodes(view, &index, &mut actions);
    let next_round_at = allocate_pools(view, &index, now, &mut actions);
    Decision {
        actions,
        next_round_at,
    }
}

/// Removes finished applications from every daemon that reports holding them, and from every
/// daemon that did not report at all (it may hold them; removal is idempotent).
fn cleanup_applications(view: &ObservedView, index: &ViewIndex<'_>, actions: &mut Vec<Action>) {
    let mut finished: Vec<(&str, FinishReason)> = index
        .lifecycles
        .iter()
        .filter_map(|(app, lifecycle)| match lifecycle {
            AppLifecycle::Finished(reason) => Some((*app, *reason)),
            _ => None,
        })
        .collect();
    if finished.is_empty() {
        return;
    }
    finished.sort_unstable_by_key(|(app, _)| *app);
    for node in &view.nodes {
        match &node.daemon {
            Some(daemon) => {
                for app in &daemon.applications {
                    if let Some(reason) = index.finish_reason(&app.app_id) {
                        actions.push(Action::RemoveApplication {
                            node: node.name.clone(),
                            app_id: app.app_id.clone(),
                            reason,
                        });
                    }
                }
            }
            None => {
                for (app_id, reason) in &finished {
                    actions.push(Action::RemoveApplication {
                        node: node.name.clone(),
                        app_id: (*app_id).to_owned(),
                        reason: *reason,
                    });
                }
            }
        }
    }
}

/// Keeps the guard annotations on exactly the nodes that hold bytes of applications that are not
/// finished. Unconfirmed applications count: their data is kept until they are known finished, so
/// it is protected until then too. Nodes with an unknown daemon are left as they are.
fn guard_nodes(view: &ObservedView, index: &ViewIndex<'_>, actions: &mut Vec<Action>) {
    for node in &view.nodes {
        let Some(daemon) = &node.daemon else { continue };
        let holds_live_bytes = daemon
            .applications
            .iter()
            .any(|app| app.bytes_stored > 0 && index.finish_reason(&app.app_id).is_none());
        if holds_live_bytes {
            let keys_to_add: Vec<String> = GUARD_ANNOTATIONS
                .iter()
                .filter(|key| node.annotations.get(**key).map(String::as_str) != Some(GUARD_VALUE))
                .map(|key| (*key).to_owned())
                .collect();
            if keys_to_add.is_empty() {
                continue;
            }
            let owned_keys: BTreeSet<String> = owned_guard_keys(&node.annotations)
                .iter()
                .map(|key| (*key).to_owned())
                .chain(keys_to_add.iter().cloned())
                .collect();
            actions.push(Action::GuardNode {
                node: node.name.clone(),
                keys_to_add,
                owned_keys: owned_keys.into_iter().collect(),
            });
        } else if node.annotations.contains_key(ANNOTATION_GUARD_OWNED_KEYS) {
            let keys_to_remove = owned_guard_keys(&node.annotations)
                .iter()
                .filter(|key| node.annotations.contains_key(**key))
                .map(|key| (*key).to_owned())
                .collect();
            actions.push(Action::UnguardNode {
                node: node.name.clone(),
                keys_to_remove,
            });
        }
    }
}

/// The guard keys kess recorded as its own. Anything else listed in the ownership annotation is
/// ignored, so a mangled annotation can never make kess delete an unrelated key.
fn owned_guard_keys(annotations: &BTreeMap<String, String>) -> Vec<&'static str> {
    let Some(listed) = annotations.get(ANNOTATION_GUARD_OWNED_KEYS) else {
        return Vec::new();
    };
    let listed: BTreeSet<&str> = listed.split(',').map(str::trim).collect();
    GUARD_ANNOTATIONS
        .iter()
        .copied()
        .filter(|key| listed.contains(key))
        .collect()
}

/// How a requested pool pod stands with its daemon.
enum Registration<'a> {
    Registered(&'a ExecutorState),
    /// The daemon answered and does not list the executor as registered (or the pod is not on a
    /// node yet).
    NotRegistered,
    /// The pod's node, or its daemon's state, is unknown.
    Unknown,
}

/// Runs the allocation round of every pool that is due, returning when the next one is due.
fn allocate_pools(
    view: &ObservedView,
    index: &ViewIndex<'_>,
    now: Timestamp,
    actions: &mut Vec<Action>,
) -> Option<Timestamp> {
    let mut next_round_at: Option<Timestamp> = None;
    for pool in &view.pools {
        let spec = &pool.spec;
        if let Err(message) = spec.validate() {
            actions.push(Action::UpdatePoolStatus {
                pool: pool.pool.clone(),
                status: invalid_pool_status(pool, index, message, now),
            });
            continue;
        }
        let due_at = pool
            .last_round
            .map_or(now, |last| last.saturating_add(spec.batch_delay));
        let next = if due_at <= now {
            allocate_pool(pool, index, now, actions);
            now.saturating_add(spec.batch_delay)
        } else {
            due_at
        };
        next_round_at = Some(next_round_at.map_or(next, |earliest| earliest.min(next)));
    }
    next_round_at
}

fn invalid_pool_status(
    pool: &PoolView,
    index: &ViewIndex<'_>,
    message: String,
    now: Timestamp,
) -> PoolStatus {
    PoolStatus {
        expected: pool.expected,
        requested: 0,
        registered: 0,
        pending: 0,
        registration_unknown: 0,
        safe_to_remove: 0,
        shuffle_bytes_per_node: shuffle_bytes_per_node(index, &pool.spec.app_id),
        conditions: vec![PoolCondition::InvalidSpec { message }],
        last_round: now,
    }
}

fn shuffle_bytes_per_node(index: &ViewIndex<'_>, app_id: &str) -> BTreeMap<String, u64> {
    index
        .pool_app_bytes
        .get(app_id)
        .map(|per_node| {
            let mut bytes_per_node = BTreeMap::new();
            for (node, bytes) in per_node {
                *bytes_per_node.entry((*node).to_owned()).or_default() += *bytes;
            }
            bytes_per_node
        })
        .unwrap_or_default()
}

/// A registered executor that scale-down may take, with what orders the choice.
struct RemovalCandidate<'a> {
    pod: &'a PodView,
    node: &'a str,
    last_activity: Timestamp,
}

/// A pool's pods sorted by how they stand.
#[derive(Default)]
struct PoolPods<'a> {
    registered: Vec<(&'a PodView, &'a ExecutorState)>,
    /// Known not registered, still within `pending_timeout`.
    waiting: Vec<&'a PodView>,
    /// Known not registered for longer than `pending_timeout`.
    timed_out: Vec<&'a PodView>,
    /// On a node whose daemon state is unknown.
    unknown: Vec<&'a PodView>,
    /// Containers ended (Succeeded/Failed) but the pod not deleted yet.
    ended: Vec<&'a PodView>,
    /// Requested pods of this pool per node.
    per_node: HashMap<&'a str, u32>,
}

impl<'a> PoolPods<'a> {
    fn classify(pool: &PoolView, index: &ViewIndex<'a>, now: Timestamp) -> Self {
        let mut sorted = Self::default();
        let Some(pods) = index
            .pool_pods
            .get(&(pool.pool.namespace.as_str(), pool.pool.name.as_str()))
        else {
            return sorted;
        };
        for pod in pods.iter().copied() {
            if pod.is_terminating() {
                continue;
            }
            if pod.has_ended() {
                sorted.ended.push(pod);
                continue;
            }
            if let Some(node) = pod.node.as_deref() {
                *sorted.per_node.entry(node).or_default() += 1;
            }
            match registration(pod, &pool.spec.app_id, index) {
                Registration::Registered(executor) => sorted.registered.push((pod, executor)),
                Registration::Unknown => sorted.unknown.push(pod),
                Registration::NotRegistered => {
                    if pod
                        .creation_timestamp
                        .is_older_than(pool.spec.pending_timeout, now)
                    {
                        sorted.timed_out.push(pod);
                    } else {
                        sorted.waiting.push(pod);
                    }
                }
            }
        }
        sorted
    }

    fn pending(&self) -> u32 {
        count(self.waiting.len() + self.timed_out.len())
    }

    /// Pods that are, or may be, running executors: registered plus unknown.
    fn present(&self) -> u32 {
        count(self.registered.len() + self.unknown.len())
    }

    fn requested(&self) -> u32 {
        self.present() + self.pending()
    }
}

/// One allocation round of one pool.
///
/// * pods that ended are deleted (the next round replaces them);
/// * pods not registered within `pending_timeout` are deleted (the next round replaces them);
/// * while any pod is not registered, nothing is created (`WaitingForRegistration`);
/// * otherwise `min(expected - registered, batch_size)` pods are created, never beyond `max`;
/// * above `expected`, [`scale_down`] removes what is safe to remove;
/// * once the application finished, nothing is created and pods are released.
fn allocate_pool(
    pool: &PoolView,
    index: &ViewIndex<'_>,
    now: Timestamp,
    actions: &mut Vec<Action>,
) {
    let spec = &pool.spec;
    let app_id = spec.app_id.as_str();
    let app_finished = index.finish_reason(app_id).is_some();
    let mut conditions = Vec::new();

    let expected = if app_finished {
        conditions.push(PoolCondition::ApplicationFinished);
        0
    } else if pool.expected > spec.max_executors {
        conditions.push(PoolCondition::AtMaximum {
            replicas: pool.expected,
            max: spec.max_executors,
        });
        spec.max_executors
    } else if pool.expected < spec.min_executors {
        conditions.push(PoolCondition::RaisedToMinimum {
            replicas: pool.expected,
            min: spec.min_executors,
        });
        spec.min_executors
    } else {
        pool.expected
    };

    let pods = PoolPods::classify(pool, index, now);
    let mut deletions: Vec<(&PodView, DeleteReason)> = pods
        .ended
        .iter()
        .map(|pod| (*pod, DeleteReason::ExecutorEnded))
        .collect();

    let mut candidates: Vec<RemovalCandidate<'_>> = Vec::new();
    let mut blocked: BTreeMap<ScaleDownBlockReason, u32> = BTreeMap::new();
    for (pod, executor) in &pods.registered {
        if executor.writes_in_flight > 0 {
            *blocked
                .entry(ScaleDownBlockReason::WritesInFlight)
                .or_default() += 1;
        } else if !executor.last_activity.is_older_than(spec.idle_timeout, now) {
            *blocked.entry(ScaleDownBlockReason::NotIdle).or_default() += 1;
        } else if let Some(node) = pod.node.as_deref() {
            candidates.push(RemovalCandidate {
                pod,
                node,
                last_activity: executor.last_activity,
            });
        }
    }
    if !pods.unknown.is_empty() {
        let executors = count(pods.unknown.len());
        blocked.insert(ScaleDownBlockReason::DaemonUnknown, executors);
        conditions.push(PoolCondition::RegistrationUnknown { executors });
    }
    let safe_to_remove = count(candidates.len());

    if app_finished {
        // The data goes with the application, so no executor needs protecting any more.
        let releasable = pods
            .registered
            .iter()
            .map(|(pod, _)| *pod)
            .chain(pods.waiting.iter().copied())
            .chain(pods.timed_out.iter().copied())
            .chain(pods.unknown.iter().copied());
        for pod in releasable.take(spec.batch_size as usize) {
            deletions.push((pod, DeleteReason::ApplicationFinished));
        }
    } else {
        if !pods.timed_out.is_empty() {
            conditions.push(PoolCondition::PendingTimedOut {
                deleted: count(pods.timed_out.len()),
            });
            deletions.extend(
                pods.timed_out
                    .iter()
                    .map(|pod| (*pod, DeleteReason::PendingTimeout)),
            );
        }
        if pods.pending() > 0 {
            conditions.push(PoolCondition::WaitingForRegistration {
                pending: pods.pending(),
            });
        } else if pods.present() < expected {
            let room = spec.max_executors.saturating_sub(pods.requested());
            let create = (expected - pods.present()).min(spec.batch_size).min(room);
            if create > 0 {
                actions.push(Action::CreatePods {
                    pool: pool.pool.clone(),
                    count: create,
                });
            }
        }
        scale_down(
            spec,
            expected,
            &pods,
            candidates,
            &blocked,
            &mut deletions,
            &mut conditions,
        );
    }

    for (pod, reason) in deletions {
        actions.push(Action::DeletePod {
            pod: pod.pod.clone(),
            reason,
        });
    }
    actions.push(Action::UpdatePoolStatus {
        pool: pool.pool.clone(),
        status: PoolStatus {
            expected,
            requested: pods.requested(),
            registered: count(pods.registered.len()),
            pending: pods.pending(),
            registration_unknown: count(pods.unknown.len()),
            safe_to_remove,
            shuffle_bytes_per_node: shuffle_bytes_per_node(index, app_id),
            conditions,
            last_round: now,
        },
    });
}

/// Brings a pool that has more pods than `expected` down by at most `batch_size` pods a round.
///
/// Pods that have not registered go first (they hold nothing; newest first, as the oldest are
/// closest to registering). Then safe registered executors, only down to `expected`, preferring
/// those whose removal empties a node of the pool's executors (fewest on the node first; among
/// equal nodes the one with the idlest executor), then the longest idle. Pods deleted for the
/// pending timeout this round already count as gone.
fn scale_down<'a>(
    spec: &PoolSpec,
    expected: u32,
    pods: &PoolPods<'a>,
    mut candidates: Vec<RemovalCandidate<'a>>,
    blocked: &BTreeMap<ScaleDownBlockReason, u32>,
    deletions: &mut Vec<(&'a PodView, DeleteReason)>,
    conditions: &mut Vec<PoolCondition>,
) {
    let remaining = pods.requested() - count(pods.timed_out.len());
    let mut surplus = remaining.saturating_sub(expected);
    let mut budget = spec.batch_size;
    if surplus == 0 {
        return;
    }

    let mut waiting = pods.waiting.clone();
    waiting.sort_by(|a, b| {
        b.creation_timestamp
            .cmp(&a.creation_timestamp)
            .then_with(|| a.pod.cmp(&b.pod))
    });
    for pod in waiting {
        if budget == 0 || surplus == 0 {
            break;
        }
        deletions.push((pod, DeleteReason::ScaleDownNotRegistered));
        budget -= 1;
        surplus -= 1;
    }

    let wanted = pods
        .present()
        .saturating_sub(expected)
        .min(budget)
        .min(surplus);
    if wanted == 0 {
        return;
    }
    let mut idlest_on_node: HashMap<&str, Timestamp> = HashMap::new();
    for candidate in &candidates {
        let idlest = idlest_on_node
            .entry(candidate.node)
            .or_insert(candidate.last_activity);
        *idlest = (*idlest).min(candidate.last_activity);
    }
    let node_rank = |candidate: &RemovalCandidate<'a>| {
        (
            pods.per_node.get(candidate.node).copied().unwrap_or(0),
            idlest_on_node.get(candidate.node).copied(),
            candidate.node,
        )
    };
    candidates.sort_by(|a, b| {
        node_rank(a)
            .cmp(&node_rank(b))
            .then_with(|| a.last_activity.cmp(&b.last_activity))
            .then_with(|| a.pod.pod.cmp(&b.pod.pod))
    });
    if count(candidates.len()) < wanted {
        for (reason, executors) in blocked {
            conditions.push(PoolCondition::ScaleDownBlocked {
                reason: *reason,
                executors: *executors,
            });
        }
    }
    for candidate in candidates.into_iter().take(wanted as usize) {
        deletions.push((candidate.pod, DeleteReason::ScaleDown));
    }
}

fn registration<'a>(pod: &PodView, app_id: &str, index: &ViewIndex<'a>) -> Registration<'a> {
    let Some(node_name) = pod.node.as_deref() else {
        return Registration::NotRegistered;
    };
    let Some(node) = index.nodes_by_name.get(node_name) else {
        return Registration::Unknown;
    };
    if node.daemon.is_none() {
        return Registration::Unknown;
    }
    let Some(executor_id) = pod.executor_id.as_deref() else {
        return Registration::NotRegistered;
    };
    let executor = index
        .pool_app_states
        .get(&(node_name, app_id))
        .and_then(|app| {
            app.executors
                .iter()
                .find(|executor| executor.executor_id == executor_id)
        });
    match executor {
        Some(executor) if executor.registered => Registration::Registered(executor),
        _ => Registration::NotRegistered,
    }
}

/// Pod counts fit in `u32` (a pool's `max` is one); saturate rather than wrap if a view ever
/// holds more.
fn count(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "spark";
    const APP: &str = "spark-app-1";
    const OTHER_APP: &str = "spark-app-2";
    const POOL: &str = "pool-1";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_700_000_000_000 + secs * 1000)
    }

    const NOW: i64 = 10_000;

    fn now() -> Timestamp {
        at(NOW)
    }

    fn config() -> PolicyConfig {
        PolicyConfig {
            orphan_grace: Duration::from_secs(600),
        }
    }

    fn node(name: &str, daemon: Option<DaemonState>) -> NodeView {
        NodeView {
            name: name.to_owned(),
            annotations: BTreeMap::new(),
            daemon,
        }
    }

    fn annotated(mut node: NodeView, annotations: &[(&str, &str)]) -> NodeView {
        for (key, value) in annotations {
            node.annotations
                .insert((*key).to_owned(), (*value).to_owned());
        }
        node
    }

    fn daemon(applications: Vec<ApplicationState>) -> Option<DaemonState> {
        Some(DaemonState {
            disk_free_bytes: 1 << 40,
            applications,
        })
    }

    fn app_data(app_id: &str, bytes: u64, last_activity: Timestamp) -> ApplicationState {
        ApplicationState {
            app_id: app_id.to_owned(),
            bytes_stored: bytes,
            committed_outputs: bytes / 100,
            last_activity,
            executors: Vec::new(),
        }
    }

    fn with_executors(
        mut app: ApplicationState,
        executors: Vec<ExecutorState>,
    ) -> ApplicationState {
        app.executors = executors;
        app
    }

    /// A registered executor, idle since `last_activity`, with everything committed.
    fn idle_executor(id: &str, last_activity: Timestamp) -> ExecutorState {
        ExecutorState {
            executor_id: id.to_owned(),
            registered: true,
            committed_outputs: 4,
            bytes_stored: 400,
            writes_in_flight: 0,
            fetches_in_flight: 0,
            last_activity,
        }
    }

    fn pod(name: &str, app_id: &str, role: &str, node: Option<&str>, phase: PodPhase) -> PodView {
        let labels = [(LABEL_APP_ID, app_id), (LABEL_SPARK_ROLE, role)]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        PodView {
            pod: ObjectRef::new(NS, name),
            node: node.map(str::to_owned),
            labels,
            phase,
            deletion_timestamp: None,
            creation_timestamp: at(0),
            owner_pool: None,
            executor_id: None,
        }
    }

    fn driver(app_id: &str, phase: PodPhase) -> PodView {
        pod(
            &format!("{app_id}-driver"),
            app_id,
            ROLE_DRIVER,
            Some("n-driver"),
            phase,
        )
    }

    /// A pod of `POOL` for executor `id` on `node`, created at `created`.
    fn pool_pod(id: &str, node: Option<&str>, created: Timestamp) -> PodView {
        let mut pod = pod(
            &format!("{POOL}-exec-{id}"),
            APP,
            ROLE_EXECUTOR,
            node,
            PodPhase::Running,
        );
        pod.owner_pool = Some(POOL.to_owned());
        pod.executor_id = Some(id.to_owned());
        pod.creation_timestamp = created;
        pod
    }

    fn pool(expected: u32, max: u32) -> PoolView {
        PoolView {
            pool: ObjectRef::new(NS, POOL),
            spec: PoolSpec {
                idle_timeout: Duration::from_secs(60),
                pending_timeout: Duration::from_secs(300),
                ..PoolSpec::new(APP, max)
            },
            expected,
            last_round: None,
        }
    }

    /// A view with a running driver for `APP`, the pool, and the given nodes and pool pods.
    fn pool_view(pool: PoolView, nodes: Vec<NodeView>, pool_pods: Vec<PodView>) -> ObservedView {
        let mut pods = vec![driver(APP, PodPhase::Running)];
        pods.extend(pool_pods);
        ObservedView {
            nodes,
            pods,
            pools: vec![pool],
        }
    }

    /// Nodes `n0..` each holding the given registered idle executors of `APP`.
    fn nodes_with_executors(layout: &[&[(&str, Timestamp)]]) -> Vec<NodeView> {
        layout
            .iter()
            .enumerate()
            .map(|(i, executors)| {
                let executors = executors
                    .iter()
                    .map(|(id, last)| idle_executor(id, *last))
                    .collect();
                node(
                    &format!("n{i}"),
                    daemon(vec![with_executors(app_data(APP, 1000, at(0)), executors)]),
                )
            })
            .collect()
    }

    fn run(view: &ObservedView) -> Decision {
        decide(view, &config(), now())
    }

    fn removals(decision: &Decision) -> Vec<(&str, &str, FinishReason)> {
        decision
            .actions
            .iter()
            .filter_map(|action| match action {
                Action::RemoveApplication {
                    node,
                    app_id,
                    reason,
                } => Some((node.as_str(), app_id.as_str(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn created(decision: &Decision) -> u32 {
        decision
            .actions
            .iter()
            .map(|action| match action {
                Action::CreatePods { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }

    fn deleted(decision: &Decision) -> Vec<(&str, DeleteReason)> {
        decision
            .actions
            .iter()
            .filter_map(|action| match action {
                Action::DeletePod { pod, reason } => Some((pod.name.as_str(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn guard_actions(decision: &Decision) -> Vec<&Action> {
        decision
            .actions
            .iter()
            .filter(|action| {
                matches!(
                    action,
                    Action::GuardNode { .. } | Action::UnguardNode { .. }
                )
            })
            .collect()
    }

    fn status(decision: &Decision) -> &PoolStatus {
        decision
            .actions
            .iter()
            .find_map(|action| match action {
                Action::UpdatePoolStatus { status, .. } => Some(status),
                _ => None,
            })
            .expect("the pool ran a round")
    }

    // ---- application cleanup ----

    #[test]
    fn ended_driver_cleans_every_daemon_holding_the_app_and_every_unknown_daemon() {
        for (phase, reason) in [
            (PodPhase::Succeeded, FinishReason::DriverSucceeded),
            (PodPhase::Failed, FinishReason::DriverFailed),
        ] {
            let view = ObservedView {
                nodes: vec![
                    node(
                        "n1",
                        daemon(vec![
                            app_data(APP, 10, now()),
                            app_data(OTHER_APP, 10, now()),
                        ]),
                    ),
                    node("n2", daemon(vec![app_data(OTHER_APP, 10, now())])),
                    node("n3", None),
                ],
                pods: vec![driver(APP, phase), driver(OTHER_APP, PodPhase::Running)],
                pools: vec![],
            };
            assert_eq!(
                removals(&run(&view)),
                vec![("n1", APP, reason), ("n3", APP, reason)],
                "{phase:?}"
            );
        }
    }

    #[test]
    fn driver_being_deleted_counts_as_finished() {
        let mut deleting = driver(APP, PodPhase::Running);
        deleting.deletion_timestamp = Some(now());
        let view = ObservedView {
            nodes: vec![node("n1", daemon(vec![app_data(APP, 10, now())]))],
            pods: vec![deleting],
            pools: vec![],
        };
        assert_eq!(
            removals(&run(&view)),
            vec![("n1", APP, FinishReason::DriverDeleted)]
        );
    }

    #[test]
    fn running_driver_keeps_its_data_however_old() {
        for phase in [PodPhase::Pending, PodPhase::Running, PodPhase::Unknown] {
            let view = ObservedView {
                nodes: vec![
                    node("n1", daemon(vec![app_data(APP, 10, at(0))])),
                    node("n2", None),
                ],
                pods: vec![driver(APP, phase)],
                pools: vec![],
            };
            assert!(removals(&run(&view)).is_empty(), "{phase:?}");
        }
    }

    #[test]
    fn one_live_driver_among_ended_ones_keeps_the_app_running() {
        let mut old = driver(APP, PodPhase::Failed);
        old.pod.name = "old-driver".to_owned();
        let view = ObservedView {
            nodes: vec![node("n1", daemon(vec![app_data(APP, 10, at(0))]))],
            pods: vec![old, driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        assert!(removals(&run(&view)).is_empty());
    }

    #[test]
    fn absent_driver_within_orphan_grace_keeps_data_and_guard() {
        // The driver may simply not be observed yet (informer lag, a controller just started).
        let view = ObservedView {
            nodes: vec![node("n1", daemon(vec![app_data(APP, 10, at(NOW - 599))]))],
            pods: vec![],
            pools: vec![],
        };
        let decision = run(&view);
        assert!(removals(&decision).is_empty());
        assert!(matches!(
            guard_actions(&decision)[..],
            [Action::GuardNode { .. }]
        ));
    }

    #[test]
    fn absent_driver_past_orphan_grace_is_cleaned_as_after_a_controller_restart() {
        // The driver was deleted while the controller was down: only the data is left.
        let view = ObservedView {
            nodes: vec![
                node("n1", daemon(vec![app_data(APP, 10, at(NOW - 601))])),
                node("n2", daemon(vec![app_data(APP, 10, at(NOW - 900))])),
                node("n3", None),
            ],
            pods: vec![],
            pools: vec![],
        };
        assert_eq!(
            removals(&run(&view)),
            vec![
                ("n1", APP, FinishReason::Orphaned),
                ("n2", APP, FinishReason::Orphaned),
                ("n3", APP, FinishReason::Orphaned),
            ]
        );
    }

    #[test]
    fn orphan_grace_counts_from_the_latest_activity_on_any_daemon() {
        let view = ObservedView {
            nodes: vec![
                node("n1", daemon(vec![app_data(APP, 10, at(NOW - 900))])),
                node("n2", daemon(vec![app_data(APP, 10, at(NOW - 10))])),
            ],
            pods: vec![],
            pools: vec![],
        };
        assert!(removals(&run(&view)).is_empty());
    }

    #[test]
    fn absent_driver_with_live_executor_pods_is_not_orphaned() {
        let view = ObservedView {
            nodes: vec![node("n1", daemon(vec![app_data(APP, 10, at(0))]))],
            pods: vec![pod(
                "exec-1",
                APP,
                ROLE_EXECUTOR,
                Some("n1"),
                PodPhase::Running,
            )],
            pools: vec![],
        };
        assert!(removals(&run(&view)).is_empty());
    }

    // ---- node guard ----

    #[test]
    fn node_with_live_app_bytes_gets_both_guard_annotations_and_records_them() {
        let view = ObservedView {
            nodes: vec![node("n1", daemon(vec![app_data(APP, 10, now())]))],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        let decision = run(&view);
        let keys: Vec<String> = GUARD_ANNOTATIONS.iter().map(|k| (*k).to_owned()).collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        let expected = Action::GuardNode {
            node: "n1".to_owned(),
            keys_to_add: keys,
            owned_keys: sorted_keys.clone(),
        };
        assert_eq!(guard_actions(&decision), vec![&expected]);
        let (node, patch) = expected.node_annotation_patch().expect("a node patch");
        assert_eq!(node, "n1");
        assert_eq!(
            patch.get(ANNOTATION_SCALE_DOWN_DISABLED),
            Some(&Some("true".to_owned()))
        );
        assert_eq!(
            patch.get(ANNOTATION_DO_NOT_DISRUPT),
            Some(&Some("true".to_owned()))
        );
        assert_eq!(
            patch.get(ANNOTATION_GUARD_OWNED_KEYS),
            Some(&Some(sorted_keys.join(",")))
        );
    }

    #[test]
    fn guard_adds_only_missing_keys_and_owns_only_those() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![app_data(APP, 10, now())])),
                &[(ANNOTATION_DO_NOT_DISRUPT, "true")],
            )],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        assert_eq!(
            guard_actions(&run(&view)),
            vec![&Action::GuardNode {
                node: "n1".to_owned(),
                keys_to_add: vec![ANNOTATION_SCALE_DOWN_DISABLED.to_owned()],
                owned_keys: vec![ANNOTATION_SCALE_DOWN_DISABLED.to_owned()],
            }]
        );
    }

    #[test]
    fn guard_value_other_than_true_counts_as_absent() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![app_data(APP, 10, now())])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "false"),
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                ],
            )],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        assert_eq!(
            guard_actions(&run(&view)),
            vec![&Action::GuardNode {
                node: "n1".to_owned(),
                keys_to_add: vec![ANNOTATION_DO_NOT_DISRUPT.to_owned()],
                owned_keys: vec![ANNOTATION_DO_NOT_DISRUPT.to_owned()],
            }]
        );
    }

    #[test]
    fn guard_restores_an_owned_key_someone_removed_while_still_needed() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![app_data(APP, 10, now())])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    (ANNOTATION_GUARD_OWNED_KEYS, &GUARD_ANNOTATIONS.join(",")),
                ],
            )],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        let mut owned: Vec<String> = GUARD_ANNOTATIONS.iter().map(|k| (*k).to_owned()).collect();
        owned.sort();
        assert_eq!(
            guard_actions(&run(&view)),
            vec![&Action::GuardNode {
                node: "n1".to_owned(),
                keys_to_add: vec![ANNOTATION_SCALE_DOWN_DISABLED.to_owned()],
                owned_keys: owned,
            }]
        );
    }

    #[test]
    fn guarded_node_that_still_needs_it_is_left_alone() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![app_data(APP, 10, now())])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                    (ANNOTATION_GUARD_OWNED_KEYS, ANNOTATION_DO_NOT_DISRUPT),
                ],
            )],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        assert!(guard_actions(&run(&view)).is_empty());
    }

    #[test]
    fn unguard_removes_exactly_the_keys_kess_set() {
        // A person had set do-not-disrupt before kess guarded the node: it stays.
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                    (ANNOTATION_GUARD_OWNED_KEYS, ANNOTATION_SCALE_DOWN_DISABLED),
                ],
            )],
            pods: vec![],
            pools: vec![],
        };
        let decision = run(&view);
        let expected = Action::UnguardNode {
            node: "n1".to_owned(),
            keys_to_remove: vec![ANNOTATION_SCALE_DOWN_DISABLED.to_owned()],
        };
        assert_eq!(guard_actions(&decision), vec![&expected]);
        let (_, patch) = expected.node_annotation_patch().expect("a node patch");
        assert_eq!(
            patch,
            BTreeMap::from([
                (ANNOTATION_SCALE_DOWN_DISABLED.to_owned(), None),
                (ANNOTATION_GUARD_OWNED_KEYS.to_owned(), None),
            ])
        );
    }

    #[test]
    fn unguard_never_removes_keys_that_are_not_guard_keys_even_if_listed() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    ("team.example.com/owner", "data"),
                    (
                        ANNOTATION_GUARD_OWNED_KEYS,
                        "team.example.com/owner, karpenter.sh/do-not-disrupt",
                    ),
                ],
            )],
            pods: vec![],
            pools: vec![],
        };
        assert_eq!(
            guard_actions(&run(&view)),
            vec![&Action::UnguardNode {
                node: "n1".to_owned(),
                keys_to_remove: vec![ANNOTATION_DO_NOT_DISRUPT.to_owned()],
            }]
        );
    }

    #[test]
    fn foreign_guard_annotations_are_never_touched() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![])),
                &[
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                ],
            )],
            pods: vec![],
            pools: vec![],
        };
        assert!(run(&view).actions.is_empty());
    }

    #[test]
    fn unknown_daemon_keeps_the_guard_as_it_is() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", None),
                &[
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                    (ANNOTATION_GUARD_OWNED_KEYS, ANNOTATION_SCALE_DOWN_DISABLED),
                ],
            )],
            pods: vec![],
            pools: vec![],
        };
        assert!(guard_actions(&run(&view)).is_empty());
    }

    #[test]
    fn bytes_of_a_finished_app_do_not_keep_a_guard() {
        let view = ObservedView {
            nodes: vec![annotated(
                node("n1", daemon(vec![app_data(APP, 10, now())])),
                &[
                    (ANNOTATION_SCALE_DOWN_DISABLED, "true"),
                    (ANNOTATION_DO_NOT_DISRUPT, "true"),
                    (ANNOTATION_GUARD_OWNED_KEYS, &GUARD_ANNOTATIONS.join(",")),
                ],
            )],
            pods: vec![driver(APP, PodPhase::Succeeded)],
            pools: vec![],
        };
        let decision = run(&view);
        assert_eq!(removals(&decision).len(), 1);
        assert_eq!(
            guard_actions(&decision),
            vec![&Action::UnguardNode {
                node: "n1".to_owned(),
                keys_to_remove: GUARD_ANNOTATIONS.iter().map(|k| (*k).to_owned()).collect(),
            }]
        );
    }

    #[test]
    fn registered_executors_without_bytes_need_no_guard() {
        let view = ObservedView {
            nodes: vec![node(
                "n1",
                daemon(vec![with_executors(
                    app_data(APP, 0, now()),
                    vec![idle_executor("1", now())],
                )]),
            )],
            pods: vec![driver(APP, PodPhase::Running)],
            pools: vec![],
        };
        assert!(guard_actions(&run(&view)).is_empty());
    }

    // ---- ExecutorPool allocation ----

    #[test]
    fn scale_up_creates_at_most_batch_size_per_round() {
        let view = pool_view(pool(12, 20), vec![node("n0", daemon(vec![]))], vec![]);
        let decision = run(&view);
        assert_eq!(created(&decision), 5);
        assert_eq!(status(&decision).expected, 12);
        assert_eq!(status(&decision).requested, 0);
    }

    #[test]
    fn scale_up_creates_the_remainder_below_batch_size() {
        let ids: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let executors: Vec<(&str, Timestamp)> = ids.iter().map(|id| (id.as_str(), now())).collect();
        let nodes = nodes_with_executors(&[&executors]);
        let pods = ids
            .iter()
            .map(|id| pool_pod(id, Some("n0"), at(0)))
            .collect();
        let decision = run(&pool_view(pool(12, 20), nodes, pods));
        assert_eq!(created(&decision), 2);
        assert_eq!(status(&decision).registered, 10);
    }

    #[test]
    fn custom_batch_size_is_honoured() {
        let mut pool = pool(100, 100);
        pool.spec.batch_size = 20;
        let decision = run(&pool_view(pool, vec![node("n0", daemon(vec![]))], vec![]));
        assert_eq!(created(&decision), 20);
    }

    #[test]
    fn running_pods_that_have_not_registered_block_creation() {
        // Running is not registered: the daemon on the pod's node says it has not registered.
        let nodes = vec![node(
            "n0",
            daemon(vec![with_executors(
                app_data(APP, 0, now()),
                vec![ExecutorState {
                    registered: false,
                    ..idle_executor("1", now())
                }],
            )]),
        )];
        let pods = vec![
            pool_pod("1", Some("n0"), at(NOW - 5)),
            pool_pod("2", Some("n0"), at(NOW - 5)),
            pool_pod("3", None, at(NOW - 5)),
        ];
        let decision = run(&pool_view(pool(12, 20), nodes, pods));
        assert_eq!(created(&decision), 0);
        assert!(deleted(&decision).is_empty());
        let status = status(&decision);
        assert_eq!(
            (status.requested, status.registered, status.pending),
            (3, 0, 3)
        );
        assert!(status
            .conditions
            .contains(&PoolCondition::WaitingForRegistration { pending: 3 }));
    }

    #[test]
    fn registration_counts_only_at_the_daemon_on_the_pods_node() {
        // Executor "1" is registered on n1, but the pod runs on n0.
        let mut nodes = nodes_with_executors(&[&[], &[("1", now())]]);
        nodes[0].daemon = daemon(vec![]);
        let decision = run(&pool_view(
            pool(1, 5),
            nodes,
            vec![pool_pod("1", Some("n0"), at(NOW - 5))],
        ));
        assert_eq!(status(&decision).pending, 1);
    }

    #[test]
    fn pod_not_registered_within_pending_timeout_is_deleted_then_replaced() {
        let nodes = nodes_with_executors(&[&[("1", now())]]);
        let stuck = pool_pod("2", Some("n0"), at(NOW - 301));
        let mut view = pool_view(
            pool(2, 5),
            nodes,
            vec![pool_pod("1", Some("n0"), at(0)), stuck],
        );
        let decision = run(&view);
        assert_eq!(
            deleted(&decision),
            vec![("pool-1-exec-2", DeleteReason::PendingTimeout)]
        );
        assert_eq!(created(&decision), 0, "the next round recreates");
        assert!(status(&decision)
            .conditions
            .contains(&PoolCondition::PendingTimedOut { deleted: 1 }));

        // Next round: the stuck pod is terminating and no longer counts.
        view.pods[2].deletion_timestamp = Some(now());
        view.pools[0].last_round = Some(now());
        let decision = decide(&view, &config(), at(NOW + 1));
        assert_eq!(created(&decision), 1);
        assert!(deleted(&decision).is_empty());
    }

    #[test]
    fn pending_pod_just_inside_the_timeout_is_kept() {
        let decision = run(&pool_view(
            pool(1, 5),
            vec![node("n0", daemon(vec![]))],
            vec![pool_pod("1", Some("n0"), at(NOW - 300))],
        ));
        assert!(deleted(&decision).is_empty());
    }

    #[test]
    fn expected_is_clamped_to_max() {
        let mut pool = pool(50, 8);
        pool.spec.batch_size = 10;
        let decision = run(&pool_view(pool, vec![node("n0", daemon(vec![]))], vec![]));
        assert_eq!(created(&decision), 8);
        let status = status(&decision);
        assert_eq!(status.expected, 8);
        assert!(status.conditions.contains(&PoolCondition::AtMaximum {
            replicas: 50,
            max: 8
        }));
    }

    #[test]
    fn pool_at_max_creates_nothing_more() {
        let ids: Vec<String> = (0..8).map(|i| i.to_string()).collect();
        let executors: Vec<(&str, Timestamp)> = ids.iter().map(|id| (id.as_str(), now())).collect();
        let pods = ids
            .iter()
            .map(|id| pool_pod(id, Some("n0"), at(0)))
            .collect();
        let decision = run(&pool_view(
            pool(50, 8),
            nodes_with_executors(&[&executors]),
            pods,
        ));
        assert_eq!(created(&decision), 0);
        assert!(deleted(&decision).is_empty());
    }

    #[test]
    fn expected_is_raised_to_min() {
        let mut pool = pool(0, 8);
        pool.spec.min_executors = 3;
        let decision = run(&pool_view(pool, vec![node("n0", daemon(vec![]))], vec![]));
        assert_eq!(created(&decision), 3);
        assert!(status(&decision)
            .conditions
            .contains(&PoolCondition::RaisedToMinimum {
                replicas: 0,
                min: 3
            }));
    }

    #[test]
    fn rounds_are_paced_by_batch_delay() {
        let mut view = pool_view(pool(12, 20), vec![node("n0", daemon(vec![]))], vec![]);
        view.pools[0].last_round = Some(Timestamp::from_unix_ms(now().unix_ms() - 999));
        let decision = run(&view);
        assert!(
            decision.actions.is_empty(),
            "not due: no actions, no status"
        );
        assert_eq!(
            decision.next_round_at,
            Some(Timestamp::from_unix_ms(now().unix_ms() + 1))
        );

        view.pools[0].last_round = Some(at(NOW - 1));
        let decision = run(&view);
        assert_eq!(created(&decision), 5);
        assert_eq!(status(&decision).last_round, now());
        assert_eq!(decision.next_round_at, Some(at(NOW + 1)));
    }

    #[test]
    fn scale_down_removes_only_safe_executors() {
        let idle = at(NOW - 61);
        let mut nodes =
            nodes_with_executors(&[&[("safe", idle), ("busy", idle), ("recent", at(NOW - 59))]]);
        if let Some(daemon) = nodes[0].daemon.as_mut() {
            daemon.applications[0].executors[1].writes_in_flight = 1;
        }
        nodes.push(node("n-unknown", None));
        let pods = vec![
            pool_pod("safe", Some("n0"), at(0)),
            pool_pod("busy", Some("n0"), at(0)),
            pool_pod("recent", Some("n0"), at(0)),
            pool_pod("lost", Some("n-unknown"), at(0)),
        ];
        let decision = run(&pool_view(pool(0, 10), nodes, pods));
        assert_eq!(
            deleted(&decision),
            vec![("pool-1-exec-safe", DeleteReason::ScaleDown)]
        );
        let status = status(&decision);
        assert_eq!(status.safe_to_remove, 1);
        assert_eq!(status.registration_unknown, 1);
        for reason in [
            ScaleDownBlockReason::WritesInFlight,
            ScaleDownBlockReason::NotIdle,
            ScaleDownBlockReason::DaemonUnknown,
        ] {
            assert!(
                status
                    .conditions
                    .contains(&PoolCondition::ScaleDownBlocked {
                        reason,
                        executors: 1
                    }),
                "{reason:?}: {:?}",
                status.conditions
            );
        }
    }

    #[test]
    fn unregistered_executor_is_never_scaled_down_as_safe() {
        let mut nodes = nodes_with_executors(&[&[("1", at(0))]]);
        if let Some(daemon) = nodes[0].daemon.as_mut() {
            daemon.applications[0].executors[0].registered = false;
        }
        // Recent pod: pending, not timed out; scale-down may delete it only as not registered.
        let decision = run(&pool_view(
            pool(0, 10),
            nodes,
            vec![pool_pod("1", Some("n0"), at(NOW - 1))],
        ));
        assert_eq!(
            deleted(&decision),
            vec![("pool-1-exec-1", DeleteReason::ScaleDownNotRegistered)]
        );
        assert_eq!(status(&decision).safe_to_remove, 0);
    }

    #[test]
    fn scale_down_prefers_emptying_nodes_then_the_longest_idle() {
        let t = |secs| at(NOW - secs);
        // n0: three executors (the idlest of all), n1: one, n2: two, n3: one (idler than n1's).
        let nodes = nodes_with_executors(&[
            &[("a", t(900)), ("b", t(900)), ("c", t(900))],
            &[("d", t(100))],
            &[("e", t(200)), ("f", t(300))],
            &[("g", t(150))],
        ]);
        let pods: Vec<PodView> = [
            ("a", 0),
            ("b", 0),
            ("c", 0),
            ("d", 1),
            ("e", 2),
            ("f", 2),
            ("g", 3),
        ]
        .iter()
        .map(|(id, n)| pool_pod(id, Some(&format!("n{n}")), at(0)))
        .collect();
        let decision = run(&pool_view(pool(3, 10), nodes, pods));
        assert_eq!(
            deleted(&decision),
            vec![
                ("pool-1-exec-g", DeleteReason::ScaleDown),
                ("pool-1-exec-d", DeleteReason::ScaleDown),
                ("pool-1-exec-f", DeleteReason::ScaleDown),
                ("pool-1-exec-e", DeleteReason::ScaleDown),
            ]
        );
    }

    #[test]
    fn scale_down_is_limited_by_batch_size_and_by_the_surplus() {
        let ids: Vec<String> = (0..10).map(|i| format!("{i:02}")).collect();
        let executors: Vec<(&str, Timestamp)> = ids.iter().map(|id| (id.as_str(), at(0))).collect();
        let pods: Vec<PodView> = ids
            .iter()
            .map(|id| pool_pod(id, Some("n0"), at(0)))
            .collect();
        let nodes = nodes_with_executors(&[&executors]);

        let decision = run(&pool_view(pool(2, 10), nodes.clone(), pods.clone()));
        assert_eq!(deleted(&decision).len(), 5, "batch size");
        let decision = run(&pool_view(pool(8, 10), nodes, pods));
        assert_eq!(deleted(&decision).len(), 2, "registered - expected");
        assert_eq!(created(&decision), 0);
    }

    #[test]
    fn pods_on_an_unknown_daemon_are_not_timed_out_scaled_down_or_replaced() {
        let pods: Vec<PodView> = (0..3)
            .map(|i| pool_pod(&i.to_string(), Some("n0"), at(0)))
            .collect();
        let decision = run(&pool_view(pool(1, 10), vec![node("n0", None)], pods));
        assert!(deleted(&decision).is_empty());
        assert_eq!(created(&decision), 0);
        let status = status(&decision);
        assert_eq!((status.registration_unknown, status.pending), (3, 0));
        assert!(status
            .conditions
            .contains(&PoolCondition::ScaleDownBlocked {
                reason: ScaleDownBlockReason::DaemonUnknown,
                executors: 3
            }));
    }

    #[test]
    fn executors_created_by_a_spark_driver_are_never_touched() {
        // Spark's own executors: one stuck pending for ages, one ended, one idle and registered.
        let mut stuck = pod("spark-exec-1", APP, ROLE_EXECUTOR, None, PodPhase::Pending);
        stuck.creation_timestamp = at(0);
        stuck.executor_id = Some("1".to_owned());
        let mut ended = pod(
            "spark-exec-2",
            APP,
            ROLE_EXECUTOR,
            Some("n0"),
            PodPhase::Failed,
        );
        ended.executor_id = Some("2".to_owned());
        let mut idle = pod(
            "spark-exec-3",
            APP,
            ROLE_EXECUTOR,
            Some("n0"),
            PodPhase::Running,
        );
        idle.executor_id = Some("3".to_owned());
        let nodes = nodes_with_executors(&[&[("3", at(0))]]);
        let spark_pods = vec![stuck, ended, idle];

        // With a pool for the same application: the pool ignores them and scales itself.
        let decision = run(&pool_view(pool(2, 10), nodes.clone(), spark_pods.clone()));
        assert!(deleted(&decision).is_empty());
        assert_eq!(created(&decision), 2);
        assert_eq!(status(&decision).requested, 0);

        // Without any pool: nothing is created or deleted at all.
        let mut pods = vec![driver(APP, PodPhase::Running)];
        pods.extend(spark_pods);
        let view = ObservedView {
            nodes,
            pods,
            pools: vec![],
        };
        let decision = run(&view);
        assert!(decision
            .actions
            .iter()
            .all(|action| !matches!(action, Action::DeletePod { .. } | Action::CreatePods { .. })));
    }

    #[test]
    fn ended_pool_pod_is_deleted_and_replaced_next_round() {
        let nodes = nodes_with_executors(&[&[("1", now())]]);
        let mut dead = pool_pod("2", Some("n0"), at(0));
        dead.phase = PodPhase::Failed;
        let mut view = pool_view(
            pool(2, 5),
            nodes,
            vec![pool_pod("1", Some("n0"), at(0)), dead],
        );
        let decision = run(&view);
        assert_eq!(
            deleted(&decision),
            vec![("pool-1-exec-2", DeleteReason::ExecutorEnded)]
        );
        // The dead pod does not count, so its replacement is requested in the same round.
        assert_eq!(created(&decision), 1);

        view.pods[2].deletion_timestamp = Some(now());
        view.pools[0].last_round = Some(now());
        let decision = decide(&view, &config(), at(NOW + 1));
        assert!(deleted(&decision).is_empty());
    }

    #[test]
    fn pool_of_a_finished_app_creates_nothing_and_releases_its_pods() {
        let nodes = nodes_with_executors(&[&[("1", now()), ("2", now())]]);
        let mut view = pool_view(
            pool(5, 10),
            nodes,
            vec![
                pool_pod("1", Some("n0"), at(0)),
                pool_pod("2", Some("n0"), at(0)),
            ],
        );
        view.pods[0].phase = PodPhase::Succeeded;
        let decision = run(&view);
        assert_eq!(created(&decision), 0);
        assert_eq!(
            deleted(&decision),
            vec![
                ("pool-1-exec-1", DeleteReason::ApplicationFinished),
                ("pool-1-exec-2", DeleteReason::ApplicationFinished),
            ]
        );
        let status = status(&decision);
        assert_eq!(status.expected, 0);
        assert!(status
            .conditions
            .contains(&PoolCondition::ApplicationFinished));
    }

    #[test]
    fn status_reports_counts_and_shuffle_bytes_per_node() {
        let mut nodes = nodes_with_executors(&[&[("1", at(0))], &[("2", now())]]);
        nodes.push(node("n-other", daemon(vec![app_data(OTHER_APP, 7, now())])));
        let pods = vec![
            pool_pod("1", Some("n0"), at(0)),
            pool_pod("2", Some("n1"), at(0)),
            pool_pod("3", None, at(NOW - 1)),
        ];
        let decision = run(&pool_view(pool(3, 10), nodes, pods));
        assert_eq!(
            status(&decision),
            &PoolStatus {
                expected: 3,
                requested: 3,
                registered: 2,
                pending: 1,
                registration_unknown: 0,
                safe_to_remove: 1,
                shuffle_bytes_per_node: BTreeMap::from([
                    ("n0".to_owned(), 1000),
                    ("n1".to_owned(), 1000),
                ]),
                conditions: vec![PoolCondition::WaitingForRegistration { pending: 1 }],
                last_round: now(),
            }
        );
    }

    #[test]
    fn invalid_spec_is_reported_and_not_acted_on() {
        let mut pool = pool(5, 2);
        pool.spec.min_executors = 3;
        let decision = run(&pool_view(pool, vec![node("n0", daemon(vec![]))], vec![]));
        assert_eq!(created(&decision), 0);
        assert!(matches!(
            status(&decision).conditions[..],
            [PoolCondition::InvalidSpec { .. }]
        ));
    }

    #[test]
    fn same_view_gives_the_same_decision() {
        let nodes = nodes_with_executors(&[&[("1", at(0))], &[("2", at(0))]]);
        let mut view = pool_view(
            pool(0, 10),
            nodes,
            vec![
                pool_pod("1", Some("n0"), at(0)),
                pool_pod("2", Some("n1"), at(0)),
            ],
        );
        view.nodes.push(node("n-unknown", None));
        view.pods.push(driver(OTHER_APP, PodPhase::Succeeded));
        view.pods.push(driver("spark-app-3", PodPhase::Failed));
        let first = run(&view);
        for _ in 0..10 {
            assert_eq!(run(&view), first);
        }
    }
}
