//! Leader election over a `coordination.k8s.io/v1` Lease, so two controller replicas can be
//! deployed and exactly one acts.
//!
//! The leader renews the lease every `renew_every`; it stays leader only while its last
//! successful renewal is younger than the lease duration minus a margin, so a leader cut off from
//! the API server stops acting before another replica may take over. A follower takes over only
//! once the lease record has not changed for a full lease duration *as measured by its own
//! clock*: it compares resource versions, not the holder's `renewTime`, so clock skew between
//! replicas cannot hand the lease to two at once. Every write carries the resource version it
//! was decided on, so of two replicas racing for it the API server lets exactly one win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// What this replica should do with the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// No lease exists: create it, holding it.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    TakeOver,
    /// Another replica holds it and is renewing.
    Follow { holder: String },
}

/// Decides from the lease as read, and how long this replica has seen it unchanged.
pub fn lease_decision(
    lease: Option<&LeaseSpec>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> LeaseDecision {
    let Some(spec) = lease else {
        return LeaseDecision::Create;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => LeaseDecision::TakeOver,
        Some(holder) if holder == identity => LeaseDecision::Renew,
        Some(holder) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map_or(default_duration, Duration::from_secs);
            if unchanged_for > duration {
                LeaseDecision::TakeOver
            } else {
                LeaseDecision::Follow {
                    holder: holder.to_owned(),
                }
            }
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// Resource version of the lease as last read, and when this replica first saw it.
    observed: Option<(String, Instant)>,
    /// When this replica last renewed (or acquired) the lease successfully.
    renewed_at: Option<Instant>,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
            renewed_at: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica may act now: its last renewal is recent enough that no other
    /// replica can have taken over (a fifth of the duration is left as margin for skewed
    /// rate of clocks and slow requests).
    pub fn is_leader(&self, now: Instant) -> bool {
        self.renewed_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.duration * 4 / 5)
    }

    /// Reads the lease and acquires, renews or follows; returns whether this replica leads.
    pub async fn step(&mut self) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let current = self.api.get_opt(&self.name).await?;
        let version = current
            .as_ref()
            .and_then(|lease| lease.metadata.resource_version.clone());
        let unchanged_for = match (&self.observed, &version) {
            (Some((seen, since)), Some(now_version)) if seen == now_version => {
                started.saturating_duration_since(*since)
            }
            _ => {
                self.observed = version.clone().map(|v| (v, started));
                Duration::ZERO
            }
        };
        let decision = lease_decision(
            current.as_ref().and_then(|lease| lease.spec.as_ref()),
            &self.identity,
            unchanged_for,
            self.duration,
        );
        let written = match (&decision, current) {
            (LeaseDecision::Create, _) => {
                let lease = self.held_lease(None, None, 0);
                self.api.create(&PostParams::default(), &lease).await
            }
            (LeaseDecision::Renew | LeaseDecision::TakeOver, Some(current)) => {
                let spec = current.spec.unwrap_or_default();
                let transitions = spec.lease_transitions.unwrap_or(0)
                    + i32::from(decision == LeaseDecision::TakeOver);
                let acquire_time = if decision == LeaseDecision::Renew {
                    spec.acquire_time
                } else {
                    None
                };
                let lease =
                    self.held_lease(current.metadata.resource_version, acquire_time, transitions);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            (LeaseDecision::Follow { holder }, _) => {
                if self.renewed_at.take().is_some() {
                    tracing::warn!(holder = %holder, "lost the controller lease");
                }
                return Ok(false);
            }
            (LeaseDecision::Renew | LeaseDecision::TakeOver, None) => return Ok(false),
        };
        match written {
            Ok(lease) => {
                if self.renewed_at.is_none() {
                    tracing::info!(identity = %self.identity, lease = %self.name, ?decision, "acquired the controller lease");
                }
                self.renewed_at = Some(started);
                self.observed = lease.metadata.resource_version.map(|v| (v, started));
                Ok(true)
            }
            // Another replica wrote first (create: already exists; replace: stale version).
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.renewed_at = None;
                self.observed = None;
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up (on shutdown), so another replica takes over at its next step instead
    /// of waiting out the lease duration. Only a lease this replica still holds is touched; a
    /// conflict means someone else already has it, which is fine.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        if self.renewed_at.take().is_none() {
            return Ok(());
        }
        let Some(current) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let released = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current.metadata.resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: None,
                acquire_time: None,
                renew_time: None,
                ..spec
            }),
        };
        match self
            .api
            .replace(&self.name, &PostParams::default(), &released)
            .await
        {
            Ok(_) => {
                tracing::info!(identity = %self.identity, lease = %self.name, "released the controller lease");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn held_lease(
        &self,
        resource_version: Option<String>,
        acquire_time: Option<MicroTime>,
        transitions: i32,
    ) -> Lease {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version,
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(acquire_time.unwrap_or_else(|| now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DURATION: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, seconds: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: seconds,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(
            lease_decision(None, "me", Duration::ZERO, DURATION),
            LeaseDecision::Create
        );
    }

    #[test]
    fn own_lease_is_renewed_however_long_unchanged() {
        let spec = held_by(Some("me"), Some(15));
        assert_eq!(
            lease_decision(Some(&spec), "me", Duration::from_secs(999), DURATION),
            LeaseDecision::Renew
        );
    }

    #[test]
    fn a_renewing_holder_is_followed() {
        let spec = held_by(Some("other"), Some(15));
        assert_eq!(
            lease_decision(Some(&spec), "me", Duration::from_secs(15), DURATION),
            LeaseDecision::Follow {
                holder: "other".to_owned()
            }
        );
    }

    #[test]
    fn a_holder_silent_for_longer_than_its_duration_is_taken_over() {
        let spec = held_by(Some("other"), Some(5));
        assert_eq!(
            lease_decision(Some(&spec), "me", Duration::from_secs(6), DURATION),
            LeaseDecision::TakeOver
        );
        // Without a duration in the lease, this replica's own duration applies.
        let spec = held_by(Some("other"), None);
        assert_eq!(
            lease_decision(Some(&spec), "me", Duration::from_secs(6), DURATION),
            LeaseDecision::Follow {
                holder: "other".to_owned()
            }
        );
    }

    #[test]
    fn an_empty_holder_is_taken_over_at_once() {
        for holder in [None, Some("")] {
            let spec = held_by(holder, Some(15));
            assert_eq!(
                lease_decision(Some(&spec), "me", Duration::ZERO, DURATION),
                LeaseDecision::TakeOver
            );
        }
    }
}
