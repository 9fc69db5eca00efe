//! In-memory state shared by the binding and workload controllers: what each binding delivers
//! and what each Deployment carries. Plain data, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;

use crate::api::WorkloadStatus;
use crate::entries::ResolvedEntry;
use crate::plan::workload::Delivery;

/// (namespace, name).
pub type Key = (String, String);

/// What the last successful read of Secrets Manager gave a binding.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub generation: Option<i64>,
    pub force: Option<String>,
    pub at: Instant,
    pub when: Timestamp,
    /// Shared with the plans made from it (not copied).
    pub entries: Arc<Vec<ResolvedEntry>>,
}

/// Which spec (generation, force-sync value) a delivery answers.
pub type Answer = (Option<i64>, Option<String>);

/// One binding's state.
#[derive(Debug, Clone)]
pub struct BindingState {
    /// The spec the current delivery was planned for; None until the first plan.
    pub answered: Option<Answer>,
    pub delivery: Delivery,
    /// Names of the Secrets the binding writes (its entries on Deployments refer to them).
    pub secret_names: BTreeSet<String>,
    pub resolved: Option<Resolved>,
    /// A secret the binding reads changed version (seen by the shared view): re-read before
    /// the refresh interval is up.
    pub stale: bool,
    /// Consecutive failed reconciles (drives the backoff).
    pub failures: u32,
    /// Data last written to the managed Secrets (key → value), for keeping the last good value
    /// of an entry that fails transiently.
    pub last_good: Option<Arc<BTreeMap<String, String>>>,
    /// Digest of the reads behind `last_good` ([`crate::plan::held`]), as a restart finds it.
    pub last_digest: Option<String>,
    /// Per entry, the version behind its value in `last_good`, as this process wrote it.
    pub last_versions: Option<Arc<crate::plan::held::Versions>>,
    /// Resource version of each managed Secret after our last write (or when first seen): a
    /// different one means someone else changed it.
    pub secret_versions: BTreeMap<String, String>,
    /// A same-named Secret that this binding does not own.
    pub foreign_secret: Option<String>,
    /// Deployments this binding selected at its last plan.
    pub targets: BTreeSet<String>,
    /// Where and to which ServiceAccounts this process last granted access to the labelled
    /// Secrets (`KubernetesBackend`); None until the first reconcile.
    pub access: Option<Access>,
}

/// A grant to list the labelled Secrets: in which namespace, to which ServiceAccounts (of the
/// binding's namespace; none: no grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub namespace: String,
    pub accounts: BTreeSet<String>,
}

impl Default for BindingState {
    fn default() -> Self {
        BindingState {
            answered: None,
            delivery: Delivery::Hold,
            secret_names: BTreeSet::new(),
            resolved: None,
            stale: false,
            failures: 0,
            last_good: None,
            last_digest: None,
            last_versions: None,
            secret_versions: BTreeMap::new(),
            foreign_secret: None,
            targets: BTreeSet::new(),
            access: None,
        }
    }
}

/// The shared index.
#[derive(Debug, Default)]
pub struct Index {
    pub bindings: HashMap<Key, BindingState>,
    /// (namespace, Deployment) → binding → what the Deployment carries of it.
    pub outcomes: HashMap<Key, BTreeMap<String, WorkloadStatus>>,
    /// (namespace, Deployment) → since when it waits for bindings to settle.
    pub waiting_since: HashMap<Key, Instant>,
}

impl Index {
    pub fn binding(&mut self, key: &Key) -> &mut BindingState {
        self.bindings.entry(key.clone()).or_default()
    }

    /// What the Deployments of `namespace` carry of `binding`, by Deployment name.
    pub fn outcomes_of(&self, namespace: &str, binding: &str) -> BTreeMap<String, WorkloadStatus> {
        self.outcomes
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .filter_map(|((_, d), per)| per.get(binding).map(|o| (d.clone(), o.clone())))
            .collect()
    }

    /// Marks every binding whose last read included one of `secrets` stale (including the one
    /// that found the change: it may have read before the change was learnt); returns them.
    pub fn mark_readers_stale(&mut self, secrets: &BTreeSet<String>) -> Vec<Key> {
        let mut out = Vec::new();
        if secrets.is_empty() {
            return out;
        }
        for (key, state) in self.bindings.iter_mut() {
            let reads = state.resolved.as_ref().is_some_and(|r| {
                r.entries
                    .iter()
                    .any(|e| secrets.contains(e.secret_id.as_str()))
            });
            if reads && !state.stale {
                state.stale = true;
                out.push(key.clone());
            }
        }
        out
    }
}
