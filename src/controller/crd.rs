//! The `ExecutorPool` custom resource (`kess.io/v1alpha1`): a Spark application's executors as a
//! scalable set, allocated in paced batches by the controller.
//!
//! The CRD is generated from these types (`kess crd`), so the Rust types are the API. The `scale`
//! subresource maps `spec.replicas` (the expected executor count), `status.replicas` and
//! `status.selector`, so `kubectl scale`, an HPA or KEDA can drive a pool like a Deployment.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy::{
    PoolSpec, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_SIZE, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_PENDING_TIMEOUT,
};

/// Label every pod of a pool carries, with the pool's name as value; also the pool's
/// `status.selector`, which is how HPA and KEDA find the pool's pods.
pub const LABEL_POOL: &str = "kess.io/pool";
/// Label Spark puts on executor pods with the executor id; kess sets it on the pods it creates and
/// reads it to match a pod to its registration at the daemon.
pub const LABEL_EXECUTOR_ID: &str = "spark-exec-id";
/// Environment variable Spark's executor entrypoint reads its executor id from.
pub const ENV_EXECUTOR_ID: &str = "SPARK_EXECUTOR_ID";
/// Environment variable Spark's executor entrypoint reads its application id from.
pub const ENV_APPLICATION_ID: &str = "SPARK_APPLICATION_ID";

/// A Spark application's executors, created from a pod template in paced batches.
// The derive takes one `printcolumn(...)` per column; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kess.io",
    version = "v1alpha1",
    kind = "ExecutorPool",
    namespaced,
    status = "ExecutorPoolStatus",
    shortname = "xp",
    doc = "An ExecutorPool: a Spark application's executors, allocated by the kess controller.",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "App", type_ = "string", json_path = ".spec.appId"),
    printcolumn(name = "Expected", type_ = "integer", json_path = ".status.expected"),
    printcolumn(name = "Requested", type_ = "integer", json_path = ".status.requested"),
    printcolumn(
        name = "Registered",
        type_ = "integer",
        json_path = ".status.registered"
    ),
    printcolumn(name = "Pending", type_ = "integer", json_path = ".status.pending"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorPoolSpec {
    /// The Spark application the executors belong to: the `spark-app-selector` label of its
    /// driver pod, and the application id its executors register with at the kess daemon.
    pub app_id: String,
    /// Executors wanted (the scale subresource's replicas), clamped to [minExecutors,
    /// maxExecutors].
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub min_executors: u32,
    pub max_executors: u32,
    /// Most pods created (or scaled down) per allocation round.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1))]
    pub batch_size: u32,
    /// Least time between two allocation rounds, e.g. "1s" or "500ms".
    #[serde(default = "default_batch_delay")]
    pub batch_delay: String,
    /// How long an executor must be without shuffle activity before scale-down may remove it.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// How long a pod may exist without registering with its node's kess daemon before it is
    /// deleted and requested anew.
    #[serde(default = "default_pending_timeout")]
    pub pending_timeout: String,
    /// The executor pod template. kess adds the labels `spark-app-selector`, `spark-role`,
    /// `spark-exec-id` and `kess.io/pool`, an owner reference to the pool, and the
    /// `SPARK_EXECUTOR_ID` / `SPARK_APPLICATION_ID` environment of every container.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: PodTemplateSpec,
}

/// What the controller last saw of a pool; written only when it changes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorPoolStatus {
    /// Pods of the pool that exist and have not ended (the scale subresource's status replicas).
    #[serde(default)]
    pub replicas: u32,
    /// Label selector of the pool's pods, as a string (for the scale subresource).
    #[serde(default)]
    pub selector: String,
    /// `spec.replicas` clamped to [min, max]; 0 once the application finished.
    #[serde(default)]
    pub expected: u32,
    #[serde(default)]
    pub requested: u32,
    /// Pods whose executor is registered with the kess daemon on their node.
    #[serde(default)]
    pub registered: u32,
    /// Pods known not to be registered yet.
    #[serde(default)]
    pub pending: u32,
    /// Pods on nodes whose daemon did not answer.
    #[serde(default)]
    pub registration_unknown: u32,
    /// Registered executors that scale-down could remove now (idle, all writes committed).
    #[serde(default)]
    pub safe_to_remove: u32,
    /// Bytes of the application's shuffle data per node.
    #[serde(default)]
    pub shuffle_bytes_per_node: BTreeMap<String, u64>,
    /// Why the pool is not (yet) where `expected` says.
    #[serde(default)]
    pub conditions: Vec<PoolConditionStatus>,
}

