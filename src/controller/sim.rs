//! A deterministic, seeded model cluster that runs [`decide`] every tick and applies its actions.
//!
//! The model exists to check the controller's promises at a scale unit tests cannot reach
//! (1,000 nodes, 10,000 executors) and under the mess a real cluster produces: pods that start
//! late or never, executors that die, daemons that fail to answer for a few ticks, drivers that
//! finish, fail, are deleted or vanish while the controller is not looking, and an autoscaler that
//! removes every empty node that is not guarded. It records every broken promise as a violation
//! instead of panicking, so a test can show them all at once.
//!
//! What happens each tick, in order:
//!
//! 1. the world moves: deleted pods go away, applications reach their scripted events (start,
//!    quiet down, end), pods start and their executors register with the daemon on their node,
//!    executors write and commit map outputs, some die, daemons drop out of sight and come back,
//!    and the autoscaler removes empty unguarded nodes (and adds nodes for unschedulable pods);
//! 2. the controller observes the world (daemons out of sight are reported as unknown) and
//!    [`decide`] runs on that view;
//! 3. the actions are applied: pods created (and scheduled at once) or deleted, application data
//!    removed from daemons that answer, node annotations patched, pool status recorded;
//! 4. the promises are checked.
//!
//! One tick is one pool `batch_delay`, so every pool may run one allocation round per tick.
//! Randomness comes from a SplitMix64 generator seeded from [`SimConfig::seed`], and every
//! iteration that affects the outcome is over vectors or ordered maps: the same config gives the
//! same [`SimReport`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::policy::{
    decide, Action, ApplicationState, DaemonState, DeleteReason, ExecutorState, NodeView,
    ObjectRef, ObservedView, PodPhase, PodView, PolicyConfig, PoolSpec, PoolStatus, PoolView,
    Timestamp, GUARD_ANNOTATIONS, GUARD_VALUE, LABEL_APP_ID, LABEL_SPARK_ROLE, ROLE_DRIVER,
    ROLE_EXECUTOR,
};

/// Namespace of every simulated pod and pool.
const NAMESPACE: &str = "spark";
/// Simulated wall clock at tick 0.
const EPOCH_MS: i64 = 1_700_000_000_000;
/// Ticks an ended driver pod stays before it is deleted (like a TTL controller would), long
/// after its pool released its executors: from then on only the orphan rule sees the application.
const DRIVER_TTL_TICKS: u64 = 40;
/// Most violations kept as text; all of them are counted.
const MAX_VIOLATION_TEXTS: usize = 50;

/// The shape and behaviour of a simulated cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub seed: u64,
    pub ticks: u64,
    /// Length of a tick; also every pool's `batch_delay`.
    pub tick: Duration,
    pub initial_nodes: usize,
    /// The autoscaler never grows the cluster beyond this.
    pub max_nodes: usize,
    /// Pods a node can hold.
    pub pods_per_node: u32,
    /// Applications whose executors come from an `ExecutorPool`.
    pub pool_apps: usize,
    /// Applications whose executors the Spark driver creates itself.
    pub spark_apps: usize,
    /// Executors each application wants while busy.
    pub executors_per_app: u32,
    /// Per node and tick, the chance that its daemon stops answering.
    pub daemon_unknown_chance: f64,
    /// Longest run of ticks a daemon stays unknown.
    pub max_unknown_ticks: u64,
    /// Ticks a node must stay empty and unguarded before the autoscaler removes it. Must exceed
    /// `max_unknown_ticks`: the guard cannot be set while the daemon is out of sight.
    pub autoscaler_empty_ticks: u64,
    pub autoscaler_removals_per_tick: usize,
    pub policy: PolicyConfig,
}

impl SimConfig {
    /// 1,000 nodes and 10,000 executors at the peak (half from pools, half from Spark drivers).
    pub fn at_scale(seed: u64) -> Self {
        Self {
            seed,
            ticks: 150,
            tick: Duration::from_secs(1),
            initial_nodes: 1000,
            max_nodes: 1200,
            pods_per_node: 16,
            pool_apps: 50,
            spark_apps: 50,
            // 105, not 100: flaky pools wait for late pods, so this keeps 10,000 running at the
            // peak; and 105 is no multiple of the batch sizes, so ramps end on a partial batch.
            executors_per_app: 105,
            daemon_unknown_chance: 0.002,
            max_unknown_ticks: 3,
            autoscaler_empty_ticks: 10,
            autoscaler_removals_per_tick: 25,
            policy: PolicyConfig {
                orphan_grace: Duration::from_secs(20),
            },
        }
    }

    /// The same scenario on 40 nodes and 160 executors, for quick checks.
    pub fn small(seed: u64) -> Self {
        Self {
            initial_nodes: 40,
            max_nodes: 60,
            pool_apps: 4,
            spark_apps: 4,
            executors_per_app: 20,
            daemon_unknown_chance: 0.02,
            ..Self::at_scale(seed)
        }
    }
}

/// What a run did and every promise it saw broken.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub ticks: u64,
    pub peak_nodes: usize,
    pub final_nodes: usize,
    /// Most executor pods running at once.
    pub peak_running_executors: usize,
    /// Executors that started and registered with a daemon over the whole run.
    pub executors_started: u64,
    pub pods_created_by_controller: u64,
    pub pods_deleted_by_controller: u64,
    pub pending_timeouts: u64,
    pub scale_down_deletions: u64,
    pub nodes_added_by_autoscaler: u64,
    pub nodes_removed_by_autoscaler: u64,
    /// Nodes the autoscaler would have removed (empty long enough) but for their guard.
    pub nodes_kept_by_guard: u64,
    pub guards_applied: u64,
    pub unguards_applied: u64,
    pub applications_finished: u64,
    /// Finished applications verified to have left no data by their cleanup deadline.
    pub applications_verified_clean: u64,
    pub bytes_freed: u64,
    /// Shuffle bytes of running applications on nodes the autoscaler removed: must stay 0.
    pub live_bytes_lost: u64,
    /// Most pods one pool created in one tick.
    pub largest_create_batch: u32,
    pub ramps: Vec<RampResult>,
    pub violation_count: u64,
    pub violations: Vec<String>,
}

/// How a pool whose pods start promptly scaled up from 0 to its expected size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RampResult {
    pub pool: String,
    pub expected: u32,
    pub batch_size: u32,
    /// Rounds in which the pool created pods.
    pub creation_rounds: u32,
    /// Rounds from the first creation to the round that saw `expected` executors present.
    pub rounds_to_reach: Option<u32>,
}

