//! The controller's Kubernetes calls against a mocked API server: each test drives one call and
//! checks the request it makes (method, path, content type, body), then answers it.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kess::controller::apply::{
    executor_pod, node_annotation_patch, pool_status, pool_status_patch, KubeWriter,
};
use kess::controller::crd::{ExecutorPool, ExecutorPoolSpec};
use kess::controller::lease::LeaderElector;
use kess::controller::policy::{Action, ObjectRef, PoolCondition, PoolStatus, Timestamp};
use kube::api::Api;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn mocked() -> (Client, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// One request as the mock saw it.
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// Takes the next request, answers it with `status` and `reply`, and returns what was asked.
async fn answer(handle: &mut ApiHandle, status: u16, reply: Value) -> Seen {
    let (request, respond) = handle.next_request().await.expect("a request");
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    respond.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&reply).expect("reply")))
            .expect("response"),
    );
    Seen {
        method,
        path,
        query,
        content_type,
        body,
    }
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"})
}

fn pool() -> ExecutorPool {
    let mut pool = ExecutorPool::new(
        "etl",
        ExecutorPoolSpec {
            app_id: "app-1".to_owned(),
            replicas: 4,
            min_executors: 0,
            max_executors: 10,
            batch_size: 5,
            batch_delay: "1s".to_owned(),
            idle_timeout: "60s".to_owned(),
            pending_timeout: "5m".to_owned(),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "executor".to_owned(),
                        image: Some("apache/spark:3.5.7".to_owned()),
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

#[tokio::test]
async fn creating_a_pool_pod_posts_it_to_the_pools_namespace() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    let pod = executor_pod(&pool(), 3).expect("pod");
    let reply = serde_json::to_value(&pod).expect("pod json");
    let (created, seen) = tokio::join!(writer.create_pod(&pod), answer(&mut handle, 201, reply));
    created.expect("created");
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/api/v1/namespaces/spark/pods");
    assert!(
        seen.query.contains("fieldManager=kess-controller"),
        "{}",
        seen.query
    );
    assert_eq!(seen.body["metadata"]["name"], "etl-exec-3");
    assert_eq!(
        seen.body["metadata"]["labels"]["spark-app-selector"],
        "app-1"
    );
    assert_eq!(seen.body["metadata"]["labels"]["spark-role"], "executor");
    assert_eq!(seen.body["metadata"]["labels"]["kess.io/pool"], "etl");
    assert_eq!(
        seen.body["metadata"]["ownerReferences"][0]["kind"],
        "ExecutorPool"
    );
    assert_eq!(seen.body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        seen.body["spec"]["containers"][0]["env"],
        json!([
            {"name": "SPARK_EXECUTOR_ID", "value": "3"},
            {"name": "SPARK_APPLICATION_ID", "value": "app-1"},
        ])
    );
}

#[tokio::test]
async fn creating_an_executor_that_exists_is_an_error_not_a_second_pod() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    let pod = executor_pod(&pool(), 3).expect("pod");
    let (created, _) = tokio::join!(
        writer.create_pod(&pod),
        answer(&mut handle, 409, conflict())
    );
    assert!(created.is_err());
}

#[tokio::test]
async fn deleting_a_pod_deletes_exactly_it_and_a_missing_pod_is_fine() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    let pod = ObjectRef::new("spark", "etl-exec-3");
    let reply = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    let (deleted, seen) = tokio::join!(writer.delete_pod(&pod), answer(&mut handle, 200, reply));
    deleted.expect("deleted");
    assert_eq!(seen.method, Method::DELETE);
    assert_eq!(seen.path, "/api/v1/namespaces/spark/pods/etl-exec-3");

    let (deleted, _) = tokio::join!(
        writer.delete_pod(&pod),
        answer(&mut handle, 404, not_found())
    );
    deleted.expect("already gone counts as deleted");
}

fn node_reply() -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}})
}

