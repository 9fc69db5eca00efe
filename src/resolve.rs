//! Reading a binding's entries from AWS Secrets Manager, cheaply.
//!
//! One process-wide [`SecretsManager`] serves every binding: one SDK client per source (region,
//! role, endpoint), and a value cache keyed by (source, secret ARN or name, version id), so a
//! value is fetched again only when the secret's current version changed.
//!
//! - Discovery lists secrets by prefix with `ListSecrets` (at most 100 per page, following
//!   `NextToken`); each listed secret carries its version → stages map, which tells the current
//!   version without reading any value. Only secrets whose current version is not cached are read.
//! - Values are read with `BatchGetSecretValue` (at most 20 ids per call, per-id errors kept per
//!   entry), or `GetSecretValue` for an explicit `versionStage` / `versionId`.
//! - Explicit entries without a version are re-read with `BatchGetSecretValue` on each refresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use crate::airflow::path;
use crate::airflow::pattern::LookupPattern;
use crate::api::{
    AirflowSecretBindingSpec, EntryKind, EntryState, EntryStatus, Source, VersionSelector,
};
use crate::entries::{Fetched, ResolvedEntry};
use crate::metrics::{CallLabels, Calls};

/// AWS's limit on ids per `BatchGetSecretValue` call.
pub const BATCH_LIMIT: usize = 20;
/// AWS's limit on `ListSecrets` page size.
pub const LIST_PAGE: i32 = 100;

/// A failure that stops the whole resolution (the last good Secret is kept).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("Secrets Manager {operation} failed: {message}")]
    Call {
        operation: &'static str,
        message: String,
    },
}

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SourceKey {
    region: Option<String>,
    role_arn: Option<String>,
    external_id: Option<String>,
    endpoint: Option<String>,
}

impl From<&Source> for SourceKey {
    fn from(s: &Source) -> Self {
        SourceKey {
            region: s.region.clone(),
            role_arn: s.role_arn.clone(),
            external_id: s.external_id.clone(),
            endpoint: s.endpoint.clone(),
        }
    }
}

/// The process-wide Secrets Manager component.
pub struct SecretsManager {
    base: aws_config::SdkConfig,
    clients: Mutex<HashMap<SourceKey, Client>>,
    /// (source, secret name or ARN, version id) → what was read.
    values: Mutex<HashMap<(SourceKey, String, String), Fetched>>,
    /// Calls made, by operation and outcome (`success` / `error`), as AWS bills them.
    pub calls: Calls,
}

/// A secret that discovery found.
struct Listed {
    name: String,
    id: String,
    current_version: Option<String>,
}

impl SecretsManager {
    /// Loads the operator's own AWS configuration (environment, profile, IRSA, Pod Identity).
    pub async fn from_env() -> Self {
        let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::new(base)
    }

    pub fn new(base: aws_config::SdkConfig) -> Self {
        SecretsManager {
            base,
            clients: Mutex::default(),
            values: Mutex::default(),
            calls: Calls::default(),
        }
    }