impl RampResult {
    /// `ceil(expected / batch_size)`: the rounds a prompt scale-up must take.
    pub fn ideal_rounds(&self) -> u32 {
        self.expected.div_ceil(self.batch_size.max(1))
    }
}

/// Time the decision function took per tick at a given scale.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkReport {
    pub ticks: u64,
    pub nodes: usize,
    pub pods: usize,
    pub peak_running_executors: usize,
    pub mean: Duration,
    pub median: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub violation_count: u64,
}

impl fmt::Display for BenchmarkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "decide over {} ticks ({} nodes, {} pods, {} running executors at peak): \
             mean {:?}, median {:?}, p99 {:?}, max {:?} per tick; {} violations",
            self.ticks,
            self.nodes,
            self.pods,
            self.peak_running_executors,
            self.mean,
            self.median,
            self.p99,
            self.max,
            self.violation_count
        )
    }
}

/// Runs the whole scenario and reports what happened.
pub fn run(config: &SimConfig) -> SimReport {
    let mut simulation = Simulation::new(config.clone());
    for _ in 0..config.ticks {
        simulation.step();
    }
    simulation.finish()
}

/// Runs the scenario and measures only the time spent in [`decide`] each tick.
pub fn run_benchmark(config: &SimConfig) -> BenchmarkReport {
    let mut simulation = Simulation::new(config.clone());
    let mut times = Vec::with_capacity(usize::try_from(config.ticks).unwrap_or(0));
    let mut peak_pods = 0;
    let mut peak_nodes = 0;
    for _ in 0..config.ticks {
        times.push(simulation.step());
        peak_pods = peak_pods.max(simulation.view.pods.len());
        peak_nodes = peak_nodes.max(simulation.view.nodes.len());
    }
    let report = simulation.finish();
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let at = |fraction: f64| -> Duration {
        let last = times.len().saturating_sub(1);
        // Rounded index into the sorted times; the cast cannot lose anything that matters here.
        let index = ((last as f64) * fraction).round() as usize;
        times.get(index.min(last)).copied().unwrap_or_default()
    };
    BenchmarkReport {
        ticks: config.ticks,
        nodes: peak_nodes,
        pods: peak_pods,
        peak_running_executors: report.peak_running_executors,
        mean: total / u32::try_from(times.len().max(1)).unwrap_or(u32::MAX),
        median: at(0.5),
        p99: at(0.99),
        max: times.last().copied().unwrap_or_default(),
        violation_count: report.violation_count,
    }
}

/// SplitMix64: tiny, fast, and stable across versions, so a seed always replays the same run.
struct SimRng(u64);

