//! The `KubernetesBackend` delivery, computed without I/O: one Secret per connection and
//! variable, labelled and keyed exactly as Airflow's `KubernetesSecretsBackend`
//! (apache-airflow-providers-cncf-kubernetes) looks them up — it lists Secrets of its namespace
//! with the selector `<label>=<id>` (and `!airflow.apache.org/team` for global lookups) and reads
//! data key `value` — and the config options that point the workloads at that backend.
//!
//! The value is the same string the env delivery injects (Airflow reads both the same way), so
//! the conversion, the per-entry states and the content digest are shared with the env
//! delivery; only where the values land differs. A rotation rewrites one Secret; the workloads'
//! pod templates carry only the backend options, so nothing rolls.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::airflow::names;
use crate::api::{AirflowSecretBinding, EntryKind, EntryState, EntryStatus};
use crate::entries::ResolvedEntry;
use crate::plan::content::{DesiredSecret, secret_key_for};

/// Airflow's Kubernetes secrets backend class.
pub const K8S_BACKEND_CLASS: &str =
    "airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend";
/// The backend's default label for connections.
pub const CONNECTION_LABEL: &str = "airflow.apache.org/connection-id";
/// The backend's default label for variables.
pub const VARIABLE_LABEL: &str = "airflow.apache.org/variable-key";
/// The backend's default team label (Airflow ≥ 3.3, multi-team).
pub const TEAM_LABEL: &str = "airflow.apache.org/team";
/// The backend's default data key.
pub const DATA_KEY: &str = "value";
/// Annotation of a namespace that lets bindings of other namespaces deliver their labelled
/// Secrets there (`spec.target.backendNamespace`): their namespaces, comma-separated, or `*`.
pub const BACKEND_FOR_ANNOTATION: &str = "airflow-secrets.io/backend-for";

/// The namespace a `KubernetesBackend` binding writes its labelled Secrets to:
/// `spec.target.backendNamespace`, else its own.
pub fn target_namespace(binding: &AirflowSecretBinding) -> String {
    binding
        .spec
        .target
        .backend_namespace
        .clone()
        .unwrap_or_else(|| binding.metadata.namespace.clone().unwrap_or_default())
}

/// Whether a binding of namespace `from` may write its labelled Secrets to namespace `to`:
/// its own always; another one only when that namespace exists (`annotations`: its
/// annotations, None when it does not exist), is watched by the operator, and names `from` (or
/// `*`) in its [`BACKEND_FOR_ANNOTATION`]. The refusal says what to change.
pub fn admit_backend_namespace(
    from: &str,
    to: &str,
    annotations: Option<&BTreeMap<String, String>>,
    watched: bool,
) -> Result<(), String> {
    if from == to {
        return Ok(());
    }
    let Some(annotations) = annotations else {
        return Err(format!(
            "spec.target.backendNamespace names namespace {to}, which does not exist; nothing is written there"
        ));
    };
    let admitted = annotations
        .get(BACKEND_FOR_ANNOTATION)
        .is_some_and(|v| v.split(',').map(str::trim).any(|n| n == "*" || n == from));
    if !admitted {
        return Err(format!(
            "spec.target.backendNamespace names namespace {to}, whose annotation {BACKEND_FOR_ANNOTATION} does not list namespace {from}; nothing is written there (whoever administers namespaces adds {from} to it, comma-separated, or `*`)"
        ));
    }
    if !watched {
        return Err(format!(
            "spec.target.backendNamespace names namespace {to}, which this operator does not watch (it runs with --namespaces, chart value watchNamespaces); nothing is written there (add {to} to the watched namespaces)"
        ));
    }
    Ok(())
}

/// Where a binding's labelled Secrets go and how they are named: in its own namespace
/// `<binding>-conn-<id>-<hash>` (owned by the binding), in another one
/// `<namespace>.<binding>-conn-<id>-<hash>` (labelled with the binding's name and namespace;
/// the hash covers both, so that bindings of different namespaces never share a name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<'a> {
    pub binding: &'a str,
    /// The binding's namespace.
    pub namespace: &'a str,
    /// The namespace the labelled Secrets go to.
    pub target: &'a str,
}

