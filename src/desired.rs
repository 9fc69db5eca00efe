//! What the cluster should hold for one binding, computed without I/O: the managed Secret's data,
//! the env entries each selected container gets, the content hash that drives rollouts, and the
//! per-entry status lines.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::airflow::connection::{Rejection, connection_value, plain_value};
use crate::airflow::names::{self, check_env_name, is_secret_key};
use crate::api::{Component, EntryKind, EntryState, EntryStatus, Injection, WorkloadSelector};

/// Annotation of the managed Secret that carries its content hash.
pub const HASH_ANNOTATION: &str = "airflow-secrets.io/content-hash";

/// Pod-template annotation that carries one binding's content hash; a change rolls the
/// Deployment. One key per binding, so that several bindings can share a Deployment:
/// `content-hash.airflow-secrets.io/<binding>` (names longer than 63 characters are shortened
/// with a hash suffix, as annotation names must be).
pub fn pod_annotation_key(binding_name: &str) -> String {
    let name = if binding_name.len() <= 63 {
        binding_name.to_string()
    } else {
        let digest = hex::encode(Sha256::digest(binding_name.as_bytes()));
        format!(
            "{}-{}",
            binding_name[..54].trim_end_matches(['-', '.']),
            &digest[..8]
        )
    };
    format!("content-hash.airflow-secrets.io/{name}")
}

/// One entry after Secrets Manager was asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEntry {
    pub kind: EntryKind,
    /// Connection id, variable key, or `section.key`.
    pub name: String,
    /// For config entries: (section, key).
    pub config: Option<(String, String)>,
    pub secret_id: String,
    pub version_id: Option<String>,
    pub outcome: Fetched,
}

/// What Secrets Manager answered for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The `SecretString`.
    Value(String),
    /// The secret has only `SecretBinary`, which Airflow never reads.
    BinaryOnly,
    /// Not found, access denied, other error, or invalid: with a message that has no value in it.
    Problem(EntryState, String),
}

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