    /// The client for a source; built once (an assumed role's credentials refresh themselves).
    async fn client(&self, source: &Source) -> Client {
        let key = SourceKey::from(source);
        if let Some(c) = self.clients.lock().expect("clients lock").get(&key) {
            return c.clone();
        }
        let mut b = aws_sdk_secretsmanager::config::Builder::from(&self.base);
        if let Some(region) = &source.region {
            b = b.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &source.endpoint {
            b = b.endpoint_url(endpoint.clone());
        }
        if let Some(role) = &source.role_arn {
            let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(
                    source
                        .role_session_name
                        .clone()
                        .unwrap_or_else(|| "airflow-secrets-operator".into()),
                )
                .configure(&self.base);
            if let Some(region) = &source.region {
                p = p.region(aws_config::Region::new(region.clone()));
            }
            if let Some(id) = &source.external_id {
                p = p.external_id(id.clone());
            }
            b = b.credentials_provider(
                aws_sdk_secretsmanager::config::SharedCredentialsProvider::new(p.build().await),
            );
        }
        let client = Client::from_conf(b.build());
        self.clients
            .lock()
            .expect("clients lock")
            .entry(key)
            .or_insert(client)
            .clone()
    }

    fn count(&self, operation: &'static str, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        self.calls
            .get_or_create(&CallLabels {
                operation,
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Resolves every entry of a binding: explicit entries first (in spec order), then discovered
    /// ones (sorted by id). Lookup patterns that cannot be evaluated exactly are reported by the
    /// caller; here they must already be compiled.
    pub async fn resolve(
        &self,
        spec: &AirflowSecretBindingSpec,
        patterns: &DiscoveryPatterns,
    ) -> Result<Vec<ResolvedEntry>, ResolveError> {
        let client = self.client(&spec.source).await;
        let source = SourceKey::from(&spec.source);
        let mut wanted: Vec<Wanted> = Vec::new();
        for c in &spec.connections {
            wanted.push((
                EntryKind::Connection,
                c.conn_id.clone(),
                None,
                c.secret_id.clone(),
                c.version.clone(),
            ));
        }
        for v in &spec.variables {
            wanted.push((
                EntryKind::Variable,
                v.key.clone(),
                None,
                v.secret_id.clone(),
                v.version.clone(),
            ));
        }
        for c in &spec.config {
            wanted.push((
                EntryKind::Config,
                format!("{}.{}", c.section, c.key),
                Some((c.section.clone(), c.key.clone())),
                c.secret_id.clone(),
                c.version.clone(),
            ));
        }

        // Discovery: list, then keep only what Airflow would look up.
        let mut discovered: Vec<(EntryKind, Listed)> = Vec::new();
        if let Some(d) = &spec.discovery {
            for (kind, prefix, pattern) in [
                (
                    EntryKind::Connection,
                    &d.connections_prefix,
                    &patterns.connections,
                ),
                (
                    EntryKind::Variable,
                    &d.variables_prefix,
                    &patterns.variables,
                ),
            ] {
                let Some(prefix) = prefix else { continue };
                if matches!(pattern, Lookup::Unusable) {
                    continue;
                }
                for listed in self.list(&client, prefix, &d.sep).await? {
                    if pattern.admits(&listed.id) {
                        discovered.push((kind, listed));
                    }
                }
            }
        }
        discovered.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));

        // Values to read: explicit AWSCURRENT entries always; discovered ones when their current
        // version is not cached.
        let mut to_batch: Vec<String> = Vec::new();
        for (_, _, _, secret_id, version) in &wanted {
            if version.version_id.is_none()
                && version
                    .version_stage
                    .as_deref()
                    .is_none_or(|s| s == "AWSCURRENT")
            {
                to_batch.push(secret_id.clone());
            }
        }
        for (_, l) in &discovered {
            let cached = l.current_version.as_ref().is_some_and(|v| {
                self.values.lock().expect("values lock").contains_key(&(
                    source.clone(),
                    l.name.clone(),
                    v.clone(),
                ))
            });
            if !cached {
                to_batch.push(l.name.clone());
            }
        }
        to_batch.sort();
        to_batch.dedup();
        let batched = self.batch_get(&client, &source, &to_batch).await?;

        let mut out = Vec::new();
        for (kind, name, config, secret_id, version) in wanted {
            let (version_id, outcome) = match batched.get(&secret_id) {
                Some(r) if is_current(&version) => r.clone(),
                _ => self.get_one(&client, &source, &secret_id, &version).await?,
            };
            out.push(ResolvedEntry {
                kind,
                name,
                config,
                secret_id,
                version_id,
                outcome,
            });
        }
        for (kind, l) in discovered {
            let (version_id, outcome) = match batched.get(&l.name) {
                Some(r) => r.clone(),
                None => {
                    let v = l.current_version.clone().unwrap_or_default();
                    let cached = self
                        .values
                        .lock()
                        .expect("values lock")
                        .get(&(source.clone(), l.name.clone(), v.clone()))
                        .cloned();
                    (
                        Some(v),
                        cached.unwrap_or(Fetched::Problem(
                            EntryState::Error,
                            "value missing from cache".into(),
                        )),
                    )
                }
            };
            out.push(ResolvedEntry {
                kind,
                name: l.id,
                config: None,
                secret_id: l.name,
                version_id,
                outcome,
            });
        }
        Ok(out)
    }

    async fn list(
        &self,
        client: &Client,
        prefix: &str,
        sep: &str,
    ) -> Result<Vec<Listed>, ResolveError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = client
                .list_secrets()
                .max_results(LIST_PAGE)
                .set_next_token(token.clone());
            if let Some(filter) = path::list_filter(prefix, sep) {
                req = req.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .values(filter)
                        .build(),
                );
            }
            let page = req.send().await;
            self.count("ListSecrets", page.is_ok());
            let page = page.map_err(|e| ResolveError::Call {
                operation: "ListSecrets",
                message: sdk_message(&e),
            })?;
            for s in page.secret_list() {
                let Some(name) = s.name() else { continue };
                let Some(id) = path::id_for_secret(prefix, sep, name) else {
                    continue;
                };
                let current_version = s.secret_versions_to_stages().and_then(|m| {
                    m.iter()
                        .find(|(_, stages)| stages.iter().any(|st| st == "AWSCURRENT"))
                        .map(|(v, _)| v.clone())
                });
                out.push(Listed {
                    name: name.to_string(),
                    id: id.to_string(),
                    current_version,
                });
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// `BatchGetSecretValue` in chunks of 20; returns id → (version id, outcome) for every id
    /// asked, per-id errors included.
    async fn batch_get(
        &self,
        client: &Client,
        source: &SourceKey,
        ids: &[String],
    ) -> Result<BTreeMap<String, (Option<String>, Fetched)>, ResolveError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(BATCH_LIMIT) {
            let resp = client
                .batch_get_secret_value()
                .set_secret_id_list(Some(chunk.to_vec()))
                .send()
                .await;
            self.count("BatchGetSecretValue", resp.is_ok());
            let resp = resp.map_err(|e| ResolveError::Call {
                operation: "BatchGetSecretValue",
                message: sdk_message(&e),
            })?;
            for v in resp.secret_values() {
                let fetched = match (v.secret_string(), v.secret_binary()) {
                    (Some(s), _) => Fetched::Value(s.to_string()),
                    _ => Fetched::BinaryOnly,
                };
                let version = v.version_id().map(str::to_string);
                // The response names the secret by name and ARN; the request may have used either.
                for asked in chunk
                    .iter()
                    .filter(|a| Some(a.as_str()) == v.name() || Some(a.as_str()) == v.arn())
                {
                    if let (Some(name), Some(version)) = (v.name(), &version) {
                        self.values.lock().expect("values lock").insert(
                            (source.clone(), name.to_string(), version.clone()),
                            fetched.clone(),
                        );
                    }
                    out.insert(asked.clone(), (version.clone(), fetched.clone()));
                }
            }
            for e in resp.errors() {
                let Some(id) = e.secret_id() else { continue };
                out.insert(
                    id.to_string(),
                    (None, problem(e.error_code().unwrap_or_default())),
                );
            }
            for asked in chunk {
                out.entry(asked.clone()).or_insert((
                    None,
                    Fetched::Problem(
                        EntryState::NotFound,
                        "Secrets Manager returned nothing for this id".into(),
                    ),
                ));
            }
        }
        Ok(out)
    }

    async fn get_one(
        &self,
        client: &Client,
        source: &SourceKey,
        secret_id: &str,
        version: &VersionSelector,
    ) -> Result<(Option<String>, Fetched), ResolveError> {
        if let Some(v) = &version.version_id
            && let Some(hit) = self.values.lock().expect("values lock").get(&(
                source.clone(),
                secret_id.to_string(),
                v.clone(),
            ))
        {
            return Ok((Some(v.clone()), hit.clone()));
        }
        let resp = client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version.version_id.clone())
            .set_version_stage(version.version_stage.clone())
            .send()
            .await;
        self.count("GetSecretValue", resp.is_ok());
        match resp {
            Ok(r) => {
                let fetched = match r.secret_string() {
                    Some(s) => Fetched::Value(s.to_string()),
                    None => Fetched::BinaryOnly,
                };
                if let Some(v) = r.version_id() {
                    self.values.lock().expect("values lock").insert(
                        (source.clone(), secret_id.to_string(), v.to_string()),
                        fetched.clone(),
                    );
                }
                Ok((r.version_id().map(str::to_string), fetched))
            }
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(s))
                    .map(str::to_string);
                match code {
                    Some(code) => Ok((None, problem(&code))),
                    None => Err(ResolveError::Call {
                        operation: "GetSecretValue",
                        message: sdk_message(&e),
                    }),
                }
            }
        }
    }
}