/// One condition in the Kubernetes style; present means true.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolConditionStatus {
    /// For example `WaitingForRegistration`, `AtMaximum`, `ScaleDownBlocked`, `InvalidSpec`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Always "True": conditions that no longer hold are removed.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// When the condition started to hold (RFC 3339).
    pub last_transition_time: String,
}

fn default_batch_size() -> u32 {
    DEFAULT_BATCH_SIZE
}
fn default_batch_delay() -> String {
    humantime::format_duration(DEFAULT_BATCH_DELAY).to_string()
}
fn default_idle_timeout() -> String {
    humantime::format_duration(DEFAULT_IDLE_TIMEOUT).to_string()
}
fn default_pending_timeout() -> String {
    humantime::format_duration(DEFAULT_PENDING_TIMEOUT).to_string()
}

/// The pod template is validated by the API server when pods are created from it, so the CRD
/// keeps it as an open object instead of embedding the (very large) Pod schema.
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

impl ExecutorPoolSpec {
    /// The scaling part of the spec as the policy reads it; an error names the bad field.
    pub fn policy_spec(&self) -> Result<PoolSpec, String> {
        let parse = |field: &str, text: &str| -> Result<Duration, String> {
            humantime::parse_duration(text).map_err(|e| format!("{field} {text:?}: {e}"))
        };
        Ok(PoolSpec {
            app_id: self.app_id.clone(),
            min_executors: self.min_executors,
            max_executors: self.max_executors,
            batch_size: self.batch_size,
            batch_delay: parse("batchDelay", &self.batch_delay)?,
            idle_timeout: parse("idleTimeout", &self.idle_timeout)?,
            pending_timeout: parse("pendingTimeout", &self.pending_timeout)?,
        })
    }
}

/// The `CustomResourceDefinition` as YAML, as `kess crd` prints it and `daemonset/` ships it.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let yaml = serde_saphyr::to_string(&ExecutorPool::crd())?;
    Ok(format!(
        "# Generated by `kess crd` from src/controller/crd.rs; do not edit by hand.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED_CRD: &str = include_str!("../../daemonset/executorpool-crd.yaml");
    const EXAMPLE_POOL: &str = include_str!("../../daemonset/example-executorpool.yaml");

    #[test]
    fn committed_crd_is_the_generated_one() {
        let generated = crd_yaml().expect("CRD serializes");
        assert!(
            COMMITTED_CRD == generated,
            "daemonset/executorpool-crd.yaml is stale: run `kess crd > daemonset/executorpool-crd.yaml`"
        );
    }

    #[test]
    fn crd_has_the_scale_subresource_on_replicas_and_selector() {
        use kube::CustomResourceExt;
        let crd = ExecutorPool::crd();
        assert_eq!(crd.spec.group, "kess.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some());
        let scale = subresources.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
    }

    #[test]
    fn omitted_fields_take_the_documented_defaults() {
        let pool: ExecutorPool = serde_json::from_value(serde_json::json!({
            "apiVersion": "kess.io/v1alpha1",
            "kind": "ExecutorPool",
            "metadata": {"name": "p", "namespace": "spark"},
            "spec": {"appId": "app-1", "maxExecutors": 10, "template": {}},
        }))
        .expect("minimal pool parses");
        assert_eq!(pool.spec.replicas, 0);
        let spec = pool.spec.policy_spec().expect("defaults are valid");
        assert_eq!(spec.batch_size, 5);
        assert_eq!(spec.batch_delay, Duration::from_secs(1));
        assert_eq!(spec.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(spec.pending_timeout, DEFAULT_PENDING_TIMEOUT);
        assert_eq!(spec.min_executors, 0);
        assert_eq!(spec.max_executors, 10);
    }

    #[test]
    fn bad_duration_is_reported_with_its_field() {
        let mut pool: ExecutorPool = serde_saphyr::from_str(EXAMPLE_POOL).expect("example parses");
        pool.spec.batch_delay = "soon".to_owned();
        let error = pool.spec.policy_spec().expect_err("not a duration");
        assert!(error.starts_with("batchDelay \"soon\""), "{error}");
    }

    #[test]
    fn example_pool_parses_and_is_valid() {
        let pool: ExecutorPool = serde_saphyr::from_str(EXAMPLE_POOL).expect("example parses");
        let spec = pool.spec.policy_spec().expect("example is valid");
        assert!(spec.min_executors <= spec.max_executors);
        let containers = pool
            .spec
            .template
            .spec
            .as_ref()
            .map(|pod| pod.containers.len())
            .unwrap_or(0);
        assert!(containers > 0, "the example template has a container");
    }
}
