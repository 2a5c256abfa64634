//! Talking to the kess daemons: shuffle state in, application removals out.
//!
//! One lazily connected gRPC channel per daemon URL, kept across rounds. A daemon that does not
//! answer within the timeout is *unknown* for the round (`None`), never empty: the policy then
//! leaves its node's guard, scale-down and registrations alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use super::policy::DaemonState;
use crate::proto::admin_service_client::AdminServiceClient;
use crate::proto::{GetShuffleStateRequest, RemoveApplicationRequest};

/// Why a daemon call failed; the node and URL are in the error so logs name the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("daemon of node {node} has an invalid URL {url:?}: {source}")]
    BadUrl {
        node: String,
        url: String,
        source: tonic::transport::Error,
    },
    #[error("daemon of node {node} at {url} did not answer {call}: {source}")]
    Call {
        node: String,
        url: String,
        call: &'static str,
        source: tonic::Status,
    },
    #[error("daemon of node {node} at {url} did not answer {call} within {timeout:?}")]
    Timeout {
        node: String,
        url: String,
        call: &'static str,
        timeout: Duration,
    },
}

/// gRPC clients of every daemon the controller knows.
pub struct DaemonClients {
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl DaemonClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, node: &str, url: &str) -> Result<AdminServiceClient<Channel>, DaemonError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(url) {
            return Ok(AdminServiceClient::new(channel.clone()));
        }
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|source| DaemonError::BadUrl {
                node: node.to_owned(),
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_lazy();
        channels.insert(url.to_owned(), channel.clone());
        Ok(AdminServiceClient::new(channel))
    }

    /// Forgets channels of daemons that are no longer discovered (nodes gone, pods moved).
    pub fn retain(&self, addresses: &BTreeMap<String, String>) {
        let wanted: std::collections::HashSet<&String> = addresses.values().collect();
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|url, _| wanted.contains(url));
    }

    /// One daemon's shuffle state.
    pub async fn shuffle_state(&self, node: &str, url: &str) -> Result<DaemonState, DaemonError> {
        let mut client = self.client(node, url)?;
        let call = client.get_shuffle_state(GetShuffleStateRequest::default());
        let state = self
            .within_timeout(node, url, "GetShuffleState", call)
            .await?;
        Ok(super::observe::daemon_state(state))
    }

    /// Every daemon's state, asked concurrently; `None` for those that did not answer.
    pub async fn poll_all(
        &self,
        addresses: &BTreeMap<String, String>,
    ) -> HashMap<String, Result<DaemonState, DaemonError>> {
        let calls = addresses
            .iter()
            .map(|(node, url)| async move { (node.clone(), self.shuffle_state(node, url).await) });
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// Removes an application from one daemon; returns the bytes it freed.
    pub async fn remove_application(
        &self,
        node: &str,
        url: &str,
        app_id: &str,
    ) -> Result<u64, DaemonError> {
        let mut client = self.client(node, url)?;
        let call = client.remove_application(RemoveApplicationRequest {
            app_id: app_id.to_owned(),
        });
        let report = self
            .within_timeout(node, url, "RemoveApplication", call)
            .await?;
        Ok(report.bytes_freed)
    }

    async fn within_timeout<T>(
        &self,
        node: &str,
        url: &str,
        call: &'static str,
        future: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DaemonError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(source)) => Err(DaemonError::Call {
                node: node.to_owned(),
                url: url.to_owned(),
                call,
                source,
            }),
            Err(_) => Err(DaemonError::Timeout {
                node: node.to_owned(),
                url: url.to_owned(),
                call,
                timeout: self.timeout,
            }),
        }
    }
}

/// Paces `RemoveApplication` calls. The policy asks for a removal every round until the data is
/// gone, and asks daemons of unknown state again every round; this sends each (node, app) once,
/// then again only after `after_success` (if the daemon still reports the data) or, after a
/// failure, after a backoff that doubles from `first_backoff` up to `max_backoff`.
pub struct RemovalThrottle {
    after_success: Duration,
    first_backoff: Duration,
    max_backoff: Duration,
    entries: HashMap<(String, String), ThrottleEntry>,
}