impl Placement<'_> {
    /// Whether the Secrets go to another namespace than the binding's.
    pub fn foreign(&self) -> bool {
        self.namespace != self.target
    }

    /// Name of the Secret of one id.
    pub fn secret_name(&self, kind: EntryKind, id: &str) -> String {
        if self.foreign() {
            secret_name_in(
                &format!("{}.{}", self.namespace, self.binding),
                kind,
                id,
                &[self.namespace, self.binding],
            )
        } else {
            secret_name(self.binding, kind, id)
        }
    }
}

/// One Secret the backend finds by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledSecret {
    pub name: String,
    /// (label key, id): `airflow.apache.org/connection-id=<conn_id>` or the variable label.
    pub label: (&'static str, String),
    /// The team label's value (`spec.team`); global lookups select Secrets without it.
    pub team: Option<String>,
    pub value: String,
    /// Hash of name, label and value: equal hash, nothing to write.
    pub hash: String,
    /// The key under which the value appears in the binding's content (its env-name key), so
    /// that the content can be rebuilt from the labelled Secrets after a restart.
    pub content_key: String,
}

/// The config options that point Airflow at the backend in `namespace`, for `[secrets]` and for
/// `[workers]` (which Airflow 3 workers read first), as resolved entries that flow through the
/// binding's Secret and env injection like any config entry.
pub fn backend_entries(namespace: &str) -> Vec<ResolvedEntry> {
    crate::plan::backend::backend_options(
        K8S_BACKEND_CLASS,
        &serde_json::json!({ "namespace": namespace }),
        "(kubernetes backend: no value is read)",
    )
}

/// Whether `id` can be a label value (63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric): only then can the backend's selector find it.
pub fn is_label_value(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The key under which a labelled Secret's value appears in its binding's content, from the
/// Secret's labels: rebuilds the content after a restart.
pub fn content_key(labels: &BTreeMap<String, String>) -> Option<String> {
    let (kind, id, team) = labelled_id(labels)?;
    let team = team.as_deref();
    Some(secret_key_for(&match kind {
        EntryKind::Connection => names::team_connection_env_name(team, &id),
        _ => names::team_variable_env_name(team, &id),
    }))
}

/// What a labelled Secret answers for: (kind, id, team), from its labels.
pub type LabelledId = (EntryKind, String, Option<String>);

/// The (kind, id, team) a Secret's labels make it answer for.
pub fn labelled_id(labels: &BTreeMap<String, String>) -> Option<LabelledId> {
    let team = labels.get(TEAM_LABEL).cloned();
    if let Some(id) = labels.get(CONNECTION_LABEL) {
        return Some((EntryKind::Connection, id.clone(), team));
    }
    Some((
        EntryKind::Variable,
        labels.get(VARIABLE_LABEL)?.clone(),
        team,
    ))
}

fn label_of(kind: EntryKind) -> Option<&'static str> {
    match kind {
        EntryKind::Connection => Some(CONNECTION_LABEL),
        EntryKind::Variable => Some(VARIABLE_LABEL),
        EntryKind::Config => None,
    }
}

/// Name of the Secret of one id: `<binding>-conn-<id in lower case>-<hash>` (or `-var-`),
/// shortened to fit; the hash keeps ids that differ only in case or punctuation apart.
pub fn secret_name(binding: &str, kind: EntryKind, id: &str) -> String {
    secret_name_in(binding, kind, id, &[])
}

/// [`secret_name`] with `head` in front and `salt` in the hash as well.
fn secret_name_in(binding: &str, kind: EntryKind, id: &str, salt: &[&str]) -> String {
    let tag = if kind == EntryKind::Connection {
        "conn"
    } else {
        "var"
    };
    let mut hashed = format!("{tag}\0{id}");
    for s in salt {
        hashed.push('\0');
        hashed.push_str(s);
    }
    let digest = hex::encode(Sha256::digest(hashed.as_bytes()));
    let slug: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let head = format!("{binding}-{tag}-{slug}");
    let head: String = head.chars().take(253 - 9).collect();
    format!("{}-{}", head.trim_end_matches(['-', '.']), &digest[..8])
}