#[tokio::test]
async fn guarding_a_node_merge_patches_only_kess_keys() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    let action = Action::GuardNode {
        node: "node-a".to_owned(),
        keys_to_add: vec![
            "cluster-autoscaler.kubernetes.io/scale-down-disabled".to_owned(),
            "karpenter.sh/do-not-disrupt".to_owned(),
        ],
        owned_keys: vec![
            "cluster-autoscaler.kubernetes.io/scale-down-disabled".to_owned(),
            "karpenter.sh/do-not-disrupt".to_owned(),
        ],
    };
    let (node, patch) = node_annotation_patch(&action).expect("node action");
    let (patched, seen) = tokio::join!(
        writer.patch_node_annotations(node, &patch),
        answer(&mut handle, 200, node_reply())
    );
    patched.expect("patched");
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, "/api/v1/nodes/node-a");
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        seen.body,
        json!({"metadata": {"annotations": {
            "cluster-autoscaler.kubernetes.io/scale-down-disabled": "true",
            "karpenter.sh/do-not-disrupt": "true",
            "kess.io/guard-owned-keys":
                "cluster-autoscaler.kubernetes.io/scale-down-disabled,karpenter.sh/do-not-disrupt",
        }}})
    );
}

#[tokio::test]
async fn unguarding_a_node_deletes_only_the_keys_kess_set() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    // kess set only the Karpenter key; the cluster-autoscaler one was someone else's.
    let action = Action::UnguardNode {
        node: "node-a".to_owned(),
        keys_to_remove: vec!["karpenter.sh/do-not-disrupt".to_owned()],
    };
    let (node, patch) = node_annotation_patch(&action).expect("node action");
    let (patched, seen) = tokio::join!(
        writer.patch_node_annotations(node, &patch),
        answer(&mut handle, 200, node_reply())
    );
    patched.expect("patched");
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(seen.path, "/api/v1/nodes/node-a");
    assert_eq!(seen.content_type, "application/merge-patch+json");
    let annotations = seen.body["metadata"]["annotations"]
        .as_object()
        .expect("annotations");
    let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["karpenter.sh/do-not-disrupt", "kess.io/guard-owned-keys"]
    );
    assert!(annotations.values().all(Value::is_null));
}

#[tokio::test]
async fn pool_status_is_patched_on_the_status_subresource() {
    let (client, mut handle) = mocked();
    let writer = KubeWriter::new(client);
    let round = PoolStatus {
        expected: 4,
        requested: 2,
        registered: 1,
        pending: 1,
        registration_unknown: 0,
        safe_to_remove: 0,
        shuffle_bytes_per_node: BTreeMap::from([("node-a".to_owned(), 10)]),
        conditions: vec![PoolCondition::WaitingForRegistration { pending: 1 }],
        last_round: Timestamp::from_unix_ms(0),
    };
    let status = pool_status("etl", &round, None, "2026-01-01T00:00:00Z");
    let patch = pool_status_patch(None, &status);
    let reply = serde_json::to_value(pool()).expect("pool json");
    let pool_ref = ObjectRef::new("spark", "etl");
    let (patched, seen) = tokio::join!(
        writer.patch_pool_status(&pool_ref, &patch),
        answer(&mut handle, 200, reply)
    );
    patched.expect("patched");
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(
        seen.path,
        "/apis/kess.io/v1alpha1/namespaces/spark/executorpools/etl/status"
    );
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(seen.body["status"]["registered"], 1);
    assert_eq!(seen.body["status"]["replicas"], 2);
    assert_eq!(seen.body["status"]["selector"], "kess.io/pool=etl");
    assert_eq!(
        seen.body["status"]["shuffleBytesPerNode"],
        json!({"node-a": 10})
    );
    assert_eq!(
        seen.body["status"]["conditions"][0]["type"],
        "WaitingForRegistration"
    );
}

