//! One binding's content, computed without I/O: resolved entries become the managed Secret's
//! data (split across several Secrets when it exceeds what one Secret holds), the env entries
//! that refer to it, the content hash that drives rollouts, and the per-entry status lines.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::airflow::connection::{Rejection, connection_value, plain_value};
use crate::airflow::names::{self, check_env_name, is_secret_key};
use crate::api::{EntryKind, EntryState, EntryStatus, Injection};
use crate::entries::{Fetched, ResolvedEntry};

/// Annotation of the managed Secret that carries its content hash.
pub const HASH_ANNOTATION: &str = "airflow-secrets.io/content-hash";

/// One env entry: `name` from key `secret_key` of the managed Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvBinding {
    pub env_name: String,
    pub secret_key: String,
}

/// The desired state of one binding's Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSecret {
    /// Secret key → value.
    pub data: BTreeMap<String, String>,
    /// Env entries, sorted by name.
    pub env: Vec<EnvBinding>,
    /// SHA-256 over keys, values and env names: equal content, equal hash, on every run.
    pub content_hash: String,
    /// One line per entry, in the order given.
    pub entries: Vec<EntryStatus>,
}

/// One entry's value as Airflow would read it, with warnings; or the state and message that
/// keep it out. `held`: the converted value the managed Secret holds for a [`Fetched::Held`]
/// entry.
fn convert(
    entry: &ResolvedEntry,
    held: Option<&String>,
    env_name: &str,
    injection: Injection,
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> Result<(String, Vec<String>), (EntryState, String)> {
    if entry.team.is_some() {
        if let Some(why) = names::team_refusal(&entry.name) {
            return Err((EntryState::Invalid, why));
        }
        if injection != Injection::KubernetesBackend
            && let Some(why) = names::team_env_refusal(&entry.name)
        {
            return Err((EntryState::Unrepresentable, why));
        }
    }
    let (secret, converted) = match (&entry.outcome, held) {
        (Fetched::Problem(state, msg), _) => return Err((*state, msg.clone())),
        (Fetched::BinaryOnly, _) => {
            return Err((
                EntryState::Invalid,
                "the secret holds SecretBinary only; Airflow reads SecretString and treats it as not found".into(),
            ));
        }
        (Fetched::Held, Some(value)) => (value, true),
        (Fetched::Held, None) => {
            return Err((
                EntryState::Error,
                "the value was not read; it is read again at the next refresh".into(),
            ));
        }
        (Fetched::Converted(secret), _) => (secret, true),
        (Fetched::Value(secret), _) => (secret, false),
    };
    check_env_name(env_name).map_err(|e| (EntryState::Unrepresentable, e.to_string()))?;
    let converted = match entry.kind {
        _ if converted => Ok((secret.clone(), vec![])),
        EntryKind::Connection => {
            connection_value(secret, extra_conn_words).map(|c| (c.value, c.warnings))
        }
        _ => plain_value(secret).map(|v| (v, vec![])),
    }
    .map_err(|e| match e {
        Rejection::Absent(m) | Rejection::Invalid(m) => (EntryState::Invalid, m),
        Rejection::Unrepresentable(m) => (EntryState::Unrepresentable, m),
    })?;
    if injection == Injection::EnvFrom && !is_secret_key(env_name) {
        return Err((
            EntryState::Unrepresentable,
            names::NameError::SecretKey {
                name: env_name.to_string(),
            }
            .to_string(),
        ));
    }
    Ok(converted)
}

/// Env names claimed by more than one injectable entry: every claimant becomes Conflict.
/// Returns, per entry, whether it is in conflict.
fn mark_conflicts<'a>(
    env_names: impl Iterator<Item = Option<&'a str>>,
    statuses: &mut [EntryStatus],
) -> Vec<bool> {
    let mut claims: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut n = 0;
    for (i, name) in env_names.enumerate() {
        n = i + 1;
        if let Some(name) = name {
            claims.entry(name).or_default().push(i);
        }
    }
    let mut conflicted = vec![false; n];
    for (env_name, idx) in claims.iter().filter(|(_, idx)| idx.len() > 1) {
        let who: Vec<String> = idx
            .iter()
            .map(|i| format!("{:?} {:?}", statuses[*i].kind, statuses[*i].name))
            .collect();
        for i in idx {
            conflicted[*i] = true;
            statuses[*i].state = EntryState::Conflict;
            statuses[*i].message = Some(format!(
                "{env_name} is claimed by {}; none of them is injected",
                who.join(", ")
            ));
        }
    }
    conflicted
}

