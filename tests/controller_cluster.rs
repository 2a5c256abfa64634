//! `kess controller` against a real Kubernetes API server (no kubelet or scheduler needed: the
//! tests bind pods and set their status themselves). Ignored by default; run with
//! `KUBECONFIG=... cargo test --test controller_cluster -- --ignored --test-threads=1`.
//! Each test creates its own namespace and Node object, a local kess daemon that stands in for
//! the node's daemon (`--daemon NODE=URL`), and the controller binary; it removes all of them at
//! the end (and the CRD, if it installed it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, push_output, Daemon};
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kess::controller::crd::ExecutorPool;
use kess::proto::{GetShuffleStateRequest, RegisterExecutorRequest};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

/// Cluster tests share the CRD; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client_or_skip(test: &str) -> Option<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        eprintln!("{test}: skipped, KUBECONFIG is not set (these tests need a real API server)");
        return None;
    }
    Some(
        Client::try_default()
            .await
            .expect("a client from KUBECONFIG"),
    )
}

/// Everything one test set up, torn down by [`Setup::teardown`].
struct Setup {
    client: Client,
    namespace: String,
    node: String,
    crd_installed_here: bool,
    daemon: Daemon,
    controller: Child,
    controller_log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

impl Setup {
    async fn start(client: Client, node_annotations: BTreeMap<String, String>) -> Setup {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let namespace = format!("kess-test-{suffix}");
        let node = format!("kess-test-node-{suffix}");

        let crds = Api::<CustomResourceDefinition>::all(client.clone());
        let crd_installed_here = match crds
            .create(&PostParams::default(), &ExecutorPool::crd())
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(error) => panic!("installing the CRD: {error}"),
        };
        let pools = Api::<ExecutorPool>::all(client.clone());
        wait_for(
            "the CRD to be served",
            Duration::from_secs(30),
            async || pools.list(&ListParams::default().limit(1)).await.ok(),
        )
        .await;
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns"),
            )
            .await
            .expect("create namespace");
        Api::<Node>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": node, "annotations": node_annotations}
                }))
                .expect("node"),
            )
            .await
            .expect("create node");

        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = Daemon::start(&dir.path().join("data"), &["--node-name", &node]).await;
        let controller_log = dir.path().join("controller.log");
        let log = std::fs::File::create(&controller_log).expect("log file");
        let controller = Command::new(env!("CARGO_BIN_EXE_kess"))
            .arg("controller")
            .arg("--daemon")
            .arg(format!("{node}={}", daemon.url()))
            .args(["--daemon-selector", ""])
            .args(["--lease-namespace", &namespace])
            .args(["--identity", "kess-test"])
            .args(["--interval", "500ms"])
            .args(["--orphan-grace", "1h"])
            .arg("--http-addr")
            .arg(free_addr().to_string())
            .env("KESS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kess controller");
        Setup {
            client,
            namespace,
            node,
            crd_installed_here,
            daemon,
            controller,
            controller_log,
            _dir: dir,
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Pods of a pool that are not being deleted.
    async fn live_pool_pods(&self, pool: &str) -> Vec<Pod> {
        let selector = format!("kess.io/pool={pool}");
        self.pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// What a kubelet would do: bind the pod to the test node and report it Running.
    async fn run_on_node(&self, pod: &str) {
        let binding = Binding {
            metadata: kube::api::ObjectMeta {
                name: Some(pod.to_owned()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Node".to_owned()),
                name: Some(self.node.clone()),
                ..ObjectReference::default()
            },
        };
        self.pods()
            .create_subresource::<Binding, serde_json::Value>(
                "binding",
                pod,
                &PostParams::default(),
                &binding,
            )
            .await
            .expect("bind pod");
        self.pods()
            .patch_status(
                pod,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running"}})),
            )
            .await
            .expect("pod status");
    }

    async fn node_annotations(&self) -> BTreeMap<String, String> {
        Api::<Node>::all(self.client.clone())
            .get(&self.node)
            .await
            .expect("get node")
            .annotations()
            .clone()
    }

    async fn teardown(mut self) {
        let _ = self.controller.kill();
        let _ = self.controller.wait();
        // Pods bound to a node without a kubelet only go away when forced.
        let force = DeleteParams::default().grace_period(0);
        if let Ok(pods) = self.pods().list(&ListParams::default()).await {
            for pod in pods.items {
                let _ = self.pods().delete(&pod.name_any(), &force).await;
            }
        }
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await;
        let _ = Api::<Node>::all(self.client.clone())
            .delete(&self.node, &DeleteParams::default())
            .await;
        if self.crd_installed_here {
            let _ = Api::<CustomResourceDefinition>::all(self.client.clone())
                .delete(&ExecutorPool::crd().name_any(), &DeleteParams::default())
                .await;
        }
        self.daemon.kill9();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.controller_log).unwrap_or_default()
    }
}

fn pool_json(namespace: &str, app: &str, replicas: u32) -> ExecutorPool {
    serde_json::from_value(json!({
        "apiVersion": "kess.io/v1alpha1",
        "kind": "ExecutorPool",
        "metadata": {"name": "etl", "namespace": namespace},
        "spec": {
            "appId": app,
            "replicas": replicas,
            "maxExecutors": 10,
            "batchSize": 3,
            "batchDelay": "500ms",
            "idleTimeout": "1s",
            "template": {"spec": {"containers": [{"name": "executor", "image": "busybox"}]}},
        },
    }))
    .expect("pool")
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn pool_scales_up_in_batches_of_registered_executors_and_scales_down() {
    let Some(client) = client_or_skip("pool_scales_up_in_batches").await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    let setup = Setup::start(client.clone(), BTreeMap::new()).await;
    let app = "app-kess-pool-test";
    let pools = Api::<ExecutorPool>::namespaced(client.clone(), &setup.namespace);
    pools
        .create(&PostParams::default(), &pool_json(&setup.namespace, app, 7))
        .await
        .expect("create pool");

    let mut executors = setup.daemon.shuffle().await;
    let mut registered = std::collections::HashSet::new();
    for expected_total in [3usize, 6, 7] {
        let pods = wait_for(
            &format!("{expected_total} pool pods\n{}", setup.log()),
            Duration::from_secs(60),
            async || {
                let pods = setup.live_pool_pods("etl").await;
                (pods.len() == expected_total).then_some(pods)
            },
        )
        .await;
        // Nothing more is created while the new pods have not registered.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(setup.live_pool_pods("etl").await.len(), expected_total);
        for pod in pods {
            let name = pod.name_any();
            if !registered.insert(name.clone()) {
                continue;
            }
            setup.run_on_node(&name).await;
            let executor_id = pod.labels()["spark-exec-id"].clone();
            executors
                .register_executor(RegisterExecutorRequest {
                    app_id: app.to_owned(),
                    executor_id,
                })
                .await
                .expect("register executor");
        }
    }
    wait_for(
        "status.registered = 7",
        Duration::from_secs(30),
        async || {
            let pool = pools.get("etl").await.ok()?;
            (pool.status?.registered == 7).then_some(())
        },
    )
    .await;

    // `kubectl scale executorpool/etl --replicas=2`: the scale subresource.
    pools
        .patch_scale(
            "etl",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale");
    wait_for("scale-down to 2", Duration::from_secs(60), async || {
        (setup.live_pool_pods("etl").await.len() == 2).then_some(())
    })
    .await;
    setup.teardown().await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server (KUBECONFIG)"]
async fn deleted_driver_gets_its_data_removed_and_the_node_guard_comes_and_goes() {
    let Some(client) = client_or_skip("deleted_driver_gets_its_data_removed").await else {
        return;
    };
    let _serial = SERIAL.lock().await;
    // Someone else's guard annotation, which kess must never touch.
    let foreign = "cluster-autoscaler.kubernetes.io/scale-down-disabled";
    let setup = Setup::start(
        client.clone(),
        BTreeMap::from([(foreign.to_owned(), "true".to_owned())]),
    )
    .await;
    let app = "app-kess-cleanup-test";
    let driver: Pod = serde_json::from_value(json!({
        "metadata": {"name": "driver", "labels": {"spark-app-selector": app, "spark-role": "driver"}},
        "spec": {"containers": [{"name": "driver", "image": "busybox"}]},
    }))
    .expect("driver");
    setup
        .pods()
        .create(&PostParams::default(), &driver)
        .await
        .expect("create driver");
    setup.run_on_node("driver").await;

    let mut shuffle = setup.daemon.shuffle().await;
    push_output(
        &mut shuffle,
        app,
        "1",
        0,
        0,
        &[vec![7u8; 4096], vec![9u8; 100]],
    )
    .await
    .expect("push map output");

    let annotations = wait_for(
        &format!("the node guard\n{}", setup.log()),
        Duration::from_secs(30),
        async || {
            let annotations = setup.node_annotations().await;
            annotations
                .contains_key("karpenter.sh/do-not-disrupt")
                .then_some(annotations)
        },
    )
    .await;
    assert_eq!(annotations["karpenter.sh/do-not-disrupt"], "true");
    assert_eq!(
        annotations["kess.io/guard-owned-keys"],
        "karpenter.sh/do-not-disrupt"
    );
    assert_eq!(annotations[foreign], "true");

    // Deleted with a grace period: without a kubelet it stays Terminating, as a driver does
    // while its container shuts down.
    setup
        .pods()
        .delete("driver", &DeleteParams::default())
        .await
        .expect("delete driver");
    let mut admin = setup.daemon.admin().await;
    wait_for(
        &format!("the application's data removed\n{}", setup.log()),
        Duration::from_secs(30),
        async || {
            let state = admin
                .get_shuffle_state(GetShuffleStateRequest::default())
                .await
                .ok()?
                .into_inner();
            state
                .applications
                .iter()
                .all(|a| a.app_id != app)
                .then_some(())
        },
    )
    .await;
    let annotations = wait_for("the node unguarded", Duration::from_secs(30), async || {
        let annotations = setup.node_annotations().await;
        (!annotations.contains_key("kess.io/guard-owned-keys")).then_some(annotations)
    })
    .await;
    assert!(!annotations.contains_key("karpenter.sh/do-not-disrupt"));
    assert_eq!(
        annotations[foreign], "true",
        "an annotation kess did not set stays"
    );
    setup.teardown().await;
}