impl SimRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    fn chance(&mut self, probability: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < probability
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppEnd {
    Succeeded,
    Failed,
    /// The driver pod is deleted; its executors are garbage-collected with it.
    DriverDeleted,
    /// Driver and executors disappear between two observations (deleted while the controller
    /// was down): only the data on the daemons is left, and the orphan rule must find it.
    DriverVanished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppKind {
    Pool { pool: usize, prompt: bool },
    Spark,
}

struct SimApp {
    id: String,
    kind: AppKind,
    driver_pod: String,
    start_tick: u64,
    /// Executors write until this tick, then go idle (and a pool's expected drops).
    busy_until: u64,
    planned_end: Option<(u64, AppEnd)>,
    ended: Option<(u64, AppEnd)>,
    next_executor_id: u64,
    /// Latest tick at which a daemon recorded activity for the application.
    last_activity_tick: u64,
    verified_clean: bool,
}

impl SimApp {
    fn is_running(&self) -> bool {
        self.ended.is_none()
    }

    fn is_busy(&self, tick: u64) -> bool {
        self.is_running() && tick < self.busy_until
    }
}

/// Behaviour of one pod that the controller cannot see.
#[derive(Clone, Debug)]
struct PodSim {
    app: usize,
    /// Tick at which the pod starts (and its executor registers); `None`: it never does.
    start_tick: Option<u64>,
    dies_at: Option<u64>,
    /// Tick at which the current writes commit.
    writes_commit_at: u64,
    registered: bool,
    /// Created by a Spark driver rather than by a pool.
    spark_executor: bool,
}

#[derive(Clone, Debug, Default)]
struct NodeSim {
    /// The daemon is out of sight for ticks before this one.
    unknown_until: u64,
    empty_since: Option<u64>,
    /// Whether this node was already counted in [`SimReport::nodes_kept_by_guard`].
    kept_by_guard: bool,
}

struct PoolSim {
    app: usize,
    target: u32,
    ramp: RampTracker,
    /// Pods created and removed by scale-down in the current tick.
    created_this_tick: u32,
    scaled_down_this_tick: u32,
}

#[derive(Default)]
struct RampTracker {
    tracked: bool,
    first_create: Option<u64>,
    creation_rounds: u32,
    reached: Option<u64>,
}

/// The model cluster. The Kubernetes side lives in an [`ObservedView`] that is the ground truth
/// (daemon states included), so observing it costs nothing; daemons out of sight are taken out
/// for the duration of the [`decide`] call only.
pub struct Simulation {
    config: SimConfig,
    rng: SimRng,
    tick: u64,
    view: ObservedView,
    node_sims: Vec<NodeSim>,
    node_index: HashMap<String, usize>,
    pod_sims: Vec<PodSim>,
    apps: Vec<SimApp>,
    app_index: HashMap<String, usize>,
    pools: Vec<PoolSim>,
    next_node_number: usize,
    schedule_cursor: usize,
    report: SimReport,
    /// Drops the controller's guard patches: lets a test show that the model does see loss.
    drop_guards: bool,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Self {
        let mut simulation = Self {
            rng: SimRng(config.seed),
            tick: 0,
            view: ObservedView::default(),
            node_sims: Vec::new(),
            node_index: HashMap::new(),
            pod_sims: Vec::new(),
            apps: Vec::new(),
            app_index: HashMap::new(),
            pools: Vec::new(),
            next_node_number: 0,
            schedule_cursor: 0,
            report: SimReport::default(),
            drop_guards: false,
            config,
        };
        simulation.add_nodes(simulation.config.initial_nodes);
        simulation.script_applications();
        simulation
    }

    fn now(&self) -> Timestamp {
        let tick_ms = i64::try_from(self.config.tick.as_millis()).unwrap_or(i64::MAX);
        let ticks = i64::try_from(self.tick).unwrap_or(i64::MAX);
        Timestamp::from_unix_ms(EPOCH_MS.saturating_add(tick_ms.saturating_mul(ticks)))
    }

    fn violation(&mut self, text: String) {
        self.report.violation_count += 1;
        if self.report.violations.len() < MAX_VIOLATION_TEXTS {
            self.report
                .violations
                .push(format!("tick {}: {text}", self.tick));
        }
    }

    fn add_nodes(&mut self, count: usize) {
        for _ in 0..count {
            let name = format!("node-{:05}", self.next_node_number);
            self.next_node_number += 1;
            self.node_index.insert(name.clone(), self.view.nodes.len());
            self.view.nodes.push(NodeView {
                name,
                annotations: BTreeMap::new(),
                daemon: Some(DaemonState {
                    disk_free_bytes: 1 << 40,
                    applications: Vec::new(),
                }),
            });
            self.node_sims.push(NodeSim {
                empty_since: Some(self.tick),
                ..NodeSim::default()
            });
        }
        self.report.peak_nodes = self.report.peak_nodes.max(self.view.nodes.len());
    }

    /// Writes every application's script: when it starts, stops working, and how it ends. A third
    /// of each kind never ends, so their data must survive the whole run.
    fn script_applications(&mut self) {
        let ticks = self.config.ticks;
        // Ends leave time for the slowest cleanup (orphan grace) to be verified before the end.
        let latest_end = ticks.saturating_sub(45).max(60);
        for index in 0..self.config.pool_apps {
            let prompt = index % 2 == 0;
            let batch_size = [5, 10, 20][index % 3];
            let start_tick = self.rng.between(2, 10);
            let busy_until = start_tick + self.rng.between(50, 65);
            let planned_end = (index % 3 != 0).then(|| {
                let how = if self.rng.chance(0.7) {
                    AppEnd::Succeeded
                } else {
                    AppEnd::Failed
                };
                (
                    self.rng
                        .between(busy_until + 15, latest_end.max(busy_until + 15)),
                    how,
                )
            });
            let app = self.push_app(
                format!("app-p{index:03}"),
                AppKind::Pool {
                    pool: self.pools.len(),
                    prompt,
                },
                start_tick,
                busy_until,
                planned_end,
            );
            let mut spec = PoolSpec::new(&self.apps[app].id, self.config.executors_per_app * 6 / 5);
            spec.batch_size = batch_size;
            spec.batch_delay = self.config.tick;
            spec.idle_timeout = self.config.tick * 10;
            spec.pending_timeout = self.config.tick * 10;
            self.view.pools.push(PoolView {
                pool: ObjectRef::new(NAMESPACE, format!("pool-{index:03}")),
                spec,
                expected: 0,
                last_round: None,
            });
            self.pools.push(PoolSim {
                app,
                target: self.config.executors_per_app,
                ramp: RampTracker {
                    tracked: prompt,
                    ..RampTracker::default()
                },
                created_this_tick: 0,
                scaled_down_this_tick: 0,
            });
        }
        for index in 0..self.config.spark_apps {
            let start_tick = self.rng.between(1, 4);
            let busy_until = self.rng.between(50, 70);
            let planned_end = (index % 3 != 0).then(|| {
                let how = match index % 4 {
                    0 => AppEnd::Succeeded,
                    1 => AppEnd::Failed,
                    2 => AppEnd::DriverDeleted,
                    _ => AppEnd::DriverVanished,
                };
                (
                    self.rng
                        .between(busy_until + 5, latest_end.max(busy_until + 5)),
                    how,
                )
            });
            self.push_app(
                format!("app-s{index:03}"),
                AppKind::Spark,
                start_tick,
                busy_until,
                planned_end,
            );
        }
    }

    fn push_app(
        &mut self,
        id: String,
        kind: AppKind,
        start_tick: u64,
        busy_until: u64,
        planned_end: Option<(u64, AppEnd)>,
    ) -> usize {
        let index = self.apps.len();
        self.app_index.insert(id.clone(), index);
        self.apps.push(SimApp {
            driver_pod: format!("{id}-driver"),
            id,
            kind,
            start_tick,
            busy_until,
            planned_end,
            ended: None,
            next_executor_id: 1,
            last_activity_tick: 0,
            verified_clean: false,
        });
        index
    }

    /// Advances the world by one tick, lets the controller decide, applies the decision and
    /// checks the promises. Returns the time [`decide`] took.
    pub fn step(&mut self) -> Duration {
        self.tick += 1;
        self.remove_deleted_pods();
        self.run_application_scripts();
        self.schedule_pending_pods();
        self.start_pods();
        self.run_executors();
        self.move_daemons_out_of_sight();
        self.autoscale();

        let now = self.now();
        let hidden = self.hide_unknown_daemons();
        let started = Instant::now();
        let decision = decide(&self.view, &self.config.policy, now);
        let elapsed = started.elapsed();
        for (index, daemon) in hidden {
            self.view.nodes[index].daemon = Some(daemon);
        }
        self.apply(decision.actions);
        self.check_pool_sizes();
        self.check_cleanup();
        let running = self
            .view
            .pods
            .iter()
            .filter(|pod| pod.executor_id.is_some() && pod.phase == PodPhase::Running)
            .count();
        self.report.peak_running_executors = self.report.peak_running_executors.max(running);
        elapsed
    }

    /// Ends the run: collects the ramp results.
    pub fn finish(mut self) -> SimReport {
        self.report.ticks = self.tick;
        self.report.final_nodes = self.view.nodes.len();
        for (pool, sim) in self.view.pools.iter().zip(&self.pools) {
            if !sim.ramp.tracked {
                continue;
            }
            self.report.ramps.push(RampResult {
                pool: pool.pool.name.clone(),
                expected: sim.target,
                batch_size: pool.spec.batch_size,
                creation_rounds: sim.ramp.creation_rounds,
                rounds_to_reach: sim
                    .ramp
                    .reached
                    .zip(sim.ramp.first_create)
                    .map(|(reached, first)| u32::try_from(reached - first).unwrap_or(u32::MAX)),
            });
        }
        self.report
    }

    // ---- the world ----

    /// Pods deleted in an earlier tick are gone now; their executors' registrations end, their
    /// data stays on the daemon (that is what an external shuffle service is for).
    fn remove_deleted_pods(&mut self) {
        let mut unregister = Vec::new();
        self.retain_pods(|pod, sim| {
            let keep = pod.deletion_timestamp.is_none();
            if !keep && sim.registered {
                unregister.push((pod.node.clone(), sim.app, pod.executor_id.clone()));
            }
            keep
        });
        for (node, app, executor) in unregister {
            if let (Some(node), Some(executor)) = (node, executor) {
                self.unregister_executor(&node, app, &executor);
            }
        }
    }

    fn retain_pods(&mut self, mut keep: impl FnMut(&PodView, &PodSim) -> bool) {
        let pods = std::mem::take(&mut self.view.pods);
        let sims = std::mem::take(&mut self.pod_sims);
        (self.view.pods, self.pod_sims) = pods
            .into_iter()
            .zip(sims)
            .filter(|(pod, sim)| keep(pod, sim))
            .unzip();
    }

    fn run_application_scripts(&mut self) {
        let tick = self.tick;
        for app in 0..self.apps.len() {
            if self.apps[app].start_tick == tick {
                self.start_application(app);
            }
            if let AppKind::Pool { pool, .. } = self.apps[app].kind {
                // The HPA: full size while busy, a fifth once the work quiets down, 0 at the end.
                let target = self.pools[pool].target;
                let expected = if !self.apps[app].is_running() || tick < self.apps[app].start_tick {
                    0
                } else if self.apps[app].is_busy(tick) {
                    target
                } else {
                    target / 5
                };
                self.view.pools[pool].expected = expected;
                if tick >= self.apps[app].busy_until {
                    self.pools[pool].ramp.tracked &= self.pools[pool].ramp.reached.is_some();
                }
            }
            if let Some((end_tick, how)) = self.apps[app].planned_end {
                if end_tick == tick && self.apps[app].is_running() {
                    self.end_application(app, how);
                }
            }
            if let Some((ended, _)) = self.apps[app].ended {
                if ended + DRIVER_TTL_TICKS == tick {
                    let driver = self.apps[app].driver_pod.clone();
                    self.mark_deleted(|pod| pod.pod.name == driver);
                }
            }
        }
        // Spark drivers replace executors that died.
        let mut replacements: BTreeMap<usize, u32> = BTreeMap::new();
        for (pod, sim) in self.view.pods.iter().zip(&self.pod_sims) {
            if sim.spark_executor
                && pod.phase == PodPhase::Failed
                && pod.deletion_timestamp.is_none()
                && self.apps[sim.app].is_running()
            {
                *replacements.entry(sim.app).or_default() += 1;
            }
        }
        if !replacements.is_empty() {
            let now = self.now();
            for (pod, sim) in self.view.pods.iter_mut().zip(&self.pod_sims) {
                if sim.spark_executor && pod.phase == PodPhase::Failed {
                    pod.deletion_timestamp.get_or_insert(now);
                }
            }
            for (app, count) in replacements {
                self.create_spark_executors(app, count);
            }
        }
    }

    fn start_application(&mut self, app: usize) {
        let id = self.apps[app].id.clone();
        let driver = self.apps[app].driver_pod.clone();
        let mut pod = new_pod(&driver, &id, ROLE_DRIVER, self.now());
        pod.phase = PodPhase::Running;
        self.push_pod(
            pod,
            PodSim {
                app,
                start_tick: Some(self.tick),
                dies_at: None,
                writes_commit_at: 0,
                registered: false,
                spark_executor: false,
            },
        );
        if self.apps[app].kind == AppKind::Spark {
            self.create_spark_executors(app, self.config.executors_per_app);
        }
    }

    fn create_spark_executors(&mut self, app: usize, count: u32) {
        for _ in 0..count {
            let executor_id = self.apps[app].next_executor_id;
            self.apps[app].next_executor_id += 1;
            let name = format!("{}-exec-{executor_id}", self.apps[app].id);
            let mut pod = new_pod(&name, &self.apps[app].id, ROLE_EXECUTOR, self.now());
            pod.executor_id = Some(executor_id.to_string());
            let start_tick = self.tick + self.rng.between(1, 3);
            let dies_at = self
                .rng
                .chance(0.01)
                .then(|| start_tick + self.rng.between(1, 40));
            self.push_pod(
                pod,
                PodSim {
                    app,
                    start_tick: Some(start_tick),
                    dies_at,
                    writes_commit_at: 0,
                    registered: false,
                    spark_executor: true,
                },
            );
        }
    }

    fn end_application(&mut self, app: usize, how: AppEnd) {
        self.apps[app].ended = Some((self.tick, how));
        self.report.applications_finished += 1;
        let now = self.now();
        let driver = self.apps[app].driver_pod.clone();
        // The driver and the executors it created; a pool's executors are the pool's business.
        let belongs = |pod: &PodView, sim: &PodSim| {
            pod.pod.name == driver || (sim.app == app && sim.spark_executor)
        };
        match how {
            AppEnd::Succeeded | AppEnd::Failed => {
                let phase = if how == AppEnd::Succeeded {
                    PodPhase::Succeeded
                } else {
                    PodPhase::Failed
                };
                for (pod, sim) in self.view.pods.iter_mut().zip(&self.pod_sims) {
                    if pod.pod.name == driver {
                        pod.phase = phase;
                    } else if belongs(pod, sim) {
                        // The driver deletes its executors as it shuts down.
                        pod.deletion_timestamp.get_or_insert(now);
                    }
                }
            }
            AppEnd::DriverDeleted => {
                for (pod, sim) in self.view.pods.iter_mut().zip(&self.pod_sims) {
                    if belongs(pod, sim) {
                        pod.deletion_timestamp.get_or_insert(now);
                    }
                }
            }
            AppEnd::DriverVanished => {
                let mut unregister = Vec::new();
                self.retain_pods(|pod, sim| {
                    let vanishes = belongs(pod, sim);
                    if vanishes && sim.registered {
                        unregister.push((pod.node.clone(), pod.executor_id.clone()));
                    }
                    !vanishes
                });
                for (node, executor) in unregister {
                    if let (Some(node), Some(executor)) = (node, executor) {
                        self.unregister_executor(&node, app, &executor);
                    }
                }
            }
        }
    }

    fn mark_deleted(&mut self, matches: impl Fn(&PodView) -> bool) {
        let now = self.now();
        for pod in &mut self.view.pods {
            if matches(pod) {
                pod.deletion_timestamp.get_or_insert(now);
            }
        }
    }

    fn push_pod(&mut self, pod: PodView, sim: PodSim) {
        self.view.pods.push(pod);
        self.pod_sims.push(sim);
    }

    /// Binds unscheduled pods round-robin to nodes with room; pods stay unscheduled when the
    /// cluster is full (the autoscaler then adds nodes).
    fn schedule_pending_pods(&mut self) {
        let node_count = self.view.nodes.len();
        let anything_to_place = self
            .view
            .pods
            .iter()
            .any(|pod| pod.node.is_none() && pod.is_live());
        if node_count == 0 || !anything_to_place {
            return;
        }
        let mut load = vec![0u32; node_count];
        let mut unscheduled = Vec::new();
        for (index, pod) in self.view.pods.iter().enumerate() {
            match &pod.node {
                Some(node) if !pod.has_ended() => {
                    if let Some(&node) = self.node_index.get(node) {
                        load[node] += 1;
                    }
                }
                None if pod.is_live() => unscheduled.push(index),
                _ => {}
            }
        }
        for index in unscheduled {
            let mut placed = false;
            for _ in 0..node_count {
                let node = self.schedule_cursor % node_count;
                self.schedule_cursor = (self.schedule_cursor + 1) % node_count;
                if load[node] < self.config.pods_per_node {
                    load[node] += 1;
                    self.view.pods[index].node = Some(self.view.nodes[node].name.clone());
                    placed = true;
                    break;
                }
            }
            if !placed {
                break;
            }
        }
    }

    /// Pods whose start time came start, and their executors register with the daemon.
    fn start_pods(&mut self) {
        let tick = self.tick;
        let now = self.now();
        let mut registrations = Vec::new();
        for (pod, sim) in self.view.pods.iter_mut().zip(&mut self.pod_sims) {
            if pod.phase != PodPhase::Pending || pod.deletion_timestamp.is_some() {
                continue;
            }
            let (Some(node), Some(start)) = (&pod.node, sim.start_tick) else {
                continue;
            };
            if start > tick {
                continue;
            }
            pod.phase = PodPhase::Running;
            if let Some(executor) = &pod.executor_id {
                sim.registered = true;
                self.report.executors_started += 1;
                registrations.push((node.clone(), sim.app, executor.clone()));
            }
        }
        for (node, app, executor) in registrations {
            let app_id = self.apps[app].id.clone();
            self.apps[app].last_activity_tick = tick;
            if let Some(state) = self.application_state(&node, &app_id, true) {
                state.last_activity = now;
                match state
                    .executors
                    .iter_mut()
                    .find(|state| state.executor_id == executor)
                {
                    Some(state) => {
                        state.registered = true;
                        state.last_activity = now;
                    }
                    None => state.executors.push(ExecutorState {
                        executor_id: executor,
                        registered: true,
                        committed_outputs: 0,
                        bytes_stored: 0,
                        writes_in_flight: 0,
                        fetches_in_flight: 0,
                        last_activity: now,
                    }),
                }
            }
        }
    }

    /// Busy executors start writes and commit them a few ticks later; some executors die, losing
    /// only their uncommitted writes.
    fn run_executors(&mut self) {
        let tick = self.tick;
        let now = self.now();
        // Split borrows: pods are read while daemons, apps and the generator change.
        let Simulation {
            view,
            node_index,
            pod_sims,
            apps,
            rng,
            ..
        } = self;
        let mut died = Vec::new();
        for (index, (pod, sim)) in view.pods.iter().zip(pod_sims.iter_mut()).enumerate() {
            if !sim.registered || pod.phase != PodPhase::Running || pod.deletion_timestamp.is_some()
            {
                continue;
            }
            let (Some(node), Some(executor_id)) = (&pod.node, &pod.executor_id) else {
                continue;
            };
            let app = &mut apps[sim.app];
            let dies = sim.dies_at == Some(tick);
            let commits = sim.writes_commit_at == tick;
            let starts_write = app.is_busy(tick) && !dies && rng.chance(0.3);
            let commit_bytes = rng.between(1 << 20, 64 << 20);
            let write_ticks = rng.between(1, 3);
            let Some(state) = application_state(&mut view.nodes, node_index, node, &app.id, false)
            else {
                continue;
            };
            let Some(executor) = state
                .executors
                .iter_mut()
                .find(|state| state.executor_id == *executor_id)
            else {
                continue;
            };
            let mut committed = 0;
            let mut active = false;
            if dies {
                executor.writes_in_flight = 0;
                executor.registered = false;
                sim.registered = false;
                died.push(index);
            } else if commits && executor.writes_in_flight > 0 {
                committed = u64::from(executor.writes_in_flight);
                executor.committed_outputs += committed;
                executor.bytes_stored += commit_bytes;
                executor.writes_in_flight = 0;
                executor.last_activity = now;
                active = true;
            } else if starts_write && executor.writes_in_flight == 0 {
                executor.writes_in_flight = 1;
                executor.last_activity = now;
                sim.writes_commit_at = tick + write_ticks;
                active = true;
            }
            if committed > 0 {
                state.bytes_stored += commit_bytes;
                state.committed_outputs += committed;
            }
            if active {
                state.last_activity = now;
                app.last_activity_tick = tick;
            }
        }
        for index in died {
            view.pods[index].phase = PodPhase::Failed;
        }
    }

    /// Some daemons stop answering for a few ticks. A daemon that just came back answers for at
    /// least one tick.
    fn move_daemons_out_of_sight(&mut self) {
        let tick = self.tick;
        for index in 0..self.node_sims.len() {
            let until = self.node_sims[index].unknown_until;
            if until >= tick {
                continue;
            }
            if self.rng.chance(self.config.daemon_unknown_chance) {
                self.node_sims[index].unknown_until =
                    tick + self.rng.between(1, self.config.max_unknown_ticks.max(1));
            }
        }
    }

    fn daemon_is_unknown(&self, node: usize) -> bool {
        self.tick < self.node_sims[node].unknown_until
    }

    /// Removes nodes that have held no live pod for `autoscaler_empty_ticks` and carry no guard
    /// annotation (a removal of live-app data is recorded as loss), and adds nodes while pods
    /// cannot be scheduled.
    fn autoscale(&mut self) {
        let tick = self.tick;
        let mut occupied = vec![false; self.view.nodes.len()];
        let mut unscheduled = 0usize;
        for pod in &self.view.pods {
            if pod.has_ended() {
                continue;
            }
            match &pod.node {
                Some(node) => {
                    if let Some(&node) = self.node_index.get(node) {
                        occupied[node] = true;
                    }
                }
                None if pod.deletion_timestamp.is_none() => unscheduled += 1,
                None => {}
            }
        }
        let mut removable = Vec::new();
        for (index, node) in self.view.nodes.iter().enumerate() {
            let guarded = GUARD_ANNOTATIONS
                .iter()
                .any(|key| node.annotations.get(*key).map(String::as_str) == Some(GUARD_VALUE));
            let sim = &mut self.node_sims[index];
            if occupied[index] {
                sim.empty_since = None;
                continue;
            }
            let since = *sim.empty_since.get_or_insert(tick);
            if tick - since < self.config.autoscaler_empty_ticks {
                continue;
            }
            if guarded {
                if !sim.kept_by_guard {
                    sim.kept_by_guard = true;
                    self.report.nodes_kept_by_guard += 1;
                }
            } else if removable.len() < self.config.autoscaler_removals_per_tick {
                removable.push(index);
            }
        }
        if !removable.is_empty() {
            self.remove_nodes(&removable);
        }
        let free = self.view.nodes.len() * self.config.pods_per_node as usize;
        let used = self
            .view
            .pods
            .iter()
            .filter(|pod| pod.node.is_some() && !pod.has_ended())
            .count();
        if unscheduled > free.saturating_sub(used) {
            let missing = unscheduled - free.saturating_sub(used);
            let wanted = missing.div_ceil(self.config.pods_per_node.max(1) as usize);
            let room = self.config.max_nodes.saturating_sub(self.view.nodes.len());
            let adding = wanted.min(room);
            self.report.nodes_added_by_autoscaler += adding as u64;
            self.add_nodes(adding);
            self.schedule_pending_pods();
        }
    }

    fn remove_nodes(&mut self, removable: &[usize]) {
        let removed: HashSet<usize> = removable.iter().copied().collect();
        let mut lost = Vec::new();
        for &index in removable {
            let node = &self.view.nodes[index];
            for app in node.daemon.iter().flat_map(|daemon| &daemon.applications) {
                let running = self
                    .app_index
                    .get(&app.app_id)
                    .is_some_and(|&app| self.apps[app].is_running());
                if running && app.bytes_stored > 0 {
                    lost.push((node.name.clone(), app.app_id.clone(), app.bytes_stored));
                }
            }
        }
        for (node, app, bytes) in lost {
            self.report.live_bytes_lost += bytes;
            self.violation(format!(
                "autoscaler removed {node} holding {bytes} bytes of running {app}"
            ));
        }
        self.report.nodes_removed_by_autoscaler += removable.len() as u64;
        let removed_names: HashSet<String> = removable
            .iter()
            .map(|&index| self.view.nodes[index].name.clone())
            .collect();
        let nodes = std::mem::take(&mut self.view.nodes);
        let sims = std::mem::take(&mut self.node_sims);
        (self.view.nodes, self.node_sims) = nodes
            .into_iter()
            .zip(sims)
            .enumerate()
            .filter(|(index, _)| !removed.contains(index))
            .map(|(_, pair)| pair)
            .unzip();
        self.node_index = self
            .view
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| (node.name.clone(), index))
            .collect();
        // Only ended pods can be left on an empty node; they go with it.
        self.retain_pods(|pod, _| {
            pod.node
                .as_ref()
                .is_none_or(|node| !removed_names.contains(node))
        });
        self.schedule_cursor = 0;
    }

    fn hide_unknown_daemons(&mut self) -> Vec<(usize, DaemonState)> {
        let mut hidden = Vec::new();
        for index in 0..self.view.nodes.len() {
            if self.daemon_is_unknown(index) {
                if let Some(daemon) = self.view.nodes[index].daemon.take() {
                    hidden.push((index, daemon));
                }
            }
        }
        hidden
    }

    fn application_state(
        &mut self,
        node: &str,
        app_id: &str,
        create: bool,
    ) -> Option<&mut ApplicationState> {
        application_state(&mut self.view.nodes, &self.node_index, node, app_id, create)
    }

    fn unregister_executor(&mut self, node: &str, app: usize, executor: &str) {
        let app_id = self.apps[app].id.clone();
        if let Some(state) = self.application_state(node, &app_id, false) {
            for state in &mut state.executors {
                if state.executor_id == executor {
                    state.registered = false;
                    state.writes_in_flight = 0;
                }
            }
        }
    }

    // ---- applying the decision ----

    fn apply(&mut self, actions: Vec<Action>) {
        let mut deletions: HashMap<String, DeleteReason> = HashMap::new();
        let mut removed: HashSet<(String, usize)> = HashSet::new();
        for pool in &mut self.pools {
            pool.created_this_tick = 0;
            pool.scaled_down_this_tick = 0;
        }
        for action in actions {
            match action {
                Action::CreatePods { pool, count } => self.create_pool_pods(&pool, count),
                Action::DeletePod { pod, reason } => {
                    deletions.insert(pod.name, reason);
                }
                Action::RemoveApplication { node, app_id, .. } => {
                    if self.remove_application(&node, &app_id) {
                        if let Some(&app) = self.app_index.get(&app_id) {
                            removed.insert((node, app));
                        }
                    }
                }
                Action::GuardNode { .. } if self.drop_guards => {}
                action @ (Action::GuardNode { .. } | Action::UnguardNode { .. }) => {
                    self.patch_node(&action);
                }
                Action::UpdatePoolStatus { pool, status } => self.record_status(&pool, &status),
            }
        }
        if !removed.is_empty() {
            // Registrations went with the data.
            for (pod, sim) in self.view.pods.iter().zip(&mut self.pod_sims) {
                if let Some(node) = &pod.node {
                    if removed.contains(&(node.clone(), sim.app)) {
                        sim.registered = false;
                    }
                }
            }
        }
        if !deletions.is_empty() {
            self.delete_pods(&deletions);
        }
        self.schedule_pending_pods();
    }

    fn pool_position(&self, pool: &ObjectRef) -> Option<usize> {
        self.view.pools.iter().position(|view| &view.pool == pool)
    }

    fn create_pool_pods(&mut self, pool_ref: &ObjectRef, count: u32) {
        let Some(pool) = self.pool_position(pool_ref) else {
            self.violation(format!("CreatePods for unknown pool {pool_ref}"));
            return;
        };
        let batch_size = self.view.pools[pool].spec.batch_size;
        let created = self.pools[pool].created_this_tick + count;
        self.pools[pool].created_this_tick = created;
        if created > batch_size {
            self.violation(format!(
                "{pool_ref} created {created} pods in one tick, batch size {batch_size}"
            ));
        }
        self.report.largest_create_batch = self.report.largest_create_batch.max(created);
        self.report.pods_created_by_controller += u64::from(count);
        let tick = self.tick;
        let ramp = &mut self.pools[pool].ramp;
        if ramp.tracked && ramp.reached.is_none() {
            ramp.first_create.get_or_insert(tick);
            ramp.creation_rounds += 1;
        }
        let app = self.pools[pool].app;
        let prompt = matches!(self.apps[app].kind, AppKind::Pool { prompt: true, .. });
        for _ in 0..count {
            let executor_id = self.apps[app].next_executor_id;
            self.apps[app].next_executor_id += 1;
            let name = format!("{}-exec-{executor_id}", pool_ref.name);
            let mut pod = new_pod(&name, &self.apps[app].id, ROLE_EXECUTOR, self.now());
            pod.owner_pool = Some(pool_ref.name.clone());
            pod.executor_id = Some(executor_id.to_string());
            // Prompt pools start every pod by the next round; the others start late, sometimes
            // never, and sometimes die.
            let (start_tick, dies_at) = if prompt {
                (Some(tick + 1), None)
            } else {
                let start = (!self.rng.chance(0.03)).then(|| tick + self.rng.between(1, 3));
                let dies = self
                    .rng
                    .chance(0.02)
                    .then(|| tick + self.rng.between(6, 60));
                (start, dies)
            };
            self.push_pod(
                pod,
                PodSim {
                    app,
                    start_tick,
                    dies_at,
                    writes_commit_at: 0,
                    registered: false,
                    spark_executor: false,
                },
            );
        }
    }

    fn delete_pods(&mut self, deletions: &HashMap<String, DeleteReason>) {
        let now = self.now();
        let mut violations = Vec::new();
        let mut safe_checks = Vec::new();
        let pool_positions: HashMap<&str, usize> = self
            .view
            .pools
            .iter()
            .enumerate()
            .map(|(position, pool)| (pool.pool.name.as_str(), position))
            .collect();
        for (pod, sim) in self.view.pods.iter_mut().zip(&self.pod_sims) {
            let Some(reason) = deletions.get(&pod.pod.name) else {
                continue;
            };
            let Some(&pool) = pod
                .owner_pool
                .as_deref()
                .and_then(|name| pool_positions.get(name))
            else {
                violations.push(format!("controller deleted {} which no pool owns", pod.pod));
                continue;
            };
            if matches!(
                reason,
                DeleteReason::ScaleDown | DeleteReason::ScaleDownNotRegistered
            ) && pod.deletion_timestamp.is_none()
            {
                let removed = &mut self.pools[pool].scaled_down_this_tick;
                *removed += 1;
                let batch_size = self.view.pools[pool].spec.batch_size;
                if *removed > batch_size {
                    violations.push(format!(
                        "{} scaled down {removed} pods in one tick, batch size {batch_size}",
                        self.view.pools[pool].pool
                    ));
                }
            }
            if *reason == DeleteReason::ScaleDown {
                if let (Some(node), Some(executor)) = (&pod.node, &pod.executor_id) {
                    let idle_timeout = self.view.pools[pool].spec.idle_timeout;
                    safe_checks.push((
                        node.clone(),
                        sim.app,
                        executor.clone(),
                        pod.pod.clone(),
                        idle_timeout,
                    ));
                }
            }
            if *reason == DeleteReason::PendingTimeout {
                self.report.pending_timeouts += 1;
            }
            if *reason == DeleteReason::ScaleDown {
                self.report.scale_down_deletions += 1;
            }
            if pod.deletion_timestamp.is_none() {
                self.report.pods_deleted_by_controller += 1;
            }
            pod.deletion_timestamp.get_or_insert(now);
        }
        // Scale-down took only registered, idle executors with every write committed.
        for (node, app, executor, pod, idle_timeout) in safe_checks {
            let app_id = self.apps[app].id.clone();
            let state = self
                .application_state(&node, &app_id, false)
                .and_then(|state| {
                    state
                        .executors
                        .iter()
                        .find(|state| state.executor_id == executor)
                        .cloned()
                });
            match state {
                None => violations.push(format!("scaled down {pod}, unknown to its daemon")),
                Some(state) if !state.registered => {
                    violations.push(format!("scaled down {pod}, not registered"));
                }
                Some(state) if state.writes_in_flight > 0 => violations.push(format!(
                    "scaled down {pod} with {} writes in flight",
                    state.writes_in_flight
                )),
                Some(state) if !state.last_activity.is_older_than(idle_timeout, now) => {
                    violations.push(format!("scaled down {pod}, active within idle timeout"));
                }
                Some(_) => {}
            }
        }
        for text in violations {
            self.violation(text);
        }
    }

    /// Removes the application's data and registrations from the daemon on `node`, returning
    /// whether it did. A daemon out of sight does not answer the removal either; the next tick
    /// retries.
    fn remove_application(&mut self, node: &str, app_id: &str) -> bool {
        let Some(&index) = self.node_index.get(node) else {
            return false;
        };
        if self.daemon_is_unknown(index) {
            return false;
        }
        if let Some(&app) = self.app_index.get(app_id) {
            if self.apps[app].is_running() {
                self.violation(format!("removed data of running {app_id} from {node}"));
            }
        }
        let Some(daemon) = self.view.nodes[index].daemon.as_mut() else {
            return false;
        };
        let mut freed = 0;
        daemon.applications.retain(|state| {
            if state.app_id == app_id {
                freed += state.bytes_stored;
                false
            } else {
                true
            }
        });
        self.report.bytes_freed += freed;
        true
    }

    fn patch_node(&mut self, action: &Action) {
        let Some((node, patch)) = action.node_annotation_patch() else {
            return;
        };
        let Some(&index) = self.node_index.get(node) else {
            return;
        };
        match action {
            Action::GuardNode { .. } => self.report.guards_applied += 1,
            _ => self.report.unguards_applied += 1,
        }
        let annotations = &mut self.view.nodes[index].annotations;
        for (key, value) in patch {
            match value {
                Some(value) => {
                    annotations.insert(key, value);
                }
                None => {
                    annotations.remove(&key);
                }
            }
        }
    }

    fn record_status(&mut self, pool_ref: &ObjectRef, status: &PoolStatus) {
        let Some(pool) = self.pool_position(pool_ref) else {
            return;
        };
        let view = &self.view.pools[pool];
        if let Some(last) = view.last_round {
            if status.last_round < last.saturating_add(view.spec.batch_delay) {
                self.violation(format!("{pool_ref} ran a round within its batch delay"));
            }
        }
        self.view.pools[pool].last_round = Some(status.last_round);
        let tick = self.tick;
        let target = self.pools[pool].target;
        let ramp = &mut self.pools[pool].ramp;
        if ramp.tracked
            && ramp.reached.is_none()
            && ramp.first_create.is_some()
            && status.expected == target
            && status.pending == 0
            && status.registered + status.registration_unknown >= target
        {
            ramp.reached = Some(tick);
        }
    }

    // ---- promises ----

    /// No pool ever has more live pods than its max.
    fn check_pool_sizes(&mut self) {
        let mut sizes: HashMap<&str, u32> = HashMap::new();
        for pod in &self.view.pods {
            if let Some(pool) = &pod.owner_pool {
                if pod.is_live() {
                    *sizes.entry(pool.as_str()).or_default() += 1;
                }
            }
        }
        let mut violations = Vec::new();
        for pool in &self.view.pools {
            let size = sizes.get(pool.pool.name.as_str()).copied().unwrap_or(0);
            if size > pool.spec.max_executors {
                violations.push(format!(
                    "{} has {size} pods, max {}",
                    pool.pool, pool.spec.max_executors
                ));
            }
        }
        for text in violations {
            self.violation(text);
        }
    }

    /// A finished application holds no data anywhere once its cleanup deadline passed: right
    /// after its driver ended (plus the longest a daemon stays out of sight), or, for an
    /// application whose driver pod was deleted or vanished, once the orphan grace after its last
    /// activity ran out.
    fn check_cleanup(&mut self) {
        let tick = self.tick;
        let tick_ms = self.config.tick.as_millis().max(1);
        let grace_ticks = u64::try_from(
            self.config
                .policy
                .orphan_grace
                .as_millis()
                .div_ceil(tick_ms),
        )
        .unwrap_or(u64::MAX);
        let due: Vec<usize> = (0..self.apps.len())
            .filter(|&app| {
                let sim = &self.apps[app];
                let Some((ended, how)) = sim.ended else {
                    return false;
                };
                // Once the driver pod is gone, only the orphan rule can find data that a daemon
                // out of sight still held.
                let deadline = match how {
                    AppEnd::DriverDeleted | AppEnd::DriverVanished => {
                        sim.last_activity_tick.max(ended) + grace_ticks + 1
                    }
                    AppEnd::Succeeded | AppEnd::Failed => ended,
                } + self.config.max_unknown_ticks;
                !sim.verified_clean && deadline <= tick
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let due_ids: HashSet<&str> = due.iter().map(|&app| self.apps[app].id.as_str()).collect();
        let mut left: BTreeMap<String, u64> = BTreeMap::new();
        for node in &self.view.nodes {
            for app in node.daemon.iter().flat_map(|daemon| &daemon.applications) {
                if due_ids.contains(app.app_id.as_str()) {
                    *left.entry(app.app_id.clone()).or_default() += app.bytes_stored;
                }
            }
        }
        for app in due {
            self.apps[app].verified_clean = true;
            match left.get(&self.apps[app].id) {
                None => self.report.applications_verified_clean += 1,
                Some(bytes) => {
                    let text = format!(
                        "finished {} still holds {bytes} bytes after its cleanup deadline",
                        self.apps[app].id
                    );
                    self.violation(text);
                }
            }
        }
    }
}

/// The state of `app_id` on the daemon of `node`, created empty if asked to and absent.
fn application_state<'a>(
    nodes: &'a mut [NodeView],
    node_index: &HashMap<String, usize>,
    node: &str,
    app_id: &str,
    create: bool,
) -> Option<&'a mut ApplicationState> {
    let &index = node_index.get(node)?;
    let daemon = nodes.get_mut(index)?.daemon.as_mut()?;
    let position = match daemon
        .applications
        .iter()
        .position(|app| app.app_id == app_id)
    {
        Some(position) => position,
        None if create => {
            daemon.applications.push(ApplicationState {
                app_id: app_id.to_owned(),
                bytes_stored: 0,
                committed_outputs: 0,
                last_activity: Timestamp::from_unix_ms(EPOCH_MS),
                executors: Vec::new(),
            });
            daemon.applications.len() - 1
        }
        None => return None,
    };
    daemon.applications.get_mut(position)
}

fn new_pod(name: &str, app_id: &str, role: &str, created: Timestamp) -> PodView {
    PodView {
        pod: ObjectRef::new(NAMESPACE, name),
        node: None,
        labels: BTreeMap::from([
            (LABEL_APP_ID.to_owned(), app_id.to_owned()),
            (LABEL_SPARK_ROLE.to_owned(), role.to_owned()),
        ]),
        phase: PodPhase::Pending,
        deletion_timestamp: None,
        creation_timestamp: created,
        owner_pool: None,
        executor_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_promises_kept(report: &SimReport) {
        assert_eq!(report.violation_count, 0, "{:#?}", report.violations);
        assert_eq!(report.live_bytes_lost, 0);
    }

    #[test]
    fn cluster_of_1000_nodes_and_10000_executors_keeps_every_promise() {
        let config = SimConfig::at_scale(7);
        let report = run(&config);
        assert_promises_kept(&report);

        // The scale really was reached.
        assert!(report.peak_nodes >= 1000, "{report:?}");
        assert!(report.peak_running_executors >= 10_000, "{report:?}");

        // The interesting things happened: guards kept scaled-down data, nodes came and went,
        // pods timed out, executors were scaled down, apps finished and were verified clean.
        assert!(report.guards_applied > 100, "{}", report.guards_applied);
        assert!(report.unguards_applied > 0);
        assert!(report.nodes_removed_by_autoscaler > 0);
        assert!(report.nodes_kept_by_guard > 10, "{report:?}");
        assert!(report.pending_timeouts > 0);
        assert!(
            report.scale_down_deletions > 1000,
            "{}",
            report.scale_down_deletions
        );
        assert!(
            report.applications_finished >= 40,
            "{}",
            report.applications_finished
        );
        assert_eq!(
            report.applications_verified_clean, report.applications_finished,
            "every finished application was checked clean"
        );
        assert!(report.bytes_freed > 0);

        // Batches: never more than the largest pool batch size (20).
        assert!(report.largest_create_batch <= 20);

        // Prompt pools scaled from 0 to expected in exactly ceil(expected / batch) rounds.
        assert_eq!(report.ramps.len(), config.pool_apps / 2);
        for ramp in &report.ramps {
            assert_eq!(ramp.creation_rounds, ramp.ideal_rounds(), "{ramp:?}");
            assert_eq!(ramp.rounds_to_reach, Some(ramp.ideal_rounds()), "{ramp:?}");
        }
    }

    #[test]
    fn small_clusters_keep_every_promise_across_seeds() {
        for seed in 0..20 {
            let report = run(&SimConfig::small(seed));
            assert_promises_kept(&report);
            assert_eq!(
                report.applications_verified_clean, report.applications_finished,
                "seed {seed}"
            );
            for ramp in &report.ramps {
                assert_eq!(
                    ramp.rounds_to_reach,
                    Some(ramp.ideal_rounds()),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn same_seed_gives_the_same_run() {
        let first = run(&SimConfig::small(42));
        assert_eq!(run(&SimConfig::small(42)), first);
        assert_ne!(run(&SimConfig::small(43)), first);
    }

    #[test]
    fn without_guards_the_autoscaler_would_lose_data() {
        // The same world with the controller's guard patches dropped: the model must be able to
        // see loss, or the zero-loss results above would mean nothing.
        let config = SimConfig::small(3);
        let mut simulation = Simulation::new(config.clone());
        simulation.drop_guards = true;
        for _ in 0..config.ticks {
            simulation.step();
        }
        let report = simulation.finish();
        assert!(report.live_bytes_lost > 0, "{report:?}");
    }
}
