//! The Kubernetes side of the policy's actions: what each action writes, and the writes.
//!
//! The builders (`executor_pod`, `node_annotation_patch`, `pool_status`, `pool_status_patch`)
//! are pure so they are tested directly; [`KubeWriter`] sends them, one method per API call, and
//! is tested against a mocked API server that checks every request's method, path and body.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{json, Value};

use super::crd::{
    ExecutorPool, ExecutorPoolStatus, PoolConditionStatus, ENV_APPLICATION_ID, ENV_EXECUTOR_ID,
    LABEL_EXECUTOR_ID, LABEL_POOL,
};
use super::observe::POOL_API_VERSION;
use super::policy::{
    Action, ObjectRef, PoolCondition, PoolStatus, LABEL_APP_ID, LABEL_SPARK_ROLE, ROLE_EXECUTOR,
};

/// Field manager name on every write, so `kubectl get --show-managed-fields` names kess.
pub const FIELD_MANAGER: &str = "kess-controller";

/// The pod kess creates for executor `executor_id` of a pool: the pool's template, plus the
/// labels that make it a Spark executor of the pool's application and a member of the pool, the
/// executor id in every container's environment, and a controlling owner reference to the pool
/// (so deleting the pool deletes its pods). The name is derived from the id, so creating the same
/// executor twice fails with a conflict instead of making a second pod.
pub fn executor_pod(pool: &ExecutorPool, executor_id: u64) -> Result<Pod, String> {
    let pool_name = pool.name_any();
    let uid = pool
        .metadata
        .uid
        .clone()
        .ok_or_else(|| format!("pool {pool_name} has no uid yet"))?;
    let template = &pool.spec.template;
    let mut spec = template
        .spec
        .clone()
        .ok_or_else(|| format!("pool {pool_name} has a template without a pod spec"))?;
    if spec.containers.is_empty() {
        return Err(format!(
            "pool {pool_name} has a template without containers"
        ));
    }
    let app_id = pool.spec.app_id.clone();
    let executor = executor_id.to_string();
    for container in &mut spec.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|var| var.name != ENV_EXECUTOR_ID && var.name != ENV_APPLICATION_ID);
        for (name, value) in [(ENV_EXECUTOR_ID, &executor), (ENV_APPLICATION_ID, &app_id)] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.clone()),
                value_from: None,
            });
        }
    }
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(format!("{pool_name}-exec-{executor_id}"));
    metadata.generate_name = None;
    metadata.namespace = pool.namespace();
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(LABEL_APP_ID.to_owned(), app_id);
    labels.insert(LABEL_SPARK_ROLE.to_owned(), ROLE_EXECUTOR.to_owned());
    labels.insert(LABEL_EXECUTOR_ID.to_owned(), executor);
    labels.insert(LABEL_POOL.to_owned(), pool_name.clone());
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: POOL_API_VERSION.to_owned(),
        kind: "ExecutorPool".to_owned(),
        name: pool_name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    Ok(Pod {
        metadata,
        spec: Some(spec),
        status: None,
    })
}