/// Maps resolved entries to the managed Secret with Airflow's semantics. Entries that cannot be
/// injected are reported and left out; entries that would land on the same env name are all left
/// out and reported as Conflict (never silently merged).
pub fn desired_secret(
    resolved: &[ResolvedEntry],
    injection: Injection,
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> DesiredSecret {
    desired_secret_holding(resolved, None, injection, extra_conn_words)
}

/// [`desired_secret`], where entries not read ([`Fetched::Held`]) take their converted value
/// from `held`, the data the managed Secret holds (key → value), without a copy of the entries.
pub fn desired_secret_holding(
    resolved: &[ResolvedEntry],
    held: Option<&BTreeMap<String, String>>,
    injection: Injection,
    extra_conn_words: &BTreeMap<String, Vec<String>>,
) -> DesiredSecret {
    struct Candidate {
        env_name: String,
        value: String,
        warnings: Vec<String>,
    }
    let mut statuses = Vec::with_capacity(resolved.len());
    let mut candidates: Vec<Option<Candidate>> = Vec::with_capacity(resolved.len());
    for entry in resolved {
        let env_name = env_name_of(entry);
        let mut status = EntryStatus {
            kind: entry.kind,
            name: entry.name.clone(),
            env_name: Some(env_name.clone()),
            secret_id: entry.secret_id.clone(),
            version_id: entry.version_id.clone(),
            state: EntryState::Synced,
            message: None,
        };
        let held_value = match entry.outcome {
            Fetched::Held => held.and_then(|d| d.get(&secret_key_for(&env_name))),
            _ => None,
        };
        let converted = convert(entry, held_value, &env_name, injection, extra_conn_words);
        match converted {
            Ok((value, warnings)) => {
                candidates.push(Some(Candidate {
                    env_name,
                    value,
                    warnings,
                }));
            }
            Err((state, message)) => {
                status.state = state;
                status.message = Some(message);
                candidates.push(None);
            }
        }
        statuses.push(status);
    }

    let conflicted = mark_conflicts(
        candidates
            .iter()
            .map(|c| c.as_ref().map(|c| c.env_name.as_str())),
        &mut statuses,
    );

    let mut data = BTreeMap::new();
    let mut env = Vec::new();
    for (i, c) in candidates.into_iter().enumerate() {
        let Some(c) = c else { continue };
        if conflicted[i] {
            continue;
        }
        let secret_key = secret_key_for(&c.env_name);
        if !c.warnings.is_empty() {
            statuses[i].message = Some(c.warnings.join("; "));
        }
        data.insert(secret_key.clone(), c.value);
        env.push(EnvBinding {
            env_name: c.env_name,
            secret_key,
        });
    }
    env.sort();
    let content_hash = content_hash(&data, &env);
    DesiredSecret {
        data,
        env,
        content_hash,
        entries: statuses,
    }
}

/// Entries that failed transiently (a Secrets Manager error) keep the value they had in the
/// managed Secret before (`previous`: key → value), so that one failing read never removes a
/// working connection from the agents. A refusal (`AccessDenied`, by IAM or by the binding's
/// source) is not transient: its value leaves at once, and status says so.
pub fn keep_last_good(desired: &mut DesiredSecret, previous: &BTreeMap<String, String>) {
    let mut changed = false;
    for entry in desired.entries.iter_mut() {
        if entry.state == EntryState::AccessDenied {
            if let Some(env_name) = &entry.env_name
                && previous.contains_key(&secret_key_for(env_name))
            {
                let why = entry.message.take().unwrap_or_default();
                entry.message = Some(format!("{why}; the value read before was removed"));
            }
            continue;
        }
        if entry.state != EntryState::Error {
            continue;
        }
        let Some(env_name) = &entry.env_name else {
            continue;
        };
        let key = secret_key_for(env_name);
        let Some(value) = previous.get(&key) else {
            continue;
        };
        if desired.data.contains_key(&key) || desired.env.iter().any(|e| &e.env_name == env_name) {
            continue;
        }
        desired.data.insert(key.clone(), value.clone());
        desired.env.push(EnvBinding {
            env_name: env_name.clone(),
            secret_key: key,
        });
        let why = entry.message.take().unwrap_or_default();
        entry.message = Some(format!("{why}; the last good value is kept"));
        changed = true;
    }
    if changed {
        desired.env.sort();
        desired.content_hash = content_hash(&desired.data, &desired.env);
    }
}

/// Linux's limit on one environment string (`NAME=value` and its NUL): MAX_ARG_STRLEN.
pub const MAX_ENV_STRING: usize = 128 * 1024;
/// What one container may receive from the operator in total: Linux allows argv + envp up to a
/// quarter of the stack limit (2 MiB with the usual 8 MiB); 256 KiB are left for the image's own
/// environment, the chart's env and the command line.
pub const MAX_ENV_TOTAL: usize = 2 * 1024 * 1024 - 256 * 1024;
/// Bytes of keys and values per managed Secret; Kubernetes refuses a Secret over 1 MiB of data,
/// and the request carries it base64-encoded, so parts stay well under it.
pub const SECRET_PART_BUDGET: usize = 900 * 1024;

/// Bytes one env entry takes in a process's environment.
pub fn env_bytes(env_name: &str, value: &str) -> usize {
    env_name.len() + 1 + value.len() + 1
}

/// Env delivery only: values that no process could receive as one environment variable are
/// reported as Unrepresentable and left out (the Secret could hold them, but the pods would not
/// start). Returns the bytes the remaining entries take in a container's environment.
pub fn enforce_env_limits(desired: &mut DesiredSecret) -> usize {
    let mut dropped = BTreeSet::new();
    for entry in desired.entries.iter_mut() {
        let Some(env_name) = &entry.env_name else {
            continue;
        };
        let key = secret_key_for(env_name);
        let Some(value) = desired.data.get(&key) else {
            continue;
        };
        let size = env_bytes(env_name, value);
        if size > MAX_ENV_STRING {
            entry.state = EntryState::Unrepresentable;
            entry.message = Some(format!(
                "{env_name} would be {size} bytes, over Linux's limit of {MAX_ENV_STRING} bytes for one environment variable; deliver it with target.injection SecretOnly and mount the Secret as a file"
            ));
            dropped.insert((env_name.clone(), key));
        }
    }
    if !dropped.is_empty() {
        for (env_name, key) in &dropped {
            desired.data.remove(key);
            desired.env.retain(|e| &e.env_name != env_name);
        }
        desired.content_hash = content_hash(&desired.data, &desired.env);
    }
    desired
        .env
        .iter()
        .map(|e| env_bytes(&e.env_name, &desired.data[&e.secret_key]))
        .sum()
}

/// One managed Secret: a name and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPart {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

/// One env entry of a binding's content, with the Secret that holds its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvRef {
    pub env_name: String,
    pub secret_name: String,
    pub secret_key: String,
}

