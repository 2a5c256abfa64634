//! From Kubernetes objects and daemon answers to the policy's [`ObservedView`] types.
//!
//! Pure conversions only, so each rule (which pods are a pool's, where a node's daemon is, what a
//! daemon that did not answer means) is tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::crd::{ExecutorPool, LABEL_EXECUTOR_ID};
use super::policy::{
    ApplicationState, DaemonState, ExecutorState, ObjectRef, PodPhase, PodView, PoolView, Timestamp,
};
use crate::proto;

/// `apiVersion` of the pools that own executor pods.
pub const POOL_API_VERSION: &str = "kess.io/v1alpha1";

fn timestamp(time: &Time) -> Timestamp {
    Timestamp::from_unix_ms(time.0.as_millisecond())
}

/// The parts of a pod the policy decides on. A pod counts as a pool's only through a controller
/// owner reference to an `ExecutorPool`: a label can be copied, an owner reference is what
/// Kubernetes' garbage collector also goes by.
pub fn pod_view(pod: &Pod) -> PodView {
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    let owner_pool = pod
        .owner_references()
        .iter()
        .find(|owner| {
            owner.kind == "ExecutorPool"
                && owner.api_version == POOL_API_VERSION
                && owner.controller == Some(true)
        })
        .map(|owner| owner.name.clone());
    let labels = pod.labels().clone();
    PodView {
        pod: ObjectRef::new(pod.namespace().unwrap_or_default(), pod.name_any()),
        node: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        executor_id: labels.get(LABEL_EXECUTOR_ID).cloned(),
        labels,
        phase,
        deletion_timestamp: pod.metadata.deletion_timestamp.as_ref().map(timestamp),
        creation_timestamp: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Timestamp::from_unix_ms(0), timestamp),
        owner_pool,
    }
}

/// A pool as the policy sees it, or the reason its spec cannot be used. `last_round` comes from
/// the controller's memory: a restarted controller simply runs a round at once.
pub fn pool_view(pool: &ExecutorPool, last_round: Option<Timestamp>) -> Result<PoolView, String> {
    Ok(PoolView {
        pool: ObjectRef::new(pool.namespace().unwrap_or_default(), pool.name_any()),
        spec: pool.spec.policy_spec()?,
        expected: pool.spec.replicas,
        last_round,
    })
}

