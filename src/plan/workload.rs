//! What one Deployment should carry, combined over every binding that targets it, computed
//! without I/O.
//!
//! One writer per Deployment: the operator applies a single apply configuration under one field
//! manager ([`FIELD_MANAGER`]) holding every binding's env entries (or envFrom) and each binding's
//! pod-template annotation. All bindings that land or change together therefore roll a
//! Deployment once. Two bindings never share an env name in one container: the binding created
//! first keeps it, the other is told (Conflict), and a name the chart itself sets is never
//! taken over.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::{WorkloadState, WorkloadStatus};
use crate::plan::content::{EnvRef, MAX_ENV_TOTAL};

/// The one field manager that writes workloads and Secrets.
pub const FIELD_MANAGER: &str = "airflow-secrets-operator";
/// Field managers of the first version were `airflow-secrets-operator/<binding>`; fields they
/// own are taken over and then released, so that an upgrade leaves none behind.
pub const LEGACY_MANAGER_PREFIX: &str = "airflow-secrets-operator/";
/// Prefix of the pod-template annotations that carry each binding's content hash.
pub const ROLLOUT_ANNOTATION_PREFIX: &str = "content-hash.airflow-secrets.io/";

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
    format!("{ROLLOUT_ANNOTATION_PREFIX}{name}")
}

/// What one binding wants on the Deployments it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Per-key env entries, or envFrom of whole Secrets, plus the rollout annotation's value.
    Inject {
        env: Vec<EnvRef>,
        env_from: Vec<String>,
        rollout_hash: Option<String>,
        /// Bytes the entries take in a process's environment.
        env_bytes: usize,
        /// Values of entries that are not secret (the options that configure a secrets
        /// backend), by env name: where the chart sets the same name to the same value, its
        /// entry is left as it is and counts as delivered.
        plain: BTreeMap<String, String>,
    },
    /// Keep exactly what the binding has on the Deployment now: its content could not be
    /// computed (Secrets Manager unavailable before a first read, a held mass deletion).
    Hold,
    /// Nothing (SecretOnly, or the binding is being deleted).
    Release,
}

/// One binding as one Deployment sees it.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub binding: &'a str,
    /// Containers of this Deployment the binding selects (empty: it does not select it).
    pub containers: Vec<String>,
    pub delivery: &'a Delivery,
    /// Names of the Secrets this binding writes: recognises its entries on the Deployment.
    pub secret_names: &'a BTreeSet<String>,
}

/// The result of planning one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadPlan {
    /// The apply configuration to send, or None when the Deployment already carries it.
    pub apply: Option<Value>,
    /// Field managers of the first version to release after the apply.
    pub release_managers: Vec<String>,
    /// Per binding that selects or had entries on the Deployment: what it carries now.
    pub outcomes: BTreeMap<String, WorkloadStatus>,
    /// Bindings whose rollout annotation changes with this apply.
    pub rollouts: Vec<String>,
}

/// Our entries found on one container of a live Deployment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Desired {
    env: BTreeSet<(String, String, String)>,
    env_from: Vec<String>,
}

fn containers_of(d: &Deployment) -> &[Container] {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers.as_slice())
        .unwrap_or_default()
}

/// The pod-template annotations of a Deployment.
pub fn template_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

fn env_ref(e: &EnvVar) -> Option<(String, String, String)> {
    let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((e.name.clone(), r.name.clone(), r.key.clone()))
}

fn env_from_name(e: &EnvFromSource) -> Option<&str> {
    e.secret_ref.as_ref().map(|r| r.name.as_str())
}