/// Ids the backend cannot look up, and ids a Secret of another binding labels already in the
/// namespace the backend reads, for the same team (`taken`: (kind, id, team) → who, e.g. "binding x (created
/// first)"): their status lines say why, and they stay out.
pub fn check_ids(
    entries: &mut [EntryStatus],
    taken: &BTreeMap<LabelledId, String>,
    team: Option<&str>,
) {
    for e in entries.iter_mut() {
        if e.state != EntryState::Synced || label_of(e.kind).is_none() {
            continue;
        }
        if let Some(t) = team.filter(|t| !is_label_value(t)) {
            e.state = EntryState::Unrepresentable;
            e.message = Some(format!(
                "team {t:?} cannot be a Kubernetes label value (it must start and end alphanumeric), so KubernetesSecretsBackend cannot look it up; deliver it with injection Env"
            ));
        } else if team.is_none() && global_lookup_refused(&e.name) {
            e.state = EntryState::Unrepresentable;
            e.message = Some(format!(
                "{:?} looks team-scoped (`_<team>___<id>`), and KubernetesSecretsBackend refuses such ids in global lookups; deliver it with injection Env",
                e.name
            ));
        } else if !is_label_value(&e.name) {
            e.state = EntryState::Unrepresentable;
            e.message = Some(format!(
                "{:?} cannot be a Kubernetes label value (at most 63 characters of A-Z a-z 0-9 . _ -, starting and ending alphanumeric), so KubernetesSecretsBackend cannot look it up; deliver it with injection Env",
                e.name
            ));
        } else if let Some(other) = taken.get(&(e.kind, e.name.clone(), team.map(String::from))) {
            e.state = EntryState::Conflict;
            e.message = Some(format!(
                "{other} labels this id in the namespace already; KubernetesSecretsBackend would take either, so this binding leaves it out"
            ));
        }
    }
}

/// KubernetesSecretsBackend's `_is_team_specific_accessed_as_global`: a global lookup of an id
/// shaped `_<team>___<id>` returns nothing.
fn global_lookup_refused(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('_') else {
        return false;
    };
    rest.split_once(names::ENV_TEAM_SEP)
        .is_some_and(|(t, after)| !t.is_empty() && !t.contains('_') && !after.is_empty())
}