/// What a daemon's `GetShuffleState` answer says, in the policy's terms.
pub fn daemon_state(state: proto::ShuffleState) -> DaemonState {
    DaemonState {
        disk_free_bytes: state.disk_free_bytes,
        applications: state
            .applications
            .into_iter()
            .map(|app| ApplicationState {
                app_id: app.app_id,
                bytes_stored: app.bytes_stored,
                committed_outputs: app.committed_outputs,
                last_activity: Timestamp::from_unix_ms(app.last_activity_unix_ms),
                executors: app
                    .executors
                    .into_iter()
                    .map(|executor| ExecutorState {
                        executor_id: executor.executor_id,
                        registered: executor.registered,
                        committed_outputs: executor.committed_outputs,
                        bytes_stored: executor.bytes_stored,
                        writes_in_flight: executor.writes_in_flight,
                        fetches_in_flight: executor.fetches_in_flight,
                        last_activity: Timestamp::from_unix_ms(executor.last_activity_unix_ms),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Where each node's daemon answers gRPC: from the kess DaemonSet's pods (running, not being
/// deleted, with an IP; a ready pod wins over one that is not during a rollout), then the static
/// `--daemon NODE=URL` entries, which replace whatever discovery found for their node.
pub fn daemon_addresses(
    daemon_pods: &[impl std::ops::Deref<Target = Pod>],
    grpc_port: u16,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut found: BTreeMap<String, (bool, String)> = BTreeMap::new();
    for pod in daemon_pods {
        let pod: &Pod = pod;
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(|spec| spec.node_name.clone()) else {
            continue;
        };
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if status.phase.as_deref() != Some("Running") {
            continue;
        }
        let Some(ip) = status.pod_ip.as_deref().or(status.host_ip.as_deref()) else {
            continue;
        };
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|condition| condition.type_ == "Ready" && condition.status == "True");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_owned()
        };
        let url = format!("http://{host}:{grpc_port}");
        match found.get(&node) {
            Some((true, _)) => {}
            Some((false, _)) if !ready => {}
            _ => {
                found.insert(node, (ready, url));
            }
        }
    }
    let mut addresses: BTreeMap<String, String> = found
        .into_iter()
        .map(|(node, (_, url))| (node, url))
        .collect();
    for (node, url) in overrides {
        addresses.insert(node.clone(), url.clone());
    }
    addresses
}

/// Parses one `--daemon NODE=URL` value.
pub fn parse_daemon_override(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((node, url)) if !node.is_empty() && !url.is_empty() => {
            Ok((node.to_owned(), url.to_owned()))
        }
        _ => Err(format!("expected NODE=URL, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(name: &str, node: Option<&str>, phase: &str, ip: Option<&str>, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("kess-system".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.to_owned()),
                pod_ip: ip.map(str::to_owned),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".to_owned(),
                    status: if ready { "True" } else { "False" }.to_owned(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn daemon_pods_give_each_node_its_grpc_url_and_overrides_win() {
        let pods = vec![
            Box::new(pod(
                "kess-a",
                Some("node-a"),
                "Running",
                Some("10.0.0.1"),
                true,
            )),
            Box::new(pod(
                "kess-b",
                Some("node-b"),
                "Running",
                Some("10.0.0.2"),
                true,
            )),
            Box::new(pod(
                "kess-c",
                Some("node-c"),
                "Pending",
                Some("10.0.0.3"),
                false,
            )),
            Box::new(pod("kess-d", None, "Running", Some("10.0.0.4"), true)),
            Box::new(pod(
                "kess-e",
                Some("node-e"),
                "Running",
                Some("fd00::5"),
                true,
            )),
        ];
        let overrides = BTreeMap::from([("node-b".to_owned(), "http://127.0.0.1:7447".to_owned())]);
        let addresses = daemon_addresses(&pods, 7447, &overrides);
        assert_eq!(
            addresses,
            BTreeMap::from([
                ("node-a".to_owned(), "http://10.0.0.1:7447".to_owned()),
                ("node-b".to_owned(), "http://127.0.0.1:7447".to_owned()),
                ("node-e".to_owned(), "http://[fd00::5]:7447".to_owned()),
            ])
        );
    }

    #[test]
    fn a_ready_daemon_pod_wins_over_one_that_is_not_during_a_rollout() {
        let pods = vec![
            Box::new(pod("new", Some("n"), "Running", Some("10.0.0.9"), false)),
            Box::new(pod("old", Some("n"), "Running", Some("10.0.0.8"), true)),
            Box::new(pod("other", Some("n"), "Running", Some("10.0.0.7"), false)),
        ];
        let addresses = daemon_addresses(&pods, 1, &BTreeMap::new());
        assert_eq!(addresses["n"], "http://10.0.0.8:1");
    }

    #[test]
    fn daemon_override_must_name_node_and_url() {
        assert_eq!(
            parse_daemon_override("node-1=http://127.0.0.1:7447"),
            Ok(("node-1".to_owned(), "http://127.0.0.1:7447".to_owned()))
        );
        assert!(parse_daemon_override("node-1").is_err());
        assert!(parse_daemon_override("=http://x").is_err());
        assert!(parse_daemon_override("n=").is_err());
    }

    #[test]
    fn only_a_controller_reference_to_an_executor_pool_makes_a_pool_pod() {
        let mut executor = pod("p-exec-3", Some("node-a"), "Running", None, true);
        executor.metadata.labels = Some(BTreeMap::from([
            ("spark-app-selector".to_owned(), "app-1".to_owned()),
            ("spark-exec-id".to_owned(), "3".to_owned()),
        ]));
        let owner = |kind: &str, controller| OwnerReference {
            api_version: POOL_API_VERSION.to_owned(),
            kind: kind.to_owned(),
            name: "p".to_owned(),
            uid: "u".to_owned(),
            controller: Some(controller),
            block_owner_deletion: None,
        };
        executor.metadata.owner_references = Some(vec![owner("ExecutorPool", true)]);
        let view = pod_view(&executor);
        assert_eq!(view.owner_pool.as_deref(), Some("p"));
        assert_eq!(view.executor_id.as_deref(), Some("3"));
        assert_eq!(view.app_id(), Some("app-1"));
        assert_eq!(view.phase, PodPhase::Running);
        assert_eq!(view.node.as_deref(), Some("node-a"));

        executor.metadata.owner_references = Some(vec![owner("ExecutorPool", false)]);
        assert_eq!(pod_view(&executor).owner_pool, None);
        executor.metadata.owner_references = Some(vec![owner("ReplicaSet", true)]);
        assert_eq!(pod_view(&executor).owner_pool, None);
    }

    #[test]
    fn daemon_answer_keeps_registration_and_writes_in_flight() {
        let state = daemon_state(proto::ShuffleState {
            applications: vec![proto::ApplicationState {
                app_id: "app-1".to_owned(),
                executors: vec![proto::ExecutorState {
                    executor_id: "7".to_owned(),
                    registered: true,
                    committed_outputs: 2,
                    bytes_stored: 100,
                    writes_in_flight: 1,
                    fetches_in_flight: 0,
                    last_activity_unix_ms: 42,
                }],
                committed_outputs: 2,
                bytes_stored: 100,
                last_activity_unix_ms: 42,
            }],
            bytes_stored: 100,
            disk_free_bytes: 5,
            node_name: "node-a".to_owned(),
        });
        assert_eq!(state.disk_free_bytes, 5);
        let app = &state.applications[0];
        assert_eq!(app.bytes_stored, 100);
        assert_eq!(app.last_activity, Timestamp::from_unix_ms(42));
        assert!(app.executors[0].registered);
        assert_eq!(app.executors[0].writes_in_flight, 1);
    }
}