/// An explicit entry: kind, name, (section, key) for config, secret id, version.
type Wanted = (
    EntryKind,
    String,
    Option<(String, String)>,
    String,
    VersionSelector,
);

/// The lookup pattern of one kind of discovery.
#[derive(Debug, Default, Clone)]
pub enum Lookup {
    /// No pattern: every id under the prefix.
    #[default]
    All,
    /// Ids the pattern matches at their start.
    Matching(LookupPattern),
    /// The pattern cannot be evaluated exactly: nothing is discovered (reported in status).
    Unusable,
}

impl Lookup {
    fn admits(&self, id: &str) -> bool {
        match self {
            Lookup::All => true,
            Lookup::Matching(p) => p.matches(id),
            Lookup::Unusable => false,
        }
    }
}

/// Compiled lookup patterns of a binding's discovery.
#[derive(Debug, Default, Clone)]
pub struct DiscoveryPatterns {
    pub connections: Lookup,
    pub variables: Lookup,
}

impl DiscoveryPatterns {
    /// Compiles the binding's lookup patterns; one that cannot be used becomes an Invalid status
    /// line naming the field.
    pub fn compile(spec: &AirflowSecretBindingSpec) -> (DiscoveryPatterns, Vec<EntryStatus>) {
        let mut patterns = DiscoveryPatterns::default();
        let mut problems = Vec::new();
        let Some(d) = &spec.discovery else {
            return (patterns, problems);
        };
        for (kind, field, pattern, prefix) in [
            (
                EntryKind::Connection,
                "connectionsLookupPattern",
                &d.connections_lookup_pattern,
                &d.connections_prefix,
            ),
            (
                EntryKind::Variable,
                "variablesLookupPattern",
                &d.variables_lookup_pattern,
                &d.variables_prefix,
            ),
        ] {
            let Some(p) = pattern else { continue };
            let lookup = match LookupPattern::new(p) {
                Ok(compiled) => Lookup::Matching(compiled),
                Err(e) => {
                    problems.push(EntryStatus {
                        kind,
                        name: format!("spec.discovery.{field}"),
                        env_name: None,
                        secret_id: prefix.clone().unwrap_or_default(),
                        version_id: None,
                        state: EntryState::Invalid,
                        message: Some(format!("{e}; nothing is discovered with this prefix")),
                    });
                    Lookup::Unusable
                }
            };
            match kind {
                EntryKind::Connection => patterns.connections = lookup,
                _ => patterns.variables = lookup,
            }
        }
        (patterns, problems)
    }
}

