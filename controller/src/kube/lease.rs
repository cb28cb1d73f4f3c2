//! Leader election for the status writer: a `coordination.k8s.io/v1` Lease, claimed and
//! renewed with get/create/update and `resourceVersion` optimistic concurrency — the
//! algorithm of client-go's leader election.
//!
//! A holder renews every `renew_every` and stops acting as leader when it could not renew
//! for two thirds of the lease duration; others retry every `retry_every` and take over once
//! they have seen the same record for longer than `leaseDurationSeconds` (measured on their
//! own clock, so clock skew between nodes does not matter). On graceful shutdown the holder
//! clears `holderIdentity`, so another replica takes over at its next retry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// Default Lease name.
pub const LEASE_NAME: &str = "weir-status-writer";

/// How the election behaves.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name (in the controller namespace).
    pub name: String,
    /// This replica's identity (`POD_NAME`, else hostname and pid).
    pub identity: String,
    /// `leaseDurationSeconds`: how long a silent holder keeps the lease.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a non-holder tries to acquire.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// The defaults: 15 s lease, renewed every 5 s, acquisition tried every 2 s.
    pub fn new(identity: impl Into<String>) -> Self {
        LeaseConfig {
            name: LEASE_NAME.to_owned(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// This replica's identity: `POD_NAME`, else `hostname-pid`.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.trim().is_empty()
    {
        return name.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "weir".to_owned());
    format!("{host}-{}", std::process::id())
}

/// One replica's view of the election.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last record seen (resourceVersion) and when this replica first saw it.
    observed: Option<(String, Instant)>,
    /// When this replica last renewed successfully, while it holds the lease.
    renewed: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// An elector over the Leases of the controller namespace.
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        Elector { api, config, observed: None, renewed: None }
    }

    /// True while this replica holds the lease: its last successful renewal (timed from
    /// when the request was sent) is younger than the renew deadline, two thirds of the
    /// lease duration — so it stops writing well before another replica may take over.
    pub fn is_leader(&self) -> bool {
        self.renewed.is_some_and(|t| t.elapsed() < self.config.duration * 2 / 3)
    }

    /// One round: acquire or renew. Returns whether this replica holds the lease.
    pub async fn round(&mut self) -> Result<bool, kube::Error> {
        let sent = Instant::now();
        let result = self.try_acquire_or_renew().await;
        match &result {
            Ok(true) => self.renewed = Some(sent),
            Ok(false) => self.renewed = None,
            Err(_) => {}
        }
        result.map(|_| self.is_leader())
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds(self.config.duration)),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = lease.metadata.resource_version.clone().unwrap_or_default();
        let observed_at = match &self.observed {
            Some((rv, at)) if *rv == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.duration, Duration::from_secs);
        let expired = holder.is_empty() || observed_at.elapsed() >= duration;
        if holder != me && !expired {
            return Ok(false);
        }
        if holder != me {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(seconds(self.config.duration));
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it (clears `holderIdentity`).
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        self.renewed = None;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else { return Ok(()) };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        lease.spec = Some(spec);
        self.api.replace(&self.config.name, &PostParams::default(), &lease).await.map(|_| ())
    }

    /// Runs the election until `stop`, publishing leadership on `leader`; releases the
    /// lease on the way out.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            match self.round().await {
                Ok(_) => {}
                Err(e) => tracing::warn!(lease = %self.config.name, "leader election: {e}"),
            }
            let is_leader = self.is_leader();
            leader.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader);
            let wait = if is_leader { self.config.renew_every } else { self.config.retry_every };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        leader.send_replace(false);
        if self.renewed.is_some()
            && let Err(e) = self.release().await
        {
            tracing::warn!(lease = %self.config.name, "releasing the lease: {e}");
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