fn lease_json(holder: &str, version: &str) -> Value {
    serde_json::to_value(Lease {
        metadata: ObjectMeta {
            name: Some("kess-controller".to_owned()),
            namespace: Some("kess-system".to_owned()),
            resource_version: Some(version.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    })
    .expect("lease json")
}

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kess-system/leases";

#[tokio::test]
async fn a_missing_lease_is_created_then_renewed_with_its_resource_version() {
    let (client, mut handle) = mocked();
    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client, "kess-system"),
        "kess-controller",
        "replica-a",
        Duration::from_secs(15),
    );
    let apiserver = async {
        let get = answer(&mut handle, 404, not_found()).await;
        assert_eq!(get.method, Method::GET);
        assert_eq!(get.path, format!("{LEASE_PATH}/kess-controller"));
        let create = answer(&mut handle, 201, lease_json("replica-a", "1")).await;
        assert_eq!(create.method, Method::POST);
        assert_eq!(create.path, LEASE_PATH);
        assert_eq!(create.body["metadata"]["name"], "kess-controller");
        assert_eq!(create.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
        assert!(create.body["spec"]["renewTime"].is_string());
    };
    let (leads, ()) = tokio::join!(elector.step(), apiserver);
    assert!(leads.expect("step"));
    assert!(elector.is_leader(std::time::Instant::now()));

    let apiserver = async {
        answer(&mut handle, 200, lease_json("replica-a", "1")).await;
        let renew = answer(&mut handle, 200, lease_json("replica-a", "2")).await;
        assert_eq!(renew.method, Method::PUT);
        assert_eq!(renew.path, format!("{LEASE_PATH}/kess-controller"));
        // Written on the version it was decided on, so a racing replica's write wins or loses.
        assert_eq!(renew.body["metadata"]["resourceVersion"], "1");
        assert_eq!(renew.body["spec"]["holderIdentity"], "replica-a");
        assert_eq!(renew.body["spec"]["leaseTransitions"], 0);
    };
    let (leads, ()) = tokio::join!(elector.step(), apiserver);
    assert!(leads.expect("step"));
}

#[tokio::test]
async fn the_leader_releases_its_lease_on_shutdown() {
    let (client, mut handle) = mocked();
    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client, "kess-system"),
        "kess-controller",
        "replica-a",
        Duration::from_secs(15),
    );
    let apiserver = async {
        answer(&mut handle, 200, lease_json("replica-a", "4")).await;
        answer(&mut handle, 200, lease_json("replica-a", "5")).await;
    };
    let (leads, ()) = tokio::join!(elector.step(), apiserver);
    assert!(leads.expect("step"));

    let apiserver = async {
        let get = answer(&mut handle, 200, lease_json("replica-a", "5")).await;
        assert_eq!(get.method, Method::GET);
        let put = answer(&mut handle, 200, lease_json("", "6")).await;
        assert_eq!(put.method, Method::PUT);
        assert_eq!(put.path, format!("{LEASE_PATH}/kess-controller"));
        assert_eq!(put.body["metadata"]["resourceVersion"], "5");
        // No holder: the other replica takes over at its next step.
        assert!(put.body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null));
        assert_eq!(put.body["spec"]["leaseDurationSeconds"], 15);
    };
    let (released, ()) = tokio::join!(elector.release(), apiserver);
    released.expect("release");
    assert!(!elector.is_leader(std::time::Instant::now()));
    // Releasing again does nothing: it no longer leads.
    elector.release().await.expect("second release");
    drop(elector);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn a_lease_held_by_a_renewing_replica_is_followed_without_writing() {
    let (client, mut handle) = mocked();
    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client, "kess-system"),
        "kess-controller",
        "replica-b",
        Duration::from_secs(15),
    );
    let (leads, get) = tokio::join!(
        elector.step(),
        answer(&mut handle, 200, lease_json("replica-a", "7"))
    );
    assert_eq!(get.method, Method::GET);
    assert!(!leads.expect("step"));
    assert!(!elector.is_leader(std::time::Instant::now()));
    // No second request was made: the mock has nothing queued.
    drop(elector);
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn losing_the_create_race_means_following() {
    let (client, mut handle) = mocked();
    let mut elector = LeaderElector::new(
        Api::<Lease>::namespaced(client, "kess-system"),
        "kess-controller",
        "replica-b",
        Duration::from_secs(15),
    );
    let apiserver = async {
        answer(&mut handle, 404, not_found()).await;
        let create = answer(&mut handle, 409, conflict()).await;
        assert_eq!(create.method, Method::POST);
    };
    let (leads, ()) = tokio::join!(elector.step(), apiserver);
    assert!(!leads.expect("a lost race is not an error"));
}