/// The next `count` executor ids of an application: above every numeric id already in use by a
/// pod or known to a daemon (data of deleted executors stays on the daemons under their ids, so
/// reusing one would make a new pod look registered).
pub fn next_executor_ids<'a>(used: impl IntoIterator<Item = &'a str>, count: u32) -> Vec<u64> {
    let highest = used
        .into_iter()
        .filter_map(|id| id.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    (1..=u64::from(count)).map(|n| highest + n).collect()
}

/// The merge patch of a guard or unguard action: exactly the keys the action names, set to
/// their value or to `null` (deleted). Keys kess did not set never appear.
pub fn node_annotation_patch(action: &Action) -> Option<(&str, Value)> {
    let (node, changes) = action.node_annotation_patch()?;
    let annotations: serde_json::Map<String, Value> = changes
        .into_iter()
        .map(|(key, value)| (key, value.map_or(Value::Null, Value::String)))
        .collect();
    Some((node, json!({ "metadata": { "annotations": annotations } })))
}

/// The status kess writes for a round's [`PoolStatus`]. A condition that held before keeps its
/// transition time, so an unchanged round gives an identical status (and no write).
pub fn pool_status(
    pool_name: &str,
    status: &PoolStatus,
    previous: Option<&ExecutorPoolStatus>,
    now_rfc3339: &str,
) -> ExecutorPoolStatus {
    let conditions = status
        .conditions
        .iter()
        .map(|condition| {
            let (type_, message) = describe_condition(condition);
            let last_transition_time = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .map_or_else(
                    || now_rfc3339.to_owned(),
                    |c| c.last_transition_time.clone(),
                );
            PoolConditionStatus {
                type_: type_.to_owned(),
                status: "True".to_owned(),
                reason: type_.to_owned(),
                message,
                last_transition_time,
            }
        })
        .collect();
    ExecutorPoolStatus {
        replicas: status.requested,
        selector: format!("{LABEL_POOL}={pool_name}"),
        expected: status.expected,
        requested: status.requested,
        registered: status.registered,
        pending: status.pending,
        registration_unknown: status.registration_unknown,
        safe_to_remove: status.safe_to_remove,
        shuffle_bytes_per_node: status.shuffle_bytes_per_node.clone(),
        conditions,
    }
}

fn describe_condition(condition: &PoolCondition) -> (&'static str, String) {
    match condition {
        PoolCondition::WaitingForRegistration { pending } => (
            "WaitingForRegistration",
            format!("{pending} pods have not registered with their node's kess daemon yet"),
        ),
        PoolCondition::PendingTimedOut { deleted } => (
            "PendingTimedOut",
            format!("{deleted} pods did not register within pendingTimeout and were deleted"),
        ),
        PoolCondition::AtMaximum { replicas, max } => (
            "AtMaximum",
            format!("replicas {replicas} lowered to maxExecutors {max}"),
        ),
        PoolCondition::RaisedToMinimum { replicas, min } => (
            "RaisedToMinimum",
            format!("replicas {replicas} raised to minExecutors {min}"),
        ),
        PoolCondition::ScaleDownBlocked { reason, executors } => (
            "ScaleDownBlocked",
            format!("{executors} executors cannot be removed yet: {reason:?}"),
        ),
        PoolCondition::RegistrationUnknown { executors } => (
            "RegistrationUnknown",
            format!("{executors} pods are on nodes whose kess daemon did not answer"),
        ),
        PoolCondition::ApplicationFinished => (
            "ApplicationFinished",
            "the application finished; its executors are released".to_owned(),
        ),
        PoolCondition::InvalidSpec { message } => ("InvalidSpec", message.clone()),
    }
}

/// The merge patch that turns `previous` into `next`: the whole status, plus `null` for every
/// node that no longer holds bytes (a merge patch would otherwise keep the old map keys).
pub fn pool_status_patch(
    previous: Option<&ExecutorPoolStatus>,
    next: &ExecutorPoolStatus,
) -> Value {
    let mut status = serde_json::to_value(next).unwrap_or_else(|_| json!({}));
    if let (Some(previous), Some(bytes)) = (
        previous,
        status
            .get_mut("shuffleBytesPerNode")
            .and_then(Value::as_object_mut),
    ) {
        for node in previous.shuffle_bytes_per_node.keys() {
            if !next.shuffle_bytes_per_node.contains_key(node) {
                bytes.insert(node.clone(), Value::Null);
            }
        }
    }
    json!({ "status": status })
}

/// The API calls the controller makes to act, one method each.
#[derive(Clone)]
pub struct KubeWriter {
    client: Client,
}

impl KubeWriter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn create_pod(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .create(&params, pod)
            .await
    }

    /// Deletes a pod; a pod already gone counts as deleted.
    pub async fn delete_pod(&self, pod: &ObjectRef) -> Result<(), kube::Error> {
        let api = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace);
        match api.delete(&pod.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error),
        }
    }

    pub async fn patch_node_annotations(
        &self,
        node: &str,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        Api::<Node>::all(self.client.clone())
            .patch(node, &patch_params(), &Patch::Merge(patch))
            .await
            .map(drop)
    }

    pub async fn patch_pool_status(
        &self,
        pool: &ObjectRef,
        patch: &Value,
    ) -> Result<(), kube::Error> {
        Api::<ExecutorPool>::namespaced(self.client.clone(), &pool.namespace)
            .patch_status(&pool.name, &patch_params(), &Patch::Merge(patch))
            .await
            .map(drop)
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// Object reference of a pool, for events.
pub fn pool_reference(pool: &ExecutorPool) -> k8s_openapi::api::core::v1::ObjectReference {
    pool.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::crd::ExecutorPoolSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pool() -> ExecutorPool {
        let mut pool = ExecutorPool::new(
            "etl",
            ExecutorPoolSpec {
                app_id: "app-1".to_owned(),
                replicas: 3,
                min_executors: 0,
                max_executors: 10,
                batch_size: 5,
                batch_delay: "1s".to_owned(),
                idle_timeout: "60s".to_owned(),
                pending_timeout: "5m".to_owned(),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(BTreeMap::from([
                            ("team".to_owned(), "data".to_owned()),
                            (LABEL_SPARK_ROLE.to_owned(), "driver".to_owned()),
                        ])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "executor".to_owned(),
                            image: Some("apache/spark:3.5.7".to_owned()),
                            env: Some(vec![EnvVar {
                                name: ENV_EXECUTOR_ID.to_owned(),
                                value: Some("stale".to_owned()),
                                value_from: None,
                            }]),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
            },
        );
        pool.metadata.namespace = Some("spark".to_owned());
        pool.metadata.uid = Some("uid-1".to_owned());
        pool
    }

    #[test]
    fn executor_pod_is_the_template_labelled_owned_and_numbered() {
        let pod = executor_pod(&pool(), 7).expect("valid template");
        assert_eq!(pod.metadata.name.as_deref(), Some("etl-exec-7"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("spark"));
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["team"], "data");
        assert_eq!(labels[LABEL_APP_ID], "app-1");
        // The template cannot make a pool pod look like a driver.
        assert_eq!(labels[LABEL_SPARK_ROLE], ROLE_EXECUTOR);
        assert_eq!(labels[LABEL_EXECUTOR_ID], "7");
        assert_eq!(labels[LABEL_POOL], "etl");
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("ExecutorPool", "etl", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .expect("env");
        let value = |name: &str| {
            let values: Vec<_> = env.iter().filter(|v| v.name == name).collect();
            assert_eq!(values.len(), 1, "{name} set once");
            values[0].value.clone()
        };
        assert_eq!(value(ENV_EXECUTOR_ID).as_deref(), Some("7"));
        assert_eq!(value(ENV_APPLICATION_ID).as_deref(), Some("app-1"));
        // And the view built from the pod sees it as the pool's executor 7.
        let view = crate::controller::observe::pod_view(&pod);
        assert_eq!(view.owner_pool.as_deref(), Some("etl"));
        assert_eq!(view.executor_id.as_deref(), Some("7"));
    }

    #[test]
    fn executor_pod_needs_a_pool_uid_and_a_container() {
        let mut no_uid = pool();
        no_uid.metadata.uid = None;
        assert!(executor_pod(&no_uid, 1).is_err());
        let mut no_containers = pool();
        if let Some(spec) = no_containers.spec.template.spec.as_mut() {
            spec.containers.clear();
        }
        assert!(executor_pod(&no_containers, 1).is_err());
    }

    #[test]
    fn executor_ids_continue_above_every_id_in_use() {
        assert_eq!(
            next_executor_ids(["1", "9", "driver", "3"], 3),
            vec![10, 11, 12]
        );
        assert_eq!(next_executor_ids([], 2), vec![1, 2]);
        assert!(next_executor_ids(["4"], 0).is_empty());
    }

    #[test]
    fn guard_patch_sets_only_the_added_keys_and_the_ownership_record() {
        let action = Action::GuardNode {
            node: "node-a".to_owned(),
            keys_to_add: vec!["karpenter.sh/do-not-disrupt".to_owned()],
            owned_keys: vec!["karpenter.sh/do-not-disrupt".to_owned()],
        };
        let (node, patch) = node_annotation_patch(&action).expect("a node action");
        assert_eq!(node, "node-a");
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {
                "karpenter.sh/do-not-disrupt": "true",
                "kess.io/guard-owned-keys": "karpenter.sh/do-not-disrupt",
            }}})
        );
        let unguard = Action::UnguardNode {
            node: "node-a".to_owned(),
            keys_to_remove: vec!["karpenter.sh/do-not-disrupt".to_owned()],
        };
        let (_, patch) = node_annotation_patch(&unguard).expect("a node action");
        assert_eq!(
            patch,
            json!({"metadata": {"annotations": {
                "karpenter.sh/do-not-disrupt": null,
                "kess.io/guard-owned-keys": null,
            }}})
        );
    }

    fn round_status(conditions: Vec<PoolCondition>, bytes: &[(&str, u64)]) -> PoolStatus {
        PoolStatus {
            expected: 3,
            requested: 2,
            registered: 1,
            pending: 1,
            registration_unknown: 0,
            safe_to_remove: 0,
            shuffle_bytes_per_node: bytes.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect(),
            conditions,
            last_round: crate::controller::policy::Timestamp::from_unix_ms(0),
        }
    }

    #[test]
    fn an_unchanged_round_gives_an_identical_status() {
        let round = round_status(
            vec![PoolCondition::WaitingForRegistration { pending: 1 }],
            &[("node-a", 10)],
        );
        let first = pool_status("etl", &round, None, "2026-01-01T00:00:00Z");
        assert_eq!(first.selector, "kess.io/pool=etl");
        assert_eq!(first.replicas, 2);
        assert_eq!(first.conditions[0].type_, "WaitingForRegistration");
        let later = pool_status("etl", &round, Some(&first), "2026-01-01T00:05:00Z");
        assert_eq!(later, first, "transition time kept, nothing else moved");
        let changed = round_status(vec![], &[("node-a", 10)]);
        assert_ne!(pool_status("etl", &changed, Some(&first), "t"), first);
    }

    #[test]
    fn status_patch_deletes_nodes_that_no_longer_hold_bytes() {
        let before = pool_status(
            "etl",
            &round_status(vec![], &[("a", 1), ("b", 2)]),
            None,
            "t",
        );
        let after = pool_status(
            "etl",
            &round_status(vec![], &[("b", 3)]),
            Some(&before),
            "t",
        );
        let patch = pool_status_patch(Some(&before), &after);
        assert_eq!(
            patch["status"]["shuffleBytesPerNode"],
            json!({"a": null, "b": 3})
        );
        assert_eq!(patch["status"]["registered"], json!(1));
    }
}