/// Maps resolved entries to the managed Secret with Airflow's semantics. Entries that cannot be
/// injected are reported and left out; entries that would land on the same env name are all left
/// out and reported as Conflict (never silently merged).
pub fn desired_secret(
    resolved: &[ResolvedEntry],
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
        let env_name = match (&entry.kind, &entry.config) {
            (EntryKind::Connection, _) => names::connection_env_name(&entry.name),
            (EntryKind::Variable, _) => names::variable_env_name(&entry.name),
            (EntryKind::Config, Some((section, key))) => names::config_env_name(section, key),
            (EntryKind::Config, None) => names::config_env_name("", &entry.name),
        };
        let mut status = EntryStatus {
            kind: entry.kind,
            name: entry.name.clone(),
            env_name: Some(env_name.clone()),
            secret_id: entry.secret_id.clone(),
            version_id: entry.version_id.clone(),
            state: EntryState::Synced,
            message: None,
        };
        let converted: Result<(String, Vec<String>), (EntryState, String)> = match &entry.outcome {
            Fetched::Problem(state, msg) => Err((*state, msg.clone())),
            Fetched::BinaryOnly => Err((
                EntryState::Invalid,
                "the secret holds SecretBinary only; Airflow reads SecretString and treats it as not found".into(),
            )),
            Fetched::Value(secret) => check_env_name(&env_name)
                .map_err(|e| (EntryState::Unrepresentable, e.to_string()))
                .and_then(|()| {
                    let r = match entry.kind {
                        EntryKind::Connection => connection_value(secret, extra_conn_words).map(|c| (c.value, c.warnings)),
                        _ => plain_value(secret).map(|v| (v, vec![])),
                    };
                    r.map_err(|e| match e {
                        Rejection::Absent(m) | Rejection::Invalid(m) => (EntryState::Invalid, m),
                        Rejection::Unrepresentable(m) => (EntryState::Unrepresentable, m),
                    })
                })
                .and_then(|ok| {
                    if injection == Injection::EnvFrom && !is_secret_key(&env_name) {
                        Err((
                            EntryState::Unrepresentable,
                            names::NameError::SecretKey { name: env_name.clone() }.to_string(),
                        ))
                    } else {
                        Ok(ok)
                    }
                }),
        };
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

    // Env names claimed by more than one injectable entry.
    let mut claims: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        if let Some(c) = c {
            claims.entry(c.env_name.as_str()).or_default().push(i);
        }
    }
    let mut conflicted = vec![false; candidates.len()];
    for (env_name, idx) in &claims {
        if idx.len() > 1 {
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
    }

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

/// Entries that failed transiently (Secrets Manager `AccessDenied` or another error) keep the
/// value they had in the managed Secret before (`previous`: key → value), so that one failing
/// read never removes a working connection from the agents. Their status says so.
pub fn keep_last_good(desired: &mut DesiredSecret, previous: &BTreeMap<String, String>) {
    let mut changed = false;
    for entry in desired.entries.iter_mut() {
        if !matches!(entry.state, EntryState::AccessDenied | EntryState::Error) {
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

/// The agent component of a Deployment: from its `app.kubernetes.io/component` or `component`
/// label, else from the chart's naming (`<prefix>-worker-<name>`, `<prefix>-dag-processor`,
/// `<prefix>-triggerer`, `<prefix>-sentinel`).
pub fn component_of(deployment: &Deployment) -> Option<Component> {
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    let from = |s: &str| match s {
        "worker" => Some(Component::Worker),
        "dag-processor" | "dag_processor" | "dagProcessor" | "dagprocessor" => {
            Some(Component::DagProcessor)
        }
        "triggerer" => Some(Component::Triggerer),
        "sentinel" => Some(Component::Sentinel),
        _ => None,
    };
    if let Some(c) = ["app.kubernetes.io/component", "component"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(|v| from(v)))
    {
        return Some(c);
    }
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    if name.contains("-worker-") || name.ends_with("-worker") {
        Some(Component::Worker)
    } else if name.contains("-dag-processor") {
        Some(Component::DagProcessor)
    } else if name.ends_with("-triggerer") || name.contains("-triggerer-") {
        Some(Component::Triggerer)
    } else if name.ends_with("-sentinel") {
        Some(Component::Sentinel)
    } else {
        None
    }
}

/// A Deployment that receives the values, and the containers in it that do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedWorkload {
    pub name: String,
    pub component: Option<Component>,
    pub containers: Vec<String>,
}

/// Which of `deployments` (all in the binding's namespace) the binding selects.
pub fn select_workloads(
    deployments: &[Deployment],
    selector: &WorkloadSelector,
    components: &[Component],
    containers: &[String],
) -> Vec<SelectedWorkload> {
    let mut out = Vec::new();
    for d in deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let component = component_of(d);
        let named = selector.names.contains(&name);
        let release_ok = selector
            .helm_release
            .as_ref()
            .is_none_or(|release| helm_release_of(d) == Some(release.as_str()));
        let labels_ok = selector
            .selector
            .as_ref()
            .is_none_or(|sel| label_selector_matches(sel, d.metadata.labels.as_ref()));
        let by_criteria = (selector.helm_release.is_some() || selector.selector.is_some())
            && release_ok
            && labels_ok
            && component.is_some_and(|c| components.contains(&c));
        let matches = named || by_criteria;
        if !matches {
            continue;
        }
        let pod_containers: Vec<String> = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let chosen: Vec<String> = if containers.is_empty() {
            pod_containers.into_iter().take(1).collect()
        } else {
            pod_containers
                .into_iter()
                .filter(|c| containers.contains(c))
                .collect()
        };
        if !chosen.is_empty() {
            out.push(SelectedWorkload {
                name,
                component,
                containers: chosen,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The Helm release a Deployment belongs to: its `meta.helm.sh/release-name` annotation (set by
/// helm install/upgrade), or, without it (as in `helm template` output), its
/// `app.kubernetes.io/instance` label.
fn helm_release_of(d: &Deployment) -> Option<&str> {
    let annotated = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("meta.helm.sh/release-name"));
    match annotated {
        Some(r) => Some(r.as_str()),
        None => d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/instance"))
            .map(String::as_str),
    }
}

fn label_selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let eq_ok = sel
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expr_ok = sel.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    eq_ok && expr_ok
}

/// The partial Deployment applied with our field manager: only our pod-template annotation and,
/// per selected container, our env entries (or one envFrom). Fields we applied before and leave
/// out now are released by the API server.
pub fn workload_apply(
    workload: &SelectedWorkload,
    secret_name: &str,
    secret: &DesiredSecret,
    injection: Injection,
    rollout_annotation: Option<&str>,
) -> Value {
    let containers: Vec<Value> = workload
        .containers
        .iter()
        .map(|c| match injection {
            Injection::EnvFrom => {
                json!({"name": c, "envFrom": [{"secretRef": {"name": secret_name}}]})
            }
            _ => json!({
                "name": c,
                "env": secret.env.iter().map(|e| json!({
                    "name": e.env_name,
                    "valueFrom": {"secretKeyRef": {"name": secret_name, "key": e.secret_key}}
                })).collect::<Vec<_>>()
            }),
        })
        .collect();
    let mut template = json!({"spec": {"containers": containers}});
    if let Some(key) = rollout_annotation {
        template["metadata"] = json!({"annotations": {key: secret.content_hash}});
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": workload.name},
        "spec": {"template": template}
    })
}

/// The apply configuration that releases everything we own on a Deployment.
pub fn workload_release(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: EntryKind, name: &str, outcome: Fetched) -> ResolvedEntry {
        ResolvedEntry {
            kind,
            name: name.into(),
            config: None,
            secret_id: format!("airflow/x/{name}"),
            version_id: Some("v1".into()),
            outcome,
        }
    }
    fn val(s: &str) -> Fetched {
        Fetched::Value(s.into())
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
    fn transient_errors_keep_the_last_good_value() {
        let ok = desired_secret(
            &[
                entry(EntryKind::Variable, "a", val("1")),
                entry(EntryKind::Variable, "b", val("2")),
            ],
            Injection::Env,
            &BTreeMap::new(),
        );
        let mut now = desired_secret(
            &[
                entry(
                    EntryKind::Variable,
                    "a",
                    Fetched::Problem(
                        EntryState::AccessDenied,
                        "Secrets Manager: AccessDeniedException".into(),
                    ),
                ),
                entry(
                    EntryKind::Variable,
                    "b",
                    Fetched::Problem(EntryState::NotFound, "gone".into()),
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
            now.entries[0]
                .message
                .as_ref()
                .unwrap()
                .contains("last good value is kept")
        );
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

    fn deployment(
        name: &str,
        labels: &[(&str, &str)],
        release: Option<&str>,
        containers: &[&str],
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "annotations": release.map(|r| json!({"meta.helm.sh/release-name": r})).unwrap_or(json!({}))
            },
            "spec": {"selector": {}, "template": {"spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()}}}
        }))
        .unwrap()
    }

    #[test]
    fn selection_by_release_component_and_container() {
        let ds = [
            deployment(
                "astro-agent-worker-default-worker",
                &[],
                Some("astro-agent"),
                &["worker", "log-sidecar"],
            ),
            deployment(
                "astro-agent-dag-processor",
                &[("component", "dag-processor")],
                Some("astro-agent"),
                &["dag-processor"],
            ),
            deployment(
                "astro-agent-triggerer",
                &[],
                Some("astro-agent"),
                &["triggerer"],
            ),
            deployment(
                "astro-agent-sentinel",
                &[],
                Some("astro-agent"),
                &["sentinel"],
            ),
            deployment("other-worker-x", &[], Some("other"), &["worker"]),
            deployment("unrelated", &[], None, &["app"]),
        ];
        let sel = WorkloadSelector {
            helm_release: Some("astro-agent".into()),
            ..Default::default()
        };
        let got = select_workloads(&ds, &sel, &crate::api::default_components(), &[]);
        let names: Vec<&str> = got.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "astro-agent-dag-processor",
                "astro-agent-triggerer",
                "astro-agent-worker-default-worker"
            ]
        );
        assert_eq!(
            got[2].containers,
            ["worker"],
            "first container only by default"
        );
        let with_sentinel =
            select_workloads(&ds, &sel, &[Component::Sentinel], &["sentinel".into()]);
        assert_eq!(with_sentinel.len(), 1);
        let by_name = WorkloadSelector {
            names: vec!["unrelated".into()],
            ..Default::default()
        };
        assert_eq!(
            select_workloads(&ds, &by_name, &crate::api::default_components(), &[]).len(),
            1
        );
    }

    #[test]
    fn apply_configuration_holds_only_our_fields() {
        let d = desired_secret(
            &[entry(EntryKind::Variable, "a", val("1"))],
            Injection::Env,
            &BTreeMap::new(),
        );
        let w = SelectedWorkload {
            name: "w".into(),
            component: None,
            containers: vec!["worker".into()],
        };
        let key = pod_annotation_key("b");
        let v = workload_apply(&w, "s", &d, Injection::Env, Some(&key));
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"]["content-hash.airflow-secrets.io/b"],
            json!(d.content_hash)
        );
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["key"],
            json!("AIRFLOW_VAR_A")
        );
        assert!(v["spec"].get("selector").is_none());
        let v = workload_apply(&w, "s", &d, Injection::EnvFrom, None);
        assert!(v["spec"]["template"].get("metadata").is_none());
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRef"]["name"],
            json!("s")
        );
    }
}

/// Airflow's Secrets Manager backend class.
pub const SM_BACKEND_CLASS: &str =
    "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend";

/// `backend_kwargs` of Airflow's `SecretsManagerBackend` equivalent to a binding's discovery and
/// source. A prefix the binding does not give is sent as `null`, which makes Airflow skip that
/// kind, so that the binding means the same in both modes.
pub fn backend_kwargs(spec: &crate::api::AirflowSecretBindingSpec) -> Value {
    let d = spec.discovery.clone().unwrap_or_default();
    let mut kw = serde_json::Map::new();
    kw.insert("connections_prefix".into(), json!(d.connections_prefix));
    kw.insert("variables_prefix".into(), json!(d.variables_prefix));
    kw.insert("config_prefix".into(), json!(d.config_prefix));
    kw.insert("sep".into(), json!(d.sep));
    for (k, v) in [
        ("connections_lookup_pattern", &d.connections_lookup_pattern),
        ("variables_lookup_pattern", &d.variables_lookup_pattern),
        ("config_lookup_pattern", &d.config_lookup_pattern),
    ] {
        if let Some(v) = v {
            kw.insert(k.into(), json!(v));
        }
    }
    if !d.extra_conn_words.is_empty() {
        kw.insert("extra_conn_words".into(), json!(d.extra_conn_words));
    }
    let s = &spec.source;
    if let Some(r) = &s.region {
        kw.insert("region_name".into(), json!(r));
    }
    if let Some(e) = &s.endpoint {
        kw.insert("endpoint_url".into(), json!(e));
    }
    if let Some(role) = &s.role_arn {
        kw.insert("role_arn".into(), json!(role));
        let mut assume = serde_json::Map::new();
        if let Some(id) = &s.external_id {
            assume.insert("ExternalId".into(), json!(id));
        }
        if let Some(n) = &s.role_session_name {
            assume.insert("RoleSessionName".into(), json!(n));
        }
        if !assume.is_empty() {
            kw.insert("assume_role_kwargs".into(), Value::Object(assume));
        }
    }
    Value::Object(kw)
}

/// Backend mode: the config options that point Airflow's own backend at Secrets Manager, for
/// `[secrets]` and for `[workers]` (which Airflow 3 workers read first), as resolved entries so
/// that they flow through the same mapping, Secret and injection as values do.
pub fn backend_entries(spec: &crate::api::AirflowSecretBindingSpec) -> Vec<ResolvedEntry> {
    let kwargs = backend_kwargs(spec).to_string();
    [
        ("secrets", "backend", SM_BACKEND_CLASS.to_string()),
        ("secrets", "backend_kwargs", kwargs.clone()),
        ("workers", "secrets_backend", SM_BACKEND_CLASS.to_string()),
        ("workers", "secrets_backend_kwargs", kwargs),
    ]
    .into_iter()
    .map(|(section, key, value)| ResolvedEntry {
        kind: EntryKind::Config,
        name: format!("{section}.{key}"),
        config: Some((section.into(), key.into())),
        secret_id: "(backend mode: no value is read)".into(),
        version_id: None,
        outcome: Fetched::Value(value),
    })
    .collect()
}

/// Airflow consults a configured secrets backend before environment variables. When a workload
/// already runs `SecretsManagerBackend` (plain `AIRFLOW__SECRETS__BACKEND` or
/// `AIRFLOW__WORKERS__SECRETS_BACKEND` env), every connection or variable we inject that the
/// backend would also look up can be silently shadowed by it. Returns a warning per such workload.
pub fn backend_shadowing(
    deployment: &Deployment,
    containers: &[String],
    injected: &[EntryStatus],
) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    for c in pod
        .containers
        .iter()
        .filter(|c| containers.contains(&c.name))
    {
        let env: BTreeMap<&str, &str> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
            .collect();
        for (class_var, kwargs_var) in [
            (
                "AIRFLOW__WORKERS__SECRETS_BACKEND",
                "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
            ),
            (
                "AIRFLOW__SECRETS__BACKEND",
                "AIRFLOW__SECRETS__BACKEND_KWARGS",
            ),
        ] {
            if env.get(class_var).map(|v| v.trim()) != Some(SM_BACKEND_CLASS) {
                continue;
            }
            let kwargs: serde_json::Map<String, Value> = env
                .get(kwargs_var)
                .and_then(|k| serde_json::from_str(k).ok())
                .unwrap_or_default();
            let prefix = |key: &str, default: &str| match kwargs.get(key) {
                None => Some(default.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => None, // null (or anything else) disables the lookup
            };
            let pattern = |key: &str| {
                kwargs
                    .get(key)
                    .and_then(Value::as_str)
                    .map(crate::airflow::pattern::LookupPattern::new)
            };
            let mut shadowed = 0;
            for (kind, pkey, default, patkey) in [
                (
                    EntryKind::Connection,
                    "connections_prefix",
                    "airflow/connections",
                    "connections_lookup_pattern",
                ),
                (
                    EntryKind::Variable,
                    "variables_prefix",
                    "airflow/variables",
                    "variables_lookup_pattern",
                ),
            ] {
                if prefix(pkey, default).is_none() {
                    continue;
                }
                let pat = pattern(patkey);
                shadowed += injected
                    .iter()
                    .filter(|e| e.kind == kind && e.state == EntryState::Synced)
                    .filter(|e| match &pat {
                        None => true,
                        Some(Ok(p)) => p.matches(&e.name),
                        Some(Err(_)) => false, // Airflow fails every lookup with a broken pattern
                    })
                    .count();
            }
            if shadowed > 0 {
                return Some(format!(
                    "container {} runs Airflow's SecretsManagerBackend ({class_var}), which Airflow consults before environment variables: {shadowed} injected connection(s)/variable(s) are shadowed whenever Secrets Manager holds the same id under the backend's prefix; remove the backend, set its prefixes to null, or exclude these ids with a lookup pattern",
                    c.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod annotation_tests {
    use super::pod_annotation_key;

    #[test]
    fn annotation_names_fit_kubernetes_limits() {
        assert_eq!(
            pod_annotation_key("agents"),
            "content-hash.airflow-secrets.io/agents"
        );
        let long = "a".repeat(200);
        let key = pod_annotation_key(&long);
        let name = key.split_once('/').unwrap().1;
        assert!(name.len() <= 63, "{name}");
        assert_ne!(pod_annotation_key(&format!("{long}x")), key);
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::api::AirflowSecretBindingSpec;

    #[test]
    fn kwargs_mirror_discovery_and_source() {
        let spec: AirflowSecretBindingSpec = serde_json::from_value(json!({
            "source": {"region": "eu-west-1", "roleArn": "arn:aws:iam::123456789012:role/r", "externalId": "x"},
            "discovery": {"connectionsPrefix": "airflow/connections", "connectionsLookupPattern": "^db_", "sep": "/"},
            "mode": "Backend",
            "target": {"injection": "SecretOnly"}
        }))
        .unwrap();
        let kw = backend_kwargs(&spec);
        assert_eq!(kw["connections_prefix"], json!("airflow/connections"));
        assert_eq!(
            kw["variables_prefix"],
            Value::Null,
            "not given: Airflow must not look variables up"
        );
        assert_eq!(kw["connections_lookup_pattern"], json!("^db_"));
        assert_eq!(kw["region_name"], json!("eu-west-1"));
        assert_eq!(kw["assume_role_kwargs"]["ExternalId"], json!("x"));
        let d = desired_secret(&backend_entries(&spec), Injection::Env, &BTreeMap::new());
        assert_eq!(d.data["AIRFLOW__SECRETS__BACKEND"], SM_BACKEND_CLASS);
        assert_eq!(
            d.data["AIRFLOW__WORKERS__SECRETS_BACKEND"],
            SM_BACKEND_CLASS
        );
        let parsed: Value =
            serde_json::from_str(&d.data["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"]).unwrap();
        assert_eq!(parsed, kw);
    }

    fn deployment_with_env(env: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "w"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "worker", "env": env}]}}}
        }))
        .unwrap()
    }

    fn synced(kind: EntryKind, name: &str) -> EntryStatus {
        EntryStatus {
            kind,
            name: name.into(),
            env_name: None,
            secret_id: String::new(),
            version_id: None,
            state: EntryState::Synced,
            message: None,
        }
    }

    #[test]
    fn shadowing_is_detected_only_where_the_backend_would_look() {
        let injected = [
            synced(EntryKind::Connection, "db_main"),
            synced(EntryKind::Variable, "env"),
        ];
        let c = ["worker".to_string()];
        let with = |kwargs: &str| {
            deployment_with_env(json!([
                {"name": "AIRFLOW__SECRETS__BACKEND", "value": SM_BACKEND_CLASS},
                {"name": "AIRFLOW__SECRETS__BACKEND_KWARGS", "value": kwargs}
            ]))
        };
        assert!(
            backend_shadowing(&with("{}"), &c, &injected)
                .unwrap()
                .contains("2 injected")
        );
        assert!(
            backend_shadowing(&with(r#"{"variables_prefix": null}"#), &c, &injected)
                .unwrap()
                .contains("1 injected")
        );
        assert!(
            backend_shadowing(
                &with(r#"{"connections_prefix": null, "variables_prefix": null}"#),
                &c,
                &injected
            )
            .is_none()
        );
        assert!(
            backend_shadowing(
                &with(r#"{"variables_prefix": null, "connections_lookup_pattern": "^tmp_"}"#),
                &c,
                &injected
            )
            .is_none()
        );
        let local = deployment_with_env(
            json!([{"name": "AIRFLOW__SECRETS__BACKEND", "value": "airflow.secrets.local_filesystem.LocalFilesystemBackend"}]),
        );
        assert!(backend_shadowing(&local, &c, &injected).is_none());
    }
}