/// Field managers of the first version present on an object.
pub fn legacy_managers(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<String> {
    let mut out: Vec<String> = meta
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .filter(|m| m.starts_with(LEGACY_MANAGER_PREFIX))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Plans one Deployment. `ours` names every Secret any binding of the namespace writes: env
/// entries referring to them are the operator's, every other entry belongs to someone else.
/// `claims` must be ordered by precedence (the binding created first comes first).
pub fn plan_workload(
    deployment: &Deployment,
    claims: &[Claim<'_>],
    ours: &BTreeSet<String>,
) -> WorkloadPlan {
    let live_ann = template_annotations(deployment);
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut rollouts = Vec::new();
    let mut used_bytes: BTreeMap<String, usize> = BTreeMap::new();
    for claim in claims {
        let key = pod_annotation_key(claim.binding);
        let live_hash = live_ann.get(&key).cloned();
        let has_live = live_hash.is_some() || carries(deployment, claim.secret_names);
        if claim.containers.is_empty() && !(has_live && matches!(claim.delivery, Delivery::Hold)) {
            continue;
        }
        let outcome = match claim.delivery {
            Delivery::Release => continue,
            Delivery::Hold => {
                hold(deployment, claim, &mut desired);
                if let Some(h) = &live_hash {
                    annotations.insert(key, h.clone());
                }
                status(claim, WorkloadState::Held, live_hash, None)
            }
            Delivery::Inject {
                env,
                env_from,
                rollout_hash,
                env_bytes,
                plain,
            } => {
                if let Some(message) = reserve(claim, &mut used_bytes, *env_bytes) {
                    outcomes.insert(
                        claim.binding.to_string(),
                        status(claim, WorkloadState::TooLarge, None, Some(message)),
                    );
                    continue;
                }
                let conflicts = inject(
                    deployment,
                    claim,
                    (env, plain),
                    env_from,
                    ours,
                    &mut desired,
                );
                if let Some(h) = rollout_hash {
                    if live_hash.as_ref() != Some(h) {
                        rollouts.push(claim.binding.to_string());
                    }
                    annotations.insert(key, h.clone());
                }
                let (state, message) = match conflicts.is_empty() {
                    true => (WorkloadState::Injected, None),
                    false => (WorkloadState::Conflict, Some(conflicts.join("; "))),
                };
                status(claim, state, rollout_hash.clone(), message)
            }
        };
        outcomes.insert(claim.binding.to_string(), outcome);
    }
    let live = live_ours(deployment, ours);
    let live_annotations: BTreeMap<String, String> = live_ann
        .into_iter()
        .filter(|(k, _)| k.starts_with(ROLLOUT_ANNOTATION_PREFIX))
        .collect();
    let desired: BTreeMap<String, Desired> = desired
        .into_iter()
        .filter(|(_, d)| *d != Desired::default())
        .collect();
    let release_managers = legacy_managers(&deployment.metadata);
    let unchanged = live == desired && live_annotations == annotations;
    let apply = (!unchanged || !release_managers.is_empty())
        .then(|| apply_body(deployment, &desired, &annotations));
    WorkloadPlan {
        apply,
        release_managers,
        outcomes,
        rollouts,
    }
}

/// Counts a binding's entries against the environment of its containers; or says why they
/// would not fit one of them (and counts nothing).
fn reserve(
    claim: &Claim<'_>,
    used_bytes: &mut BTreeMap<String, usize>,
    env_bytes: usize,
) -> Option<String> {
    let Some(c) = claim
        .containers
        .iter()
        .find(|c| used_bytes.get(*c).copied().unwrap_or(0) + env_bytes > MAX_ENV_TOTAL)
    else {
        for c in &claim.containers {
            *used_bytes.entry(c.clone()).or_default() += env_bytes;
        }
        return None;
    };
    Some(format!(
        "container {c} would receive more than {MAX_ENV_TOTAL} bytes of environment from the operator (Linux allows about 2 MiB of arguments and environment in total); nothing of this binding is injected here: use fewer entries per container or target.injection SecretOnly"
    ))
}

fn status(
    claim: &Claim<'_>,
    state: WorkloadState,
    content_hash: Option<String>,
    message: Option<String>,
) -> WorkloadStatus {
    WorkloadStatus {
        name: String::new(),
        component: None,
        containers: claim.containers.clone(),
        state: Some(state),
        content_hash,
        message,
    }
}

/// Whether the Deployment carries anything of a binding: an entry referring to one of its
/// Secrets, or its rollout annotation.
pub fn carries_binding(d: &Deployment, secrets: &BTreeSet<String>, annotation: &str) -> bool {
    carries(d, secrets) || template_annotations(d).contains_key(annotation)
}

/// Whether the Deployment carries an entry referring to one of `secrets`.
fn carries(d: &Deployment, secrets: &BTreeSet<String>) -> bool {
    containers_of(d).iter().any(|c| {
        c.env
            .iter()
            .flatten()
            .filter_map(env_ref)
            .any(|(_, s, _)| secrets.contains(&s))
            || c.env_from
                .iter()
                .flatten()
                .filter_map(env_from_name)
                .any(|s| secrets.contains(s))
    })
}

/// Our entries on each container of the live Deployment.
fn live_ours(d: &Deployment, ours: &BTreeSet<String>) -> BTreeMap<String, Desired> {
    let mut out = BTreeMap::new();
    for c in containers_of(d) {
        let mine = Desired {
            env: c
                .env
                .iter()
                .flatten()
                .filter_map(env_ref)
                .filter(|(_, s, _)| ours.contains(s))
                .collect(),
            env_from: c
                .env_from
                .iter()
                .flatten()
                .filter_map(env_from_name)
                .filter(|s| ours.contains(*s))
                .map(str::to_string)
                .collect(),
        };
        if mine != Desired::default() {
            out.insert(c.name.clone(), mine);
        }
    }
    out
}

/// Copies what a held binding has on the Deployment now.
fn hold(d: &Deployment, claim: &Claim<'_>, desired: &mut BTreeMap<String, Desired>) {
    for c in containers_of(d) {
        let entry = desired.entry(c.name.clone()).or_default();
        for e in c.env.iter().flatten().filter_map(env_ref) {
            if claim.secret_names.contains(&e.1) {
                entry.env.insert(e);
            }
        }
        for s in c.env_from.iter().flatten().filter_map(env_from_name) {
            if claim.secret_names.contains(s) {
                entry.env_from.push(s.to_string());
            }
        }
    }
}

/// Adds a binding's entries to the containers it selects; returns what could not be added.
fn inject(
    d: &Deployment,
    claim: &Claim<'_>,
    (env, plain): (&[EnvRef], &BTreeMap<String, String>),
    env_from: &[String],
    ours: &BTreeSet<String>,
    desired: &mut BTreeMap<String, Desired>,
) -> Vec<String> {
    let mut conflicts = Vec::new();
    for c in containers_of(d)
        .iter()
        .filter(|c| claim.containers.contains(&c.name))
    {
        let foreign: BTreeMap<&str, Option<&str>> = c
            .env
            .iter()
            .flatten()
            .filter(|e| env_ref(e).is_none_or(|(_, s, _)| !ours.contains(&s)))
            .map(|e| (e.name.as_str(), e.value.as_deref()))
            .collect();
        let foreign_env_from = c
            .env_from
            .iter()
            .flatten()
            .any(|e| env_from_name(e).is_none_or(|s| !ours.contains(s)));
        let entry = desired.entry(c.name.clone()).or_default();
        let mut refused = Vec::new();
        for e in env {
            let taken_by_us = entry.env.iter().any(|(n, _, _)| n == &e.env_name);
            if let Some(theirs) = foreign.get(e.env_name.as_str()) {
                match plain.get(&e.env_name) {
                    Some(want) if same_option(want, *theirs) => {}
                    Some(want) => {
                        conflicts.push(option_conflict(&c.name, &e.env_name, want, *theirs))
                    }
                    None => refused.push(e.env_name.clone()),
                }
                continue;
            }
            if taken_by_us {
                refused.push(e.env_name.clone());
                continue;
            }
            entry.env.insert((
                e.env_name.clone(),
                e.secret_name.clone(),
                e.secret_key.clone(),
            ));
        }
        if !refused.is_empty() {
            conflicts.push(format!(
                "container {}: {} already set by the chart or by another binding created earlier; not injected",
                c.name,
                refused.join(", ")
            ));
        }
        if !env_from.is_empty() {
            if foreign_env_from {
                conflicts.push(format!(
                    "container {}: envFrom is set by someone else and is an atomic list; use target.injection Env",
                    c.name
                ));
            } else {
                entry.env_from.extend(env_from.iter().cloned());
            }
        }
    }
    conflicts
}

/// Whether a value set by someone else equals ours: equal strings, or equal JSON (kwargs).
fn same_option(want: &str, theirs: Option<&str>) -> bool {
    let Some(theirs) = theirs else { return false };
    if want.trim() == theirs.trim() {
        return true;
    }
    match (
        serde_json::from_str::<Value>(want),
        serde_json::from_str::<Value>(theirs),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What to change when the chart configures a secrets backend differently. Class names are
/// shown; kwargs are not (they may name roles or ids).
fn option_conflict(container: &str, name: &str, want: &str, theirs: Option<&str>) -> String {
    if name.ends_with("_KWARGS") {
        return format!(
            "container {container}: {name} is set by the chart to other kwargs than this binding needs; remove it from the chart's values (commonEnv / env): the binding sets it"
        );
    }
    format!(
        "container {container}: {name} is set by the chart to {:?}, this binding needs {want:?}: set secretBackend: {want} in the agent chart's values.yaml (or remove the entry that sets {name})",
        theirs.unwrap_or("(a value from elsewhere)")
    )
}

/// The partial Deployment applied under [`FIELD_MANAGER`]: per container only our env entries
/// (sorted by name) and envFrom, and our pod-template annotations. What we applied before and
/// leave out now is removed by the API server.
fn apply_body(
    d: &Deployment,
    desired: &BTreeMap<String, Desired>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let containers: Vec<Value> = containers_of(d)
        .iter()
        .filter_map(|c| desired.get(&c.name).map(|want| (c, want)))
        .map(|(c, want)| {
            let mut v = json!({"name": c.name});
            if !want.env.is_empty() {
                v["env"] = want
                    .env
                    .iter()
                    .map(|(n, s, k)| {
                        json!({"name": n, "valueFrom": {"secretKeyRef": {"name": s, "key": k}}})
                    })
                    .collect();
            }
            if !want.env_from.is_empty() {
                v["envFrom"] = want
                    .env_from
                    .iter()
                    .map(|s| json!({"secretRef": {"name": s}}))
                    .collect();
            }
            v
        })
        .collect();
    let mut template = json!({});
    if !containers.is_empty() {
        template["spec"] = json!({"containers": containers});
    }
    if !annotations.is_empty() {
        template["metadata"] = json!({"annotations": annotations});
    }
    let mut body = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": d.metadata.name},
    });
    if template != json!({}) {
        body["spec"] = json!({"template": template});
    }
    body
}

/// The apply configuration that releases everything a field manager owns on a Deployment.
pub fn workload_release(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(containers: Value, annotations: Value, managers: &[&str]) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": "w",
                "managedFields": managers.iter().map(|m| json!({"manager": m, "operation": "Apply"})).collect::<Vec<_>>()
            },
            "spec": {"selector": {}, "template": {
                "metadata": {"annotations": annotations},
                "spec": {"containers": containers}
            }}
        }))
        .unwrap()
    }

    fn inject(env: &[(&str, &str)], secret: &str, hash: &str) -> Delivery {
        Delivery::Inject {
            env: env
                .iter()
                .map(|(n, k)| EnvRef {
                    env_name: n.to_string(),
                    secret_name: secret.into(),
                    secret_key: k.to_string(),
                })
                .collect(),
            env_from: vec![],
            rollout_hash: Some(hash.into()),
            env_bytes: 100,
            plain: BTreeMap::new(),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn many_bindings_one_apply_and_one_rollout() {
        let d = deployment(
            json!([{"name": "worker", "env": [{"name": "CHART", "value": "x"}]}]),
            json!({}),
            &[],
        );
        let deliveries: Vec<Delivery> = (0..20)
            .map(|i| {
                inject(
                    &[(&format!("AIRFLOW_CONN_C{i}"), &format!("AIRFLOW_CONN_C{i}"))],
                    &format!("b{i}-airflow"),
                    &format!("h{i}"),
                )
            })
            .collect();
        let secret_names: Vec<BTreeSet<String>> = (0..20)
            .map(|i| names(&[&format!("b{i}-airflow")]))
            .collect();
        let binding_names: Vec<String> = (0..20).map(|i| format!("b{i}")).collect();
        let claims: Vec<Claim> = (0..20)
            .map(|i| Claim {
                binding: &binding_names[i],
                containers: vec!["worker".into()],
                delivery: &deliveries[i],
                secret_names: &secret_names[i],
            })
            .collect();
        let ours: BTreeSet<String> = secret_names.iter().flatten().cloned().collect();
        let plan = plan_workload(&d, &claims, &ours);
        let body = plan.apply.expect("one apply");
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .len(),
            20
        );
        assert_eq!(
            body["spec"]["template"]["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .len(),
            20
        );
        assert_eq!(plan.rollouts.len(), 20);
        assert!(
            plan.outcomes
                .values()
                .all(|o| o.state == Some(WorkloadState::Injected))
        );
    }

    #[test]
    fn an_unchanged_deployment_is_not_written() {
        let d = deployment(
            json!([{"name": "worker", "env": [
                {"name": "CHART", "value": "x"},
                {"name": "AIRFLOW_CONN_A", "valueFrom": {"secretKeyRef": {"name": "a-airflow", "key": "AIRFLOW_CONN_A"}}}
            ]}]),
            json!({"content-hash.airflow-secrets.io/a": "h1", "other": "y"}),
            &["helm", "airflow-secrets-operator"],
        );
        let delivery = inject(&[("AIRFLOW_CONN_A", "AIRFLOW_CONN_A")], "a-airflow", "h1");
        let secret_names = names(&["a-airflow"]);
        let claim = Claim {
            binding: "a",
            containers: vec!["worker".into()],
            delivery: &delivery,
            secret_names: &secret_names,
        };
        let plan = plan_workload(&d, std::slice::from_ref(&claim), &secret_names);
        assert_eq!(plan.apply, None);
        assert!(plan.rollouts.is_empty());
        // The first version's per-binding manager: applied (to co-own) and then released.
        let legacy = deployment(
            json!([{"name": "worker", "env": [
                {"name": "AIRFLOW_CONN_A", "valueFrom": {"secretKeyRef": {"name": "a-airflow", "key": "AIRFLOW_CONN_A"}}}
            ]}]),
            json!({"content-hash.airflow-secrets.io/a": "h1"}),
            &["helm", "airflow-secrets-operator/a"],
        );
        let plan = plan_workload(&legacy, &[claim], &secret_names);
        assert!(plan.apply.is_some());
        assert_eq!(plan.release_managers, ["airflow-secrets-operator/a"]);
        assert!(
            plan.rollouts.is_empty(),
            "same hash: the upgrade rolls nothing"
        );
    }

    #[test]
    fn earlier_binding_keeps_a_name_and_chart_names_are_never_taken() {
        let d = deployment(
            json!([{"name": "worker", "env": [{"name": "AIRFLOW_VAR_CHART", "value": "x"}]}]),
            json!({}),
            &[],
        );
        let first = inject(&[("AIRFLOW_VAR_X", "AIRFLOW_VAR_X")], "first-airflow", "h1");
        let second = inject(
            &[
                ("AIRFLOW_VAR_X", "AIRFLOW_VAR_X"),
                ("AIRFLOW_VAR_CHART", "AIRFLOW_VAR_CHART"),
                ("AIRFLOW_VAR_Y", "AIRFLOW_VAR_Y"),
            ],
            "second-airflow",
            "h2",
        );
        let (n1, n2) = (names(&["first-airflow"]), names(&["second-airflow"]));
        let ours: BTreeSet<String> = n1.union(&n2).cloned().collect();
        let claims = [
            Claim {
                binding: "first",
                containers: vec!["worker".into()],
                delivery: &first,
                secret_names: &n1,
            },
            Claim {
                binding: "second",
                containers: vec!["worker".into()],
                delivery: &second,
                secret_names: &n2,
            },
        ];
        let plan = plan_workload(&d, &claims, &ours);
        let env = &plan.apply.unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
        let refs: Vec<(&str, &str)> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            refs,
            [
                ("AIRFLOW_VAR_X", "first-airflow"),
                ("AIRFLOW_VAR_Y", "second-airflow")
            ]
        );
        assert_eq!(plan.outcomes["first"].state, Some(WorkloadState::Injected));
        let second = &plan.outcomes["second"];
        assert_eq!(second.state, Some(WorkloadState::Conflict));
        let m = second.message.as_ref().unwrap();
        assert!(
            m.contains("AIRFLOW_VAR_X") && m.contains("AIRFLOW_VAR_CHART"),
            "{m}"
        );
    }

    #[test]
    fn a_backend_the_chart_configures_the_same_way_is_left_as_is() {
        const CLASS: &str = "airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend";
        let chart = |class: &str| {
            deployment(
                json!([{"name": "worker", "env": [
                    {"name": "AIRFLOW__SECRETS__BACKEND", "value": class},
                    {"name": "AIRFLOW__SECRETS__BACKEND_KWARGS", "value": "{ \"namespace\":  \"ns\" }"}
                ]}]),
                json!({}),
                &[],
            )
        };
        let mut delivery = inject(
            &[
                ("AIRFLOW__SECRETS__BACKEND", "k1"),
                ("AIRFLOW__SECRETS__BACKEND_KWARGS", "k2"),
                ("AIRFLOW__WORKERS__SECRETS_BACKEND", "k3"),
            ],
            "b-airflow",
            "h",
        );
        if let Delivery::Inject { plain, .. } = &mut delivery {
            plain.insert("AIRFLOW__SECRETS__BACKEND".into(), CLASS.into());
            plain.insert(
                "AIRFLOW__SECRETS__BACKEND_KWARGS".into(),
                r#"{"namespace":"ns"}"#.into(),
            );
        }
        let n = names(&["b-airflow"]);
        let claims = [Claim {
            binding: "b",
            containers: vec!["worker".into()],
            delivery: &delivery,
            secret_names: &n,
        }];
        let plan = plan_workload(&chart(CLASS), &claims, &n);
        assert_eq!(plan.outcomes["b"].state, Some(WorkloadState::Injected));
        let env = &plan.apply.unwrap()["spec"]["template"]["spec"]["containers"][0]["env"];
        let set: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            set,
            ["AIRFLOW__WORKERS__SECRETS_BACKEND"],
            "only what is missing"
        );

        let plan = plan_workload(
            &chart("airflow.secrets.local_filesystem.LocalFilesystemBackend"),
            &claims,
            &n,
        );
        let out = &plan.outcomes["b"];
        assert_eq!(out.state, Some(WorkloadState::Conflict));
        let m = out.message.as_ref().unwrap();
        assert!(m.contains(&format!("set secretBackend: {CLASS}")), "{m}");
    }

    #[test]
    fn held_bindings_keep_what_is_live_and_released_ones_leave() {
        let d = deployment(
            json!([{"name": "worker", "env": [
                {"name": "AIRFLOW_CONN_A", "valueFrom": {"secretKeyRef": {"name": "a-airflow", "key": "AIRFLOW_CONN_A"}}},
                {"name": "AIRFLOW_CONN_B", "valueFrom": {"secretKeyRef": {"name": "b-airflow", "key": "AIRFLOW_CONN_B"}}}
            ]}]),
            json!({"content-hash.airflow-secrets.io/a": "ha", "content-hash.airflow-secrets.io/b": "hb"}),
            &["airflow-secrets-operator"],
        );
        let (na, nb) = (names(&["a-airflow"]), names(&["b-airflow"]));
        let ours: BTreeSet<String> = na.union(&nb).cloned().collect();
        let claims = [
            Claim {
                binding: "a",
                containers: vec!["worker".into()],
                delivery: &Delivery::Hold,
                secret_names: &na,
            },
            Claim {
                binding: "b",
                containers: vec!["worker".into()],
                delivery: &Delivery::Hold,
                secret_names: &nb,
            },
        ];
        assert_eq!(
            plan_workload(&d, &claims, &ours).apply,
            None,
            "holding changes nothing"
        );
        let claims = [
            Claim {
                binding: "a",
                containers: vec!["worker".into()],
                delivery: &Delivery::Hold,
                secret_names: &na,
            },
            Claim {
                binding: "b",
                containers: vec!["worker".into()],
                delivery: &Delivery::Release,
                secret_names: &nb,
            },
        ];
        let plan = plan_workload(&d, &claims, &ours);
        let body = plan.apply.unwrap();
        let env = body["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0]["name"], "AIRFLOW_CONN_A");
        assert_eq!(
            body["spec"]["template"]["metadata"]["annotations"],
            json!({"content-hash.airflow-secrets.io/a": "ha"})
        );
        assert!(!plan.outcomes.contains_key("b"));
    }

    #[test]
    fn the_environment_limit_is_counted_per_container_across_bindings() {
        let d = deployment(json!([{"name": "worker"}]), json!({}), &[]);
        let big = |secret: &str| Delivery::Inject {
            env: vec![EnvRef {
                env_name: format!("AIRFLOW_VAR_{secret}"),
                secret_name: secret.into(),
                secret_key: "k".into(),
            }],
            env_from: vec![],
            rollout_hash: Some("h".into()),
            env_bytes: MAX_ENV_TOTAL / 2 + 1,
            plain: BTreeMap::new(),
        };
        let (d1, d2) = (big("one"), big("two"));
        let (n1, n2) = (names(&["one"]), names(&["two"]));
        let claims = [
            Claim {
                binding: "one",
                containers: vec!["worker".into()],
                delivery: &d1,
                secret_names: &n1,
            },
            Claim {
                binding: "two",
                containers: vec!["worker".into()],
                delivery: &d2,
                secret_names: &n2,
            },
        ];
        let plan = plan_workload(&d, &claims, &names(&["one", "two"]));
        assert_eq!(plan.outcomes["one"].state, Some(WorkloadState::Injected));
        assert_eq!(plan.outcomes["two"].state, Some(WorkloadState::TooLarge));
    }

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