/// A binding's content as written: one or more Secrets and the env entries referring to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub parts: Vec<SecretPart>,
    /// Sorted by env name; [`Content::env_refs`] says which part holds each key.
    pub env: Vec<EnvBinding>,
    /// Equal for equal content; the single-Secret hash is the one the first version wrote, so an
    /// upgrade rolls nothing.
    pub content_hash: String,
    /// Digest of the reads behind the data ([`crate::plan::held`]), written with each part.
    pub source_digest: String,
    /// `KubernetesBackend` delivery: one Secret per connection and variable.
    pub labelled: Vec<crate::plan::labelled::LabelledSecret>,
}

impl Content {
    /// The env entries with the part that holds each key: what an env delivery writes to the
    /// Deployments. Made only for that delivery (at 10,000 entries, megabytes the `SecretOnly`
    /// and `EnvFrom` deliveries never read).
    pub fn env_refs(&self) -> Vec<EnvRef> {
        // Parts are few: looking in each costs less than a map of every key.
        let home = |key: &str| {
            self.parts
                .iter()
                .find(|p| p.data.contains_key(key))
                .map(|p| p.name.clone())
                .expect("every env entry's key is in the data")
        };
        self.env
            .iter()
            .map(|e| EnvRef {
                env_name: e.env_name.clone(),
                secret_name: home(&e.secret_key),
                secret_key: e.secret_key.clone(),
            })
            .collect()
    }
}

/// Name of part `index` of the managed Secret `base`: `base`, `base-2`, `base-3`, …
pub fn part_name(base: &str, index: usize) -> String {
    if index == 0 {
        return base.to_string();
    }
    let suffix = format!("-{}", index + 1);
    let keep = base.len().min(253 - suffix.len());
    format!("{}{suffix}", base[..keep].trim_end_matches(['-', '.']))
}