/// Moves the connections and variables out of the content into their labelled Secrets (with
/// the team label when the binding names a team); what stays (config entries and the backend
/// options) is injected as env.
pub fn take_labelled(
    desired: &mut DesiredSecret,
    placement: Placement<'_>,
    team: Option<&str>,
) -> Vec<LabelledSecret> {
    let mut out = Vec::new();
    for e in &desired.entries {
        let Some(label) = label_of(e.kind) else {
            continue;
        };
        let Some(env_name) = &e.env_name else {
            continue;
        };
        let key = secret_key_for(env_name);
        let Some(value) = desired.data.remove(&key) else {
            continue;
        };
        desired.env.retain(|b| &b.env_name != env_name);
        // Synced, or a last good value kept through a transient failure; not the ids refused
        // by check_ids.
        if !matches!(
            e.state,
            EntryState::Synced | EntryState::Error | EntryState::AccessDenied
        ) {
            continue;
        }
        let name = placement.secret_name(e.kind, &e.name);
        let mut h = Sha256::new();
        for part in [
            name.as_str(),
            label,
            e.name.as_str(),
            team.unwrap_or(""),
            value.as_str(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        out.push(LabelledSecret {
            name,
            label: (label, e.name.clone()),
            team: team.map(String::from),
            value,
            hash: hex::encode(h.finalize()),
            content_key: key,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Injection;
    use crate::entries::Fetched;
    use crate::plan::content::desired_secret;

    fn here(binding: &str) -> Placement<'_> {
        Placement {
            binding,
            namespace: "ns",
            target: "ns",
        }
    }

    fn entry(kind: EntryKind, name: &str, value: &str) -> ResolvedEntry {
        ResolvedEntry {
            kind,
            name: name.into(),
            config: (kind == EntryKind::Config).then(|| ("core".into(), name.into())),
            secret_id: format!("s/{name}"),
            version_id: Some("v1".into()),
            outcome: Fetched::Value(value.into()),
            team: None,
        }
    }

    #[test]
    fn connections_and_variables_become_labelled_secrets_config_stays_env() {
        let resolved = vec![
            entry(EntryKind::Connection, "my_db", "postgres://u:p@h/db"),
            entry(EntryKind::Variable, "Flag.1", "on"),
            entry(EntryKind::Config, "parallelism", "8"),
        ];
        let mut d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        let labelled = take_labelled(&mut d, here("agents"), None);
        assert_eq!(labelled.len(), 2);
        let conn = labelled
            .iter()
            .find(|l| l.label.0 == CONNECTION_LABEL)
            .unwrap();
        assert_eq!(conn.label.1, "my_db");
        assert_eq!(conn.value, "postgres://u:p@h/db");
        assert!(conn.name.starts_with("agents-conn-my-db-"), "{}", conn.name);
        let var = labelled
            .iter()
            .find(|l| l.label.0 == VARIABLE_LABEL)
            .unwrap();
        assert_eq!(
            (var.label.1.as_str(), var.value.as_str()),
            ("Flag.1", "on"),
            "the id as written: the backend's selector is exact"
        );
        assert_eq!(
            d.data.keys().collect::<Vec<_>>(),
            ["AIRFLOW__CORE__PARALLELISM"]
        );
        assert_eq!(d.env.len(), 1);
    }

    #[test]
    fn ids_a_label_cannot_carry_and_ids_taken_by_another_binding_are_reported() {
        let long = "x".repeat(64);
        let resolved = vec![
            entry(EntryKind::Connection, "team/db", "postgres://h"),
            entry(EntryKind::Connection, &long, "postgres://h"),
            entry(EntryKind::Connection, "_hidden", "postgres://h"),
            entry(EntryKind::Variable, "shared", "1"),
            entry(EntryKind::Variable, "mine", "2"),
        ];
        let mut d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        let taken = BTreeMap::from([(
            (EntryKind::Variable, "shared".to_string(), None),
            "older".to_string(),
        )]);
        check_ids(&mut d.entries, &taken, None);
        let states: Vec<EntryState> = d.entries.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                EntryState::Unrepresentable,
                EntryState::Unrepresentable,
                EntryState::Unrepresentable,
                EntryState::Conflict,
                EntryState::Synced
            ]
        );
        assert!(d.entries[3].message.as_ref().unwrap().contains("older"));
        let labelled = take_labelled(&mut d, here("b"), None);
        assert_eq!(labelled.len(), 1, "only `mine` is labelled");
        assert!(
            d.data.is_empty(),
            "refused values are not left in the env content"
        );
    }

    #[test]
    fn a_team_binding_labels_its_team_and_is_checked_against_that_team() {
        let mut resolved = vec![
            entry(EntryKind::Connection, "my_db", "postgres://h"),
            entry(EntryKind::Variable, "shared", "1"),
        ];
        for e in &mut resolved {
            e.team = Some("ml".into());
        }
        let mut d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        assert_eq!(
            d.entries[0].env_name.as_deref(),
            Some("AIRFLOW_CONN__ML___MY_DB")
        );
        // A global binding labelling `shared` is no conflict for team ml.
        let taken = BTreeMap::from([(
            (EntryKind::Variable, "shared".to_string(), None),
            "older".to_string(),
        )]);
        check_ids(&mut d.entries, &taken, Some("ml"));
        assert!(d.entries.iter().all(|e| e.state == EntryState::Synced));
        let labelled = take_labelled(&mut d, here("b"), Some("ml"));
        assert_eq!(labelled.len(), 2);
        assert!(labelled.iter().all(|l| l.team.as_deref() == Some("ml")));
        let labels = BTreeMap::from([
            (CONNECTION_LABEL.to_string(), "my_db".to_string()),
            (TEAM_LABEL.to_string(), "ml".to_string()),
        ]);
        assert_eq!(
            content_key(&labels).as_deref(),
            Some("AIRFLOW_CONN__ML___MY_DB"),
            "the content rebuilt after a restart keys it as the env delivery does"
        );
        // The same id taken by another binding of the team is a conflict; a team that cannot
        // be a label value makes every entry unrepresentable.
        let mut d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        let taken = BTreeMap::from([(
            (
                EntryKind::Variable,
                "shared".to_string(),
                Some("ml".to_string()),
            ),
            "older".to_string(),
        )]);
        check_ids(&mut d.entries, &taken, Some("ml"));
        assert_eq!(d.entries[1].state, EntryState::Conflict);
        let mut d = desired_secret(&resolved, Injection::Env, &BTreeMap::new());
        check_ids(&mut d.entries, &BTreeMap::new(), Some("_ml"));
        assert!(
            d.entries
                .iter()
                .all(|e| e.state == EntryState::Unrepresentable)
        );
    }

    #[test]
    fn global_lookups_of_team_shaped_ids_are_refused_by_the_backend() {
        for (id, refused) in [
            ("_ab___c", true),
            ("_ab____c", true),
            ("_a_b___c", false),
            ("__ab___c", false),
            ("_ab___", false),
            ("ab___c", false),
        ] {
            assert_eq!(global_lookup_refused(id), refused, "{id}");
        }
    }

    #[test]
    fn names_are_valid_distinct_and_stable() {
        let a = secret_name("b", EntryKind::Connection, "My_DB");
        let b = secret_name("b", EntryKind::Connection, "my_db");
        assert_ne!(a, b);
        assert_eq!(a, secret_name("b", EntryKind::Connection, "My_DB"));
        assert_ne!(a, secret_name("b", EntryKind::Variable, "My_DB"));
        let long = secret_name(&"n".repeat(253), EntryKind::Variable, &"v".repeat(63));
        assert!(long.len() <= 253, "{}", long.len());
        for n in [a, b, long] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
        }
    }

    #[test]
    fn secrets_in_another_namespace_are_named_after_the_bindings_namespace_too() {
        let at = |namespace, binding| Placement {
            binding,
            namespace,
            target: "shared",
        };
        let own = Placement {
            binding: "agents",
            namespace: "shared",
            target: "shared",
        };
        assert!(!own.foreign() && at("a", "agents").foreign());
        assert_eq!(
            own.secret_name(EntryKind::Connection, "my_db"),
            secret_name("agents", EntryKind::Connection, "my_db"),
            "in its own namespace a Secret keeps the name it always had"
        );
        let a = at("a", "agents").secret_name(EntryKind::Connection, "my_db");
        assert!(a.starts_with("a.agents-conn-my-db-"), "{a}");
        // Same binding name in two namespaces, and namespace/name splits that read alike.
        let names = [
            a.clone(),
            at("b", "agents").secret_name(EntryKind::Connection, "my_db"),
            at("a-b", "c").secret_name(EntryKind::Connection, "my_db"),
            at("a", "b-c").secret_name(EntryKind::Connection, "my_db"),
            own.secret_name(EntryKind::Connection, "my_db"),
            Placement {
                binding: "a.agents",
                namespace: "shared",
                target: "shared",
            }
            .secret_name(EntryKind::Connection, "my_db"),
        ];
        let distinct: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{names:?}");
        let long = at(&"n".repeat(63), &"b".repeat(253)).secret_name(EntryKind::Variable, "v");
        assert!(long.len() <= 253, "{}", long.len());
    }

    #[test]
    fn another_namespace_must_be_annotated_for_the_bindings_namespace_and_watched() {
        let ann = |v: &str| BTreeMap::from([(BACKEND_FOR_ANNOTATION.to_string(), v.to_string())]);
        assert!(admit_backend_namespace("a", "a", None, false).is_ok());
        for ok in ["a", "x, a", " a ,b", "*"] {
            assert!(
                admit_backend_namespace("a", "shared", Some(&ann(ok)), true).is_ok(),
                "{ok}"
            );
        }
        for refused in ["", "b", "ab", "a*", "b,c"] {
            let e = admit_backend_namespace("a", "shared", Some(&ann(refused)), true).unwrap_err();
            assert!(
                e.contains(BACKEND_FOR_ANNOTATION)
                    && e.contains("spec.target.backendNamespace")
                    && e.contains("shared"),
                "{e}"
            );
        }
        let none = admit_backend_namespace("a", "shared", Some(&BTreeMap::new()), true);
        assert!(none.unwrap_err().contains(BACKEND_FOR_ANNOTATION));
        let missing = admit_backend_namespace("a", "shared", None, true).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        let unwatched = admit_backend_namespace("a", "shared", Some(&ann("a")), false).unwrap_err();
        assert!(unwatched.contains("--namespaces"), "{unwatched}");
    }

    #[test]
    fn label_values() {
        for ok in ["a", "my_db", "A.b-c_9", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a/b", "a b", "a#b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
