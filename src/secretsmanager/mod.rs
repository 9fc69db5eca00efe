//! Reading bindings' entries from AWS Secrets Manager, cheaply and shared.
//!
//! One process-wide [`SecretsManager`] holds one [`view::View`] per source (region, identity,
//! endpoint): every binding of that source reads through it, so a listing, a version check or a
//! value read serves all of them (see `view.rs`). Calls are rate-limited per source (token
//! bucket), retried briefly by the SDK's standard retry (exponential backoff with jitter, and a
//! retry quota that stops retrying when most calls fail), and bounded by per-attempt and
//! per-operation timeouts so that a hung endpoint cannot wedge a reconcile. A call fails within
//! seconds, so that status tells an outage promptly; the controller's own backoff then paces the
//! binding's next tries.
//!
//! - Discovery lists its prefix (`ListSecrets`, 100 per page); the listing tells each secret's
//!   current version without reading a value.
//! - Explicit names learn their version the same way (a listing of their prefix, or of up to 10
//!   names per call); values are read (`BatchGetSecretValue`, 20 ids per call) only for versions
//!   not held yet.
//! - ARNs, a `versionStage` or `versionId`, and forced syncs read directly, since a listing cannot
//!   name them or may lag (AWS: `ListSecrets` "might not reflect changes from the last five
//!   minutes").

pub mod calls;
pub mod limit;
pub mod patterns;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;

pub use calls::{BATCH_LIMIT, Described, LIST_PAGE};
pub use limit::{RateLimit, Waited};
pub use patterns::{DiscoveryPatterns, Lookup};
pub use view::ReaderKey;

use crate::airflow::path;
use crate::api::{AirflowSecretBindingSpec, EntryKind, EntryState, VersionSelector};
use crate::entries::{Fetched, ResolvedEntry};
use crate::metrics::{CallLabels, Calls};
use crate::source::{Grant, Origin};
use view::View;

/// A failure that stops the whole resolution (the last good Secret is kept).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("Secrets Manager {operation} failed: {message}")]
    Call {
        operation: &'static str,
        message: String,
    },
    #[error("Secrets Manager {operation} was refused (AccessDeniedException): {message}")]
    Denied {
        operation: &'static str,
        message: String,
    },
}

/// Per-attempt timeout of one call; the SDK retries an attempt that times out.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
/// Timeout of one call including its retries: a reconcile that meets a hung endpoint reports it
/// (Ready False, `SecretsManagerUnavailable`) within this, plus its refresh interval.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);
/// Attempts per call. The SDK's adaptive mode is not used: after one throttling answer its
/// client-side limiter charges a retry 5 tokens at 0.5 tokens/s, i.e. ~10 s of waiting per retry,
/// which kept a reconcile (and every binding waiting on the same shared listing) silent for up to
/// the whole operation timeout (tests/faults.rs).
pub const MAX_ATTEMPTS: u32 = 3;