struct ThrottleEntry {
    next_allowed: Instant,
    failures: u32,
}

impl RemovalThrottle {
    pub fn new(after_success: Duration, first_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            after_success,
            first_backoff,
            max_backoff,
            entries: HashMap::new(),
        }
    }

    /// Whether a removal of `app_id` from `node` may be sent now.
    pub fn allows(&self, node: &str, app_id: &str, now: Instant) -> bool {
        self.entries
            .get(&(node.to_owned(), app_id.to_owned()))
            .is_none_or(|entry| now >= entry.next_allowed)
    }

    pub fn succeeded(&mut self, node: &str, app_id: &str, now: Instant) {
        self.entries.insert(
            (node.to_owned(), app_id.to_owned()),
            ThrottleEntry {
                next_allowed: now + self.after_success,
                failures: 0,
            },
        );
    }

    pub fn failed(&mut self, node: &str, app_id: &str, now: Instant) {
        let entry = self
            .entries
            .entry((node.to_owned(), app_id.to_owned()))
            .or_insert(ThrottleEntry {
                next_allowed: now,
                failures: 0,
            });
        let backoff = self
            .first_backoff
            .saturating_mul(1u32 << entry.failures.min(16))
            .min(self.max_backoff);
        entry.failures = entry.failures.saturating_add(1);
        entry.next_allowed = now + backoff;
    }

    /// Drops entries whose wait ended long ago, so the table stays as small as the work.
    pub fn forget_older_than(&mut self, age: Duration, now: Instant) {
        self.entries
            .retain(|_, entry| now.saturating_duration_since(entry.next_allowed) < age);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> RemovalThrottle {
        RemovalThrottle::new(
            Duration::from_secs(30),
            Duration::from_secs(1),
            Duration::from_secs(8),
        )
    }

    #[test]
    fn a_removal_is_sent_once_then_again_only_after_the_success_interval() {
        let mut throttle = throttle();
        let start = Instant::now();
        assert!(throttle.allows("n", "app", start));
        throttle.succeeded("n", "app", start);
        assert!(!throttle.allows("n", "app", start + Duration::from_secs(1)));
        assert!(!throttle.allows("n", "app", start + Duration::from_secs(29)));
        assert!(throttle.allows("n", "app", start + Duration::from_secs(30)));
        // Other pairs are independent.
        assert!(throttle.allows("n", "other", start));
        assert!(throttle.allows("m", "app", start));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_maximum() {
        let mut throttle = throttle();
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            throttle.failed("n", "app", now);
            let mut wait = 0;
            while !throttle.allows("n", "app", now + Duration::from_secs(wait)) {
                wait += 1;
            }
            waits.push(wait);
            now += Duration::from_secs(wait);
        }
        assert_eq!(waits, vec![1, 2, 4, 8, 8, 8]);
        throttle.succeeded("n", "app", now);
        throttle.failed("n", "app", now + Duration::from_secs(30));
        assert!(throttle.allows("n", "app", now + Duration::from_secs(31)));
    }

    #[test]
    fn old_entries_are_forgotten() {
        let mut throttle = throttle();
        let start = Instant::now();
        throttle.succeeded("n", "a", start);
        throttle.succeeded("n", "b", start + Duration::from_secs(100));
        throttle.forget_older_than(Duration::from_secs(60), start + Duration::from_secs(120));
        assert_eq!(throttle.len(), 1);
        assert!(throttle.allows("n", "a", start + Duration::from_secs(120)));
    }

    #[tokio::test]
    async fn an_unreachable_daemon_is_an_error_not_an_empty_state() {
        let clients = DaemonClients::new(Duration::from_millis(300));
        // A port nothing listens on: bind, note it, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let addresses = BTreeMap::from([("node-a".to_owned(), format!("http://127.0.0.1:{port}"))]);
        let states = clients.poll_all(&addresses).await;
        let error = match &states["node-a"] {
            Ok(state) => panic!("unreachable daemon reported {state:?}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("node-a"), "{error}");
    }
}