/// Splits the content across Secrets of at most [`SECRET_PART_BUDGET`] bytes each, keys in
/// order; env entries point at the part that holds their key.
pub fn split(desired: DesiredSecret, base: &str) -> Content {
    let mut parts: Vec<SecretPart> = vec![SecretPart {
        name: base.to_string(),
        data: BTreeMap::new(),
    }];
    let mut used = 0;
    for (key, value) in desired.data {
        let size = key.len() + value.len();
        if used + size > SECRET_PART_BUDGET && !parts.last().expect("one part").data.is_empty() {
            parts.push(SecretPart {
                name: part_name(base, parts.len()),
                data: BTreeMap::new(),
            });
            used = 0;
        }
        used += size;
        let part = parts.last_mut().expect("one part");
        part.data.insert(key, value);
    }
    let content_hash = if parts.len() == 1 {
        desired.content_hash
    } else {
        let mut h = Sha256::new();
        h.update(desired.content_hash.as_bytes());
        for p in &parts {
            h.update(b"\0part\0");
            h.update(p.name.as_bytes());
            for k in p.data.keys() {
                h.update(b"\0");
                h.update(k.as_bytes());
            }
        }
        hex::encode(h.finalize())
    };
    Content {
        parts,
        env: desired.env,
        content_hash,
        source_digest: String::new(),
        labelled: Vec::new(),
    }
}

/// The env name an entry is injected as.
pub fn env_name_of(entry: &ResolvedEntry) -> String {
    match (&entry.kind, &entry.config) {
        (EntryKind::Connection, _) => {
            names::team_connection_env_name(entry.team.as_deref(), &entry.name)
        }
        (EntryKind::Variable, _) => {
            names::team_variable_env_name(entry.team.as_deref(), &entry.name)
        }
        (EntryKind::Config, Some((section, key))) => names::config_env_name(section, key),
        (EntryKind::Config, None) => names::config_env_name("", &entry.name),
    }
}

/// The Secret key for an env name: the name itself when a Secret key can carry it, else a stable
/// derived key (`env-<sha256 prefix>`), referenced by `secretKeyRef`.
pub fn secret_key_for(env_name: &str) -> String {
    if is_secret_key(env_name) {
        env_name.to_string()
    } else {
        format!(
            "env-{}",
            &hex::encode(Sha256::digest(env_name.as_bytes()))[..32]
        )
    }
}

/// Recomputes the content hash after entries were moved out of the content.
pub fn rehash(desired: &mut DesiredSecret) {
    desired.content_hash = content_hash(&desired.data, &desired.env);
}