/// Whether a version selector means `AWSCURRENT` (what `BatchGetSecretValue` returns).
fn is_current(v: &VersionSelector) -> bool {
    v.version_id.is_none() && v.version_stage.as_deref().is_none_or(|s| s == "AWSCURRENT")
}

/// A per-id error code as an entry state; the message names the code, never a value.
///
/// Codes that Airflow's backend treats as "not found" (a secret scheduled for deletion answers
/// InvalidRequestException) are NotFound here too, so the entry leaves the Secret as it leaves
/// Airflow's view; other errors keep the last good value.
fn problem(code: &str) -> Fetched {
    let state = match code {
        "ResourceNotFoundException" | "InvalidRequestException" | "InvalidParameterException" => {
            EntryState::NotFound
        }
        "AccessDeniedException" => EntryState::AccessDenied,
        _ => EntryState::Error,
    };
    Fetched::Problem(state, format!("Secrets Manager: {code}"))
}

fn sdk_message<E: std::error::Error + 'static>(
    e: &aws_sdk_secretsmanager::error::SdkError<E>,
) -> String {
    use std::fmt::Write;
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_states_as_airflow_sees_them() {
        let state = |code: &str| match problem(code) {
            Fetched::Problem(s, m) => {
                assert!(m.contains(code));
                s
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(state("ResourceNotFoundException"), EntryState::NotFound);
        assert_eq!(
            state("InvalidRequestException"),
            EntryState::NotFound,
            "scheduled for deletion"
        );
        assert_eq!(state("AccessDeniedException"), EntryState::AccessDenied);
        assert_eq!(state("DecryptionFailure"), EntryState::Error);
        assert_eq!(state("ThrottlingException"), EntryState::Error);
    }
}