/// Sums the call counter per operation: (ListSecrets, BatchGetSecretValue, GetSecretValue).
pub fn call_totals(calls: &Calls) -> [(&'static str, u64); 3] {
    let mut out = [
        ("ListSecrets", 0),
        ("BatchGetSecretValue", 0),
        ("GetSecretValue", 0),
    ];
    for (op, n) in out.iter_mut() {
        for outcome in ["success", "error"] {
            let labels = CallLabels {
                operation: op,
                outcome: outcome.into(),
            };
            *n += calls.get(&labels).map(|c| c.get()).unwrap_or(0);
        }
    }
    out
}

/// How a binding reads: who it is (its values are kept while it refers to them), how old what
/// it is served may be, and whether it must see the current state (a forced sync).
#[derive(Debug, Clone)]
pub struct Reader {
    pub key: ReaderKey,
    pub max_age: Duration,
    pub direct: bool,
    /// It holds no value yet (a new binding): it reads every value it locates, so names never
    /// checked are read at once instead of checked first ([`View::versions`]).
    pub reads_values: bool,
}

/// The process-wide Secrets Manager component.
pub struct SecretsManager {
    base: aws_config::SdkConfig,
    limit: RateLimit,
    views: Mutex<HashMap<Origin, Arc<View>>>,
    /// Calls made, by operation and outcome (`success` / `error`), as AWS bills them.
    pub calls: Calls,
    /// Bytes of secret values received (every value moved is exposure).
    pub value_bytes: prometheus_client::metrics::counter::Counter,
    /// Seconds calls waited for the client-side rate limit.
    pub rate_limit_wait: limit::Waited,
}

/// An explicit entry of a spec.
struct Wanted {
    kind: EntryKind,
    name: String,
    config: Option<(String, String)>,
    secret_id: String,
    version: VersionSelector,
}

impl SecretsManager {
    /// Loads the operator's own AWS configuration (environment, profile, IRSA, Pod Identity).
    pub async fn from_env() -> Self {
        Self::with_limit(RateLimit::default()).await
    }

    pub async fn with_limit(limit: RateLimit) -> Self {
        let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(base, limit)
    }

    pub fn new(base: aws_config::SdkConfig, limit: RateLimit) -> Self {
        SecretsManager {
            base,
            limit,
            views: Mutex::default(),
            calls: Calls::default(),
            value_bytes: Default::default(),
            rate_limit_wait: Default::default(),
        }
    }

    /// The view of an origin; built once (an assumed role's credentials refresh themselves).
    async fn view(&self, origin: &Origin) -> Arc<View> {
        if let Some(v) = self.views.lock().expect("views").get(origin) {
            return v.clone();
        }
        let client = self.client(origin).await;
        let view = Arc::new(View::new(
            client,
            limit::TokenBucket::new(self.limit, self.rate_limit_wait.clone()),
            self.value_bytes.clone(),
        ));
        self.views
            .lock()
            .expect("views")
            .entry(origin.clone())
            .or_insert(view)
            .clone()
    }

    async fn client(&self, origin: &Origin) -> Client {
        let mut b = aws_sdk_secretsmanager::config::Builder::from(&self.base)
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &origin.region {
            b = b.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &origin.endpoint {
            b = b.endpoint_url(endpoint.clone());
        }
        if let Some(role) = &origin.role_arn {
            let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(
                    origin
                        .session_name
                        .clone()
                        .unwrap_or_else(|| crate::source::DEFAULT_SESSION_NAME.into()),
                )
                .configure(&self.base);
            if !origin.session_tags.is_empty() {
                p = p.tags(origin.session_tags.iter().cloned());
            }
            if let Some(region) = &origin.region {
                p = p.region(aws_config::Region::new(region.clone()));
            }
            if let Some(id) = &origin.external_id {
                p = p.external_id(id.clone());
            }
            b = b.credentials_provider(
                aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(p.build().await),
            );
        }
        Client::from_conf(b.build())
    }

    /// Reads every entry of a spec now, sharing nothing (the `render` command).
    pub async fn resolve(
        &self,
        grant: &Grant,
        spec: &AirflowSecretBindingSpec,
        patterns: &DiscoveryPatterns,
    ) -> Result<Vec<ResolvedEntry>, ResolveError> {
        let reader = Reader {
            key: ("".into(), format!("render-{}", fastrand::u64(..))),
            max_age: Duration::ZERO,
            direct: true,
            reads_values: true,
        };
        let out = self
            .resolve_for(&reader, grant, spec, patterns, &|e| vec![false; e.len()])
            .await;
        self.forget(&reader.key);
        out
    }

    /// Resolves every entry of a binding through its origin's shared view, within its grant:
    /// explicit entries first (in spec order), then discovered ones (sorted by id). Entries the
    /// grant refuses are `AccessDenied` without any call; a discovery prefix it refuses is not
    /// listed (the caller reports it: [`refused_listings`]). First every entry's current
    /// version is located (listings, version checks, direct reads); `held` then says which
    /// located entries the caller already holds for exactly that version: those stay
    /// [`Fetched::Held`] and are not read.
    pub async fn resolve_for(
        &self,
        reader: &Reader,
        grant: &Grant,
        spec: &AirflowSecretBindingSpec,
        patterns: &DiscoveryPatterns,
        held: &(dyn Fn(&[ResolvedEntry]) -> Vec<bool> + Sync),
    ) -> Result<Vec<ResolvedEntry>, ResolveError> {
        let view = self.view(&grant.origin).await;
        self.forget_except(&reader.key, Some(&grant.origin));
        let mut out = self.locate(&view, reader, grant, spec, patterns).await?;
        let keep = held(&out);
        let unread = |e: &ResolvedEntry| matches!(e.outcome, Fetched::Held);
        let pairs: BTreeSet<(String, String)> = out
            .iter()
            .zip(keep.iter().chain(std::iter::repeat(&false)))
            .filter(|(e, k)| !**k && unread(e))
            .filter_map(|(e, _)| Some((e.secret_id.clone(), e.version_id.clone()?)))
            .collect();
        let values = view.values(&self.calls, &reader.key, &pairs).await?;
        view.set_refs(&reader.key, pairs.iter().cloned().collect::<HashSet<_>>());
        for (e, k) in out
            .iter_mut()
            .zip(keep.into_iter().chain(std::iter::repeat(false)))
        {
            if k || !unread(e) {
                continue;
            }
            let v = e.version_id.clone().unwrap_or_default();
            e.outcome = values
                .get(&(e.secret_id.clone(), v))
                .cloned()
                .unwrap_or(Fetched::Problem(
                    EntryState::Error,
                    "the secret has no current version".into(),
                ));
        }
        Ok(out)
    }

    /// Every entry of a spec with its current version; values are not read ([`Fetched::Held`]),
    /// except for entries a listing cannot serve (read directly) and names not found.
    async fn locate(
        &self,
        view: &View,
        reader: &Reader,
        grant: &Grant,
        spec: &AirflowSecretBindingSpec,
        patterns: &DiscoveryPatterns,
    ) -> Result<Vec<ResolvedEntry>, ResolveError> {
        if !reader.direct {
            view.set_interval(&reader.key, reader.max_age);
        }
        let discovered = self.discover(view, reader, grant, spec, patterns).await?;
        let (wanted, refused) = admitted(grant, wanted(spec));
        let readable: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| !refused.contains_key(&w.secret_id))
            .collect();
        let (by_listing, direct): (Vec<&Wanted>, Vec<&Wanted>) = readable
            .iter()
            .partition(|w| !reader.direct && by_listing(w));
        let names: BTreeSet<String> = by_listing.iter().map(|w| w.secret_id.clone()).collect();
        // Without secretsmanager:ListSecrets, explicit names are read directly (as the first
        // version did): correct, only dearer.
        let (versions, direct) = match view
            .versions(
                &self.calls,
                &reader.key,
                &names,
                reader.max_age,
                reader.reads_values,
            )
            .await
        {
            Ok(v) => (v, direct),
            Err(ResolveError::Denied { .. }) if spec.discovery.is_none() => {
                (BTreeMap::new(), readable.clone())
            }
            Err(e) => return Err(e),
        };
        let direct_read = self.read_direct(view, &direct).await?;
        let mut out = Vec::with_capacity(wanted.len() + discovered.len());
        for w in &wanted {
            if let Some(why) = refused.get(&w.secret_id) {
                out.push(ResolvedEntry {
                    kind: w.kind,
                    name: w.name.clone(),
                    config: w.config.clone(),
                    secret_id: w.secret_id.clone(),
                    version_id: None,
                    outcome: Fetched::Problem(EntryState::AccessDenied, why.clone()),
                    team: team_of(spec, w.kind),
                });
                continue;
            }
            let direct_key = (w.secret_id.clone(), w.version.clone());
            let (version_id, outcome) = match direct_read.get(&direct_key) {
                Some(r) if direct.iter().any(|d| std::ptr::eq(*d, w)) => r.clone(),
                _ => match versions.get(&w.secret_id).cloned().flatten() {
                    Some(v) => (Some(v), Fetched::Held),
                    None => (None, calls::problem("ResourceNotFoundException")),
                },
            };
            out.push(ResolvedEntry {
                kind: w.kind,
                name: w.name.clone(),
                config: w.config.clone(),
                secret_id: w.secret_id.clone(),
                version_id,
                outcome,
                team: team_of(spec, w.kind),
            });
        }
        // A forced sync reads the discovered secrets' current values too: a listing may lag.
        let names: Vec<String> = discovered.iter().map(|(_, _, l)| l.name.clone()).collect();
        let fresh = if reader.direct && !names.is_empty() {
            let read = view.api(&self.calls).batch_get(&names).await?;
            view.keep_read(&read);
            read
        } else {
            calls::Read::new()
        };
        for (kind, id, l) in discovered {
            if let Some((version_id, outcome)) = fresh.get(&l.name).cloned() {
                out.push(ResolvedEntry {
                    kind,
                    name: id,
                    config: None,
                    secret_id: l.name,
                    version_id,
                    outcome,
                    team: spec.team.clone(),
                });
                continue;
            }
            let outcome = match l.current_version {
                Some(_) => Fetched::Held,
                None => Fetched::Problem(
                    EntryState::Error,
                    "the secret has no current version".into(),
                ),
            };
            out.push(ResolvedEntry {
                kind,
                name: id,
                config: None,
                secret_id: l.name,
                version_id: l.current_version,
                outcome,
                team: spec.team.clone(),
            });
        }
        Ok(out)
    }

    /// Discovery: the listings of the spec's prefixes (shared), filtered as Airflow looks up.
    async fn discover(
        &self,
        view: &View,
        reader: &Reader,
        grant: &Grant,
        spec: &AirflowSecretBindingSpec,
        patterns: &DiscoveryPatterns,
    ) -> Result<Vec<(EntryKind, String, calls::Listed)>, ResolveError> {
        let mut out = Vec::new();
        let Some(d) = &spec.discovery else {
            return Ok(out);
        };
        for (kind, _, prefix, filter) in listings(spec) {
            let pattern = match kind {
                EntryKind::Connection => &patterns.connections,
                _ => &patterns.variables,
            };
            if matches!(pattern, Lookup::Unusable) || !grant.may_list(&filter) {
                continue;
            }
            let listed = view
                .listing(&self.calls, Some(&reader.key), &filter, reader.max_age)
                .await?;
            // A listing returns names under its filter; one that does not (a lax or hostile
            // endpoint) is not trusted with names outside the grant either.
            for l in listed.iter().filter(|l| grant.admits_name(&l.name)) {
                let Some(id) = path::id_for_secret(&prefix, &d.sep, &l.name) else {
                    continue;
                };
                let id = match &spec.team {
                    Some(team) => match path::team_scoped_id(team, id) {
                        Some(id) => id,
                        None => continue,
                    },
                    None => id,
                };
                if pattern.admits(id) {
                    out.push((kind, id.to_string(), l.clone()));
                }
            }
        }
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(out)
    }

    /// Entries a listing cannot serve: ARNs and forced syncs (one batch read of the current
    /// versions), stages and version ids (one read each).
    async fn read_direct(
        &self,
        view: &View,
        direct: &[&Wanted],
    ) -> Result<BTreeMap<(String, VersionSelector), (Option<String>, Fetched)>, ResolveError> {
        let api = view.api(&self.calls);
        let current: Vec<String> = direct
            .iter()
            .filter(|w| is_current(&w.version))
            .map(|w| w.secret_id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let read = api.batch_get(&current).await?;
        view.keep_read(&read);
        let mut out = BTreeMap::new();
        for w in direct {
            let r = if is_current(&w.version) {
                read[&w.secret_id].clone()
            } else {
                api.get_one(&w.secret_id, &w.version).await?
            };
            out.insert((w.secret_id.clone(), w.version.clone()), r);
        }
        Ok(out)
    }

    /// Tells the view which explicit names a reader will check, before it reads: at start,
    /// every binding's names are registered first, so that one check serves them all.
    pub async fn register(
        &self,
        reader: &ReaderKey,
        grant: &Grant,
        spec: &AirflowSecretBindingSpec,
    ) {
        let names: BTreeSet<String> = wanted(spec)
            .iter()
            .filter(|w| by_listing(w) && grant.admits(&w.secret_id).is_ok())
            .map(|w| w.secret_id.clone())
            .collect();
        if !names.is_empty() {
            self.view(&grant.origin).await.register(reader, names);
        }
    }

    /// Forgets a reader in every view but `except` (its binding was deleted, reads through
    /// another origin now, or may not read at all): its values leave those caches.
    pub fn forget_except(&self, reader: &ReaderKey, except: Option<&Origin>) {
        let views: Vec<Arc<View>> = self
            .views
            .lock()
            .expect("views")
            .iter()
            .filter(|(o, _)| Some(*o) != except)
            .map(|(_, v)| v.clone())
            .collect();
        for v in views.iter().filter(|v| v.knows(reader)) {
            v.forget(reader);
        }
    }

    /// Forgets a reader in every view.
    pub fn forget(&self, reader: &ReaderKey) {
        self.forget_except(reader, None);
    }

    /// `DescribeSecret` of one id of an origin (an event's check): its current version, no
    /// value.
    pub async fn describe(
        &self,
        origin: &Origin,
        secret_id: &str,
    ) -> Result<Described, ResolveError> {
        self.view(origin)
            .await
            .api(&self.calls)
            .describe(secret_id)
            .await
    }

    /// Records a check's result in the origin's view ([`View::apply_described`]): changed
    /// versions are then reported by [`SecretsManager::take_changed`]. Returns whether a cached
    /// listing gained or lost the secret.
    pub async fn apply_described(
        &self,
        origin: &Origin,
        current: Option<&str>,
        aliases: &[String],
        names: &[String],
    ) -> bool {
        self.view(origin)
            .await
            .apply_described(current, aliases, names)
    }

    /// Every source's view, as now (taken out of the lock: callers await on them).
    fn all_views(&self) -> Vec<Arc<View>> {
        self.views
            .lock()
            .expect("views")
            .values()
            .cloned()
            .collect()
    }

    /// Names (of any source) whose current version a listing or check found changed since the
    /// last call: the bindings that read them are due for a refresh now.
    pub fn take_changed(&self) -> BTreeSet<String> {
        let views = self.all_views();
        views.iter().flat_map(|v| v.take_changed()).collect()
    }

    /// Runs every view's background refresh once ([`View::refresh`]), all sources at the same
    /// time (a hung one does not hold up the others).
    pub async fn refresh(&self) {
        let views = self.all_views();
        futures::future::join_all(views.iter().map(|v| v.refresh(&self.calls))).await;
    }

    /// Readers (of any source) of the listings whose members changed since the last call, or
    /// whose refresh began or stopped failing ([`View::take_woken`]).
    pub fn take_woken(&self) -> BTreeSet<ReaderKey> {
        let views = self.all_views();
        views.iter().flat_map(|v| v.take_woken()).collect()
    }

    /// Whether a binding must re-read on its own interval instead of being woken by the
    /// background refresh: some of its entries cannot be checked by a listing (ARNs, staged
    /// or pinned versions), or its source refuses listing by name.
    pub fn polls(&self, origin: &Origin, spec: &AirflowSecretBindingSpec) -> bool {
        let wanted = wanted(spec);
        // An existing view only: a binding that never read (Backend mode) needs no client.
        let denied = || {
            self.views
                .lock()
                .expect("views")
                .get(origin)
                .is_some_and(|v| v.listing_denied())
        };
        wanted.iter().any(|w| !by_listing(w)) || (!wanted.is_empty() && denied())
    }

    /// Sizes of every view's caches added up: (listings, versions, values).
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        self.views
            .lock()
            .expect("views")
            .values()
            .map(|v| v.sizes())
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }
}

/// The team a connection or variable of the spec is scoped to (config has no team form).
fn team_of(spec: &AirflowSecretBindingSpec, kind: EntryKind) -> Option<String> {
    (kind != EntryKind::Config)
        .then(|| spec.team.clone())
        .flatten()
}

/// The discovery listings of a spec: (kind, spec field, prefix, name filter). Airflow looks up
/// `<prefix><sep><team>--<id>` for a team, and only under a prefix that is not empty.
fn listings(spec: &AirflowSecretBindingSpec) -> Vec<(EntryKind, &'static str, String, String)> {
    let Some(d) = &spec.discovery else {
        return vec![];
    };
    let mut out = Vec::new();
    for (kind, field, prefix) in [
        (
            EntryKind::Connection,
            "connectionsPrefix",
            &d.connections_prefix,
        ),
        (EntryKind::Variable, "variablesPrefix", &d.variables_prefix),
    ] {
        let Some(prefix) = prefix else { continue };
        let filter = match (&spec.team, path::list_filter(prefix, &d.sep)) {
            (Some(team), Some(f)) => format!("{f}{team}{}", path::TEAM_SEP),
            (Some(_), None) => continue,
            (None, f) => f.unwrap_or_default(),
        };
        out.push((kind, field, prefix.clone(), filter));
    }
    out
}

/// Discovery listings the grant refuses (broader than what it allows), as AccessDenied status
/// lines naming the spec field: nothing is listed for them.
pub fn refused_listings(
    grant: &Grant,
    spec: &AirflowSecretBindingSpec,
) -> Vec<crate::api::EntryStatus> {
    let Some(allowed) = &grant.allowed else {
        return vec![];
    };
    listings(spec)
        .into_iter()
        .filter(|(_, _, _, filter)| !allowed.may_list(filter))
        .map(|(kind, field, prefix, filter)| crate::api::EntryStatus {
            kind,
            name: format!("spec.discovery.{field}"),
            env_name: None,
            secret_id: prefix,
            version_id: None,
            state: EntryState::AccessDenied,
            message: Some(allowed.listing_refused(field, &filter)),
        })
        .collect()
}

/// The explicit entries the grant admits, and why each refused secret id is refused.
fn admitted(grant: &Grant, wanted: Vec<Wanted>) -> (Vec<Wanted>, BTreeMap<String, String>) {
    let mut refused = BTreeMap::new();
    for w in &wanted {
        if let Err(why) = grant.admits(&w.secret_id) {
            refused.insert(w.secret_id.clone(), why);
        }
    }
    (wanted, refused)
}

/// The explicit entries of a spec, in order.
fn wanted(spec: &AirflowSecretBindingSpec) -> Vec<Wanted> {
    let mut out = Vec::new();
    for c in &spec.connections {
        out.push(Wanted {
            kind: EntryKind::Connection,
            name: c.conn_id.clone(),
            config: None,
            secret_id: c.secret_id.clone(),
            version: c.version.clone(),
        });
    }
    for v in &spec.variables {
        out.push(Wanted {
            kind: EntryKind::Variable,
            name: v.key.clone(),
            config: None,
            secret_id: v.secret_id.clone(),
            version: v.version.clone(),
        });
    }
    for c in &spec.config {
        out.push(Wanted {
            kind: EntryKind::Config,
            name: format!("{}.{}", c.section, c.key),
            config: Some((c.section.clone(), c.key.clone())),
            secret_id: c.secret_id.clone(),
            version: c.version.clone(),
        });
    }
    out
}

/// Whether a listing can tell an explicit entry's current version (a name, not an ARN, and
/// the current version).
fn by_listing(w: &Wanted) -> bool {
    is_current(&w.version) && !w.secret_id.starts_with("arn:")
}

/// Whether a version selector means `AWSCURRENT`.
fn is_current(v: &VersionSelector) -> bool {
    v.version_id.is_none() && v.version_stage.as_deref().is_none_or(|s| s == "AWSCURRENT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Allowed;

    fn grant(prefixes: &[&str]) -> Grant {
        Grant {
            origin: Origin::default(),
            allowed: Some(Allowed {
                source: "teams".into(),
                namespace: "a".into(),
                name_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
                arn_patterns: vec![],
            }),
        }
    }

    fn spec(v: serde_json::Value) -> AirflowSecretBindingSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_listing_broader_than_the_grant_is_refused_naming_the_field() {
        let s = spec(serde_json::json!({
            "discovery": {"connectionsPrefix": "airflow", "variablesPrefix": "airflow/a/variables/"},
            "target": {"injection": "SecretOnly"}
        }));
        let refused = refused_listings(&grant(&["airflow/a/"]), &s);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].name, "spec.discovery.connectionsPrefix");
        assert_eq!(refused[0].state, EntryState::AccessDenied);
        assert!(
            refused[0]
                .message
                .as_ref()
                .unwrap()
                .contains("lists \"airflow/\"")
        );
        // Unrestricted, or allowed: nothing refused.
        assert!(refused_listings(&Grant::inline(&s.source), &s).is_empty());
        assert!(refused_listings(&grant(&[""]), &s).is_empty());
    }

    #[test]
    fn a_team_lists_under_its_own_name_which_a_grant_may_allow() {
        let s = spec(serde_json::json!({
            "team": "ml-team",
            "discovery": {"connectionsPrefix": "airflow/connections"},
            "target": {"injection": "SecretOnly"}
        }));
        assert_eq!(
            listings(&s)[0].3,
            format!("airflow/connections/ml-team{}", path::TEAM_SEP)
        );
        assert!(refused_listings(&grant(&["airflow/connections/ml-team--"]), &s).is_empty());
        assert_eq!(
            refused_listings(&grant(&["airflow/connections/other--"]), &s).len(),
            1
        );
    }

    #[test]
    fn refused_explicit_ids_are_set_apart_with_their_reason() {
        let s = spec(serde_json::json!({
            "connections": [
                {"connId": "mine", "secretId": "airflow/a/db"},
                {"connId": "theirs", "secretId": "airflow/b/db"}
            ],
            "target": {"injection": "SecretOnly"}
        }));
        let (all, refused) = admitted(&grant(&["airflow/a/"]), wanted(&s));
        assert_eq!(all.len(), 2);
        assert_eq!(refused.keys().collect::<Vec<_>>(), ["airflow/b/db"]);
    }
}