fn content_hash(data: &BTreeMap<String, String>, env: &[EnvBinding]) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    for e in env {
        h.update(b"\0env\0");
        h.update(e.env_name.as_bytes());
        h.update(b"\0");
        h.update(e.secret_key.as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{Fetched, ResolvedEntry};

    fn entry(kind: EntryKind, name: &str, outcome: Fetched) -> ResolvedEntry {
        ResolvedEntry {
            kind,
            name: name.into(),
            config: None,
            secret_id: format!("airflow/x/{name}"),
            version_id: Some("v1".into()),
            outcome,
            team: None,
        }
    }
    fn val(s: &str) -> Fetched {
        Fetched::Value(s.into())
    }

    #[test]
    fn held_entries_take_the_value_the_secret_holds_as_it_is() {
        // The Secret holds the converted value (not converted again); an entry held without a
        // value in the data is an error, read again at the next refresh.
        let held = BTreeMap::from([(
            "AIRFLOW_CONN_KEPT".to_string(),
            "already converted".to_string(),
        )]);
        let resolved = [
            entry(EntryKind::Connection, "kept", Fetched::Held),
            entry(EntryKind::Connection, "lost", Fetched::Held),
            entry(EntryKind::Variable, "read", val("v")),
        ];
        let d = desired_secret_holding(&resolved, Some(&held), Injection::Env, &BTreeMap::new());
        assert_eq!(d.data["AIRFLOW_CONN_KEPT"], "already converted");
        assert_eq!(d.data["AIRFLOW_VAR_READ"], "v");
        assert!(!d.data.contains_key("AIRFLOW_CONN_LOST"));
        let states: Vec<EntryState> = d.entries.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [EntryState::Synced, EntryState::Error, EntryState::Synced]
        );
        // The same as the entries with the held values in them.
        let converted = [
            entry(
                EntryKind::Connection,
                "kept",
                Fetched::Converted("already converted".into()),
            ),
            resolved[1].clone(),
            resolved[2].clone(),
        ];
        assert_eq!(
            desired_secret(&converted, Injection::Env, &BTreeMap::new()),
            d
        );
    }

    #[test]
    fn values_land_under_their_env_names() {
        let d = desired_secret(
            &[
                entry(
                    EntryKind::Connection,
                    "warehouse",
                    val("postgres://u:p@h/db"),
                ),
                entry(EntryKind::Variable, "env", val("prod")),
                ResolvedEntry {
                    config: Some(("smtp".into(), "smtp_password".into())),
                    ..entry(EntryKind::Config, "smtp.smtp_password", val("pw"))
                },
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        assert_eq!(
            d.data.get("AIRFLOW_CONN_WAREHOUSE").map(String::as_str),
            Some("postgres://u:p@h/db")
        );
        assert_eq!(
            d.data.get("AIRFLOW_VAR_ENV").map(String::as_str),
            Some("prod")
        );
        assert_eq!(
            d.data
                .get("AIRFLOW__SMTP__SMTP_PASSWORD")
                .map(String::as_str),
            Some("pw")
        );
        assert!(d.entries.iter().all(|e| e.state == EntryState::Synced));
        assert_eq!(d.env.len(), 3);
    }

    #[test]
    fn case_collisions_are_reported_never_merged() {
        let d = desired_secret(
            &[
                entry(EntryKind::Connection, "my_db", val("postgres://a")),
                entry(EntryKind::Connection, "MY_DB", val("postgres://b")),
                entry(EntryKind::Connection, "other", val("postgres://c")),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        assert_eq!(d.data.len(), 1);
        assert_eq!(d.entries[0].state, EntryState::Conflict);
        assert_eq!(d.entries[1].state, EntryState::Conflict);
        assert!(
            d.entries[0]
                .message
                .as_ref()
                .unwrap()
                .contains("AIRFLOW_CONN_MY_DB")
        );
    }

    #[test]
    fn names_a_secret_key_cannot_carry_use_derived_keys_or_are_unrepresentable() {
        let e = [
            entry(EntryKind::Connection, "team/db", val("postgres://a")),
            entry(EntryKind::Variable, "café", val("x")),
        ];
        let d = desired_secret(&e, Injection::Env, &BTreeMap::new());
        assert_eq!(d.env[0].env_name, "AIRFLOW_CONN_TEAM/DB");
        assert!(d.env[0].secret_key.starts_with("env-"));
        assert_eq!(d.entries[1].state, EntryState::Unrepresentable);
        let d = desired_secret(&e, Injection::EnvFrom, &BTreeMap::new());
        assert_eq!(d.entries[0].state, EntryState::Unrepresentable);
        assert!(d.data.is_empty());
    }

    #[test]
    fn problems_are_reported_and_left_out() {
        let d = desired_secret(
            &[
                entry(
                    EntryKind::Connection,
                    "gone",
                    Fetched::Problem(EntryState::NotFound, "no such secret".into()),
                ),
                entry(EntryKind::Connection, "bin", Fetched::BinaryOnly),
                entry(EntryKind::Connection, "broken", val("{not json")),
                entry(EntryKind::Variable, "ok", val("")),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        let states: Vec<EntryState> = d.entries.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                EntryState::NotFound,
                EntryState::Invalid,
                EntryState::Invalid,
                EntryState::Synced
            ]
        );
        assert_eq!(d.data.len(), 1, "an empty variable is a value");
    }

    #[test]
    fn transient_errors_keep_the_last_good_value_refusals_do_not() {
        let ok = desired_secret(
            &[
                entry(EntryKind::Variable, "a", val("1")),
                entry(EntryKind::Variable, "b", val("2")),
                entry(EntryKind::Variable, "c", val("3")),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        let mut now = desired_secret(
            &[
                entry(
                    EntryKind::Variable,
                    "a",
                    Fetched::Problem(EntryState::Error, "Secrets Manager: HTTP 500".into()),
                ),
                entry(
                    EntryKind::Variable,
                    "b",
                    Fetched::Problem(EntryState::NotFound, "gone".into()),
                ),
                entry(
                    EntryKind::Variable,
                    "c",
                    Fetched::Problem(
                        EntryState::AccessDenied,
                        "Secrets Manager: AccessDeniedException".into(),
                    ),
                ),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        keep_last_good(&mut now, &ok.data);
        assert_eq!(
            now.data.get("AIRFLOW_VAR_A").map(String::as_str),
            Some("1"),
            "kept"
        );
        assert!(
            !now.data.contains_key("AIRFLOW_VAR_B"),
            "a deleted secret is not kept"
        );
        assert!(
            !now.data.contains_key("AIRFLOW_VAR_C"),
            "a refused secret is not kept"
        );
        let message = |i: usize| now.entries[i].message.clone().unwrap();
        assert!(message(0).contains("last good value is kept"));
        assert!(message(2).contains("value read before was removed"));
        assert_eq!(now.env.len(), 1);
        let only_a = desired_secret(
            &[entry(EntryKind::Variable, "a", val("1"))],
            Injection::Env,
            &BTreeMap::new(),
        );
        assert_eq!(
            now.content_hash, only_a.content_hash,
            "same content, same hash: no rollout"
        );
    }

    #[test]
    fn hash_is_deterministic_and_content_sensitive() {
        let a = [
            entry(EntryKind::Variable, "a", val("1")),
            entry(EntryKind::Variable, "b", val("2")),
        ];
        let b = [
            entry(EntryKind::Variable, "b", val("2")),
            entry(EntryKind::Variable, "a", val("1")),
        ];
        let h =
            |e: &[ResolvedEntry]| desired_secret(e, Injection::Env, &BTreeMap::new()).content_hash;
        assert_eq!(h(&a), h(&b), "order of entries does not matter");
        assert_ne!(
            h(&a),
            h(&[
                entry(EntryKind::Variable, "a", val("1")),
                entry(EntryKind::Variable, "b", val("3"))
            ])
        );
        // Moving bytes between key and value changes the hash.
        assert_ne!(
            h(&[entry(EntryKind::Variable, "ab", val("c"))]),
            h(&[entry(EntryKind::Variable, "a", val("bc"))])
        );
    }

    #[test]
    fn status_never_holds_values() {
        let canary = "CANARY-ω-42";
        let d = desired_secret(
            &[
                entry(
                    EntryKind::Connection,
                    "a",
                    val(&format!(r#"{{"conn_type":"x","port":"{canary}"}}"#)),
                ),
                entry(
                    EntryKind::Connection,
                    "b",
                    val(&format!(r#"{{"conn_type":"x","dropped":"{canary}"}}"#)),
                ),
                entry(EntryKind::Variable, "c", val(canary)),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        let text = serde_json::to_string(&d.entries).unwrap();
        assert!(!text.contains("CANARY"), "{text}");
    }

    #[test]
    fn values_over_one_env_string_are_unrepresentable() {
        let mut d = desired_secret(
            &[
                entry(EntryKind::Variable, "big", val(&"x".repeat(MAX_ENV_STRING))),
                entry(EntryKind::Variable, "small", val("1")),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        let bytes = enforce_env_limits(&mut d);
        assert_eq!(d.entries[0].state, EntryState::Unrepresentable);
        assert!(d.entries[0].message.as_ref().unwrap().contains("131072"));
        assert_eq!(d.data.len(), 1);
        assert_eq!(bytes, env_bytes("AIRFLOW_VAR_SMALL", "1"));
    }

    #[test]
    fn content_over_one_secret_is_split_and_env_follows_the_key() {
        let resolved: Vec<ResolvedEntry> = (0..20)
            .map(|i| {
                entry(
                    EntryKind::Variable,
                    &format!("v{i:02}"),
                    val(&"x".repeat(60_000)),
                )
            })
            .collect();
        let d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        let single = d.content_hash.clone();
        let c = split(d, "big-airflow");
        assert_eq!(c.parts.len(), 2);
        assert_eq!(c.parts[0].name, "big-airflow");
        assert_eq!(c.parts[1].name, "big-airflow-2");
        for p in &c.parts {
            let size: usize = p.data.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= SECRET_PART_BUDGET, "{size}");
        }
        for e in &c.env_refs() {
            let part = c.parts.iter().find(|p| p.name == e.secret_name).unwrap();
            assert!(part.data.contains_key(&e.secret_key));
        }
        assert_eq!(c.env_refs().len(), 20);
        assert_ne!(c.content_hash, single, "the split is part of the content");
        // One part: the hash is the single-Secret hash, as before splitting existed.
        let small = desired_secret(&resolved[..2], Injection::Env, &BTreeMap::new());
        let h = small.content_hash.clone();
        assert_eq!(split(small, "s").content_hash, h);
        assert!(part_name(&"a".repeat(253), 1).len() <= 253);
    }
}
