//! The HTTP side: Prometheus `/metrics`, liveness `/healthz`, readiness `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

/// Readiness: true once recovery finished and the listeners are bound, false again while
/// draining, so Kubernetes stops routing new work to a daemon that is shutting down.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: PrometheusHandle,
    ready: Readiness,
    /// Refreshes gauges that are cheaper to read on scrape than to maintain (disk free).
    on_scrape: Arc<dyn Fn() + Send + Sync>,
}

pub fn router(
    metrics: PrometheusHandle,
    ready: Readiness,
    on_scrape: Arc<dyn Fn() + Send + Sync>,
) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState {
            metrics,
            ready,
            on_scrape,
        })
}

async fn render_metrics(State(s): State<HttpState>) -> String {
    (s.on_scrape)();
    s.metrics.render()
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
