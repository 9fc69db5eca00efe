//! What one binding should write, computed without I/O from what the observe step found: the
//! content of its Secrets (or none, when the last good content must be held), what it delivers to
//! its Deployments, the entries for status, and the verdict for its Ready condition.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::{
    AirflowSecretBinding, EntryState, EntryStatus, Injection, MassDeletionPolicy, WorkloadState,
    WorkloadStatus,
};
use crate::entries::{Fetched, ResolvedEntry};
use crate::plan::content::{self, Content, env_name_of};
use crate::plan::status::{Verdict, reason};
use crate::plan::workload::Delivery;
use crate::plan::{held, labelled};
use kube::ResourceExt;

/// What reading Secrets Manager gave.
#[derive(Debug, Clone)]
pub enum Read {
    /// Shared with the binding's state in the controller, which keeps the last read: planning
    /// reads them without a copy (10,000 entries with their values are megabytes).
    Entries(Arc<Vec<ResolvedEntry>>),
    /// The read failed as a whole (endpoint down, throttled, listing refused): nothing changes.
    Failed(String),
    /// The binding may not read (its source refuses it or does not exist): nothing is read,
    /// nothing changes.
    Refused(Problem),
}

/// Everything the binding plan looks at.
#[derive(Debug, Clone)]
pub struct BindingInput<'a> {
    pub binding: &'a AirflowSecretBinding,
    /// Name of the managed Secret (its first part).
    pub secret_name: String,
    pub read: Read,
    /// Lookup patterns that cannot be used, as Invalid lines.
    pub pattern_problems: Vec<EntryStatus>,
    /// The data the managed Secrets hold now (key → value), where needed and known.
    pub last_good: Option<&'a BTreeMap<String, String>>,
    /// A Secret this binding would write that exists and is not its own.
    pub foreign_secret: Option<String>,
    /// How the binding reaches Secrets Manager (Backend mode hands it to Airflow's backend).
    pub origin: &'a crate::source::Origin,
    /// The force-sync annotation has a value the binding was not planned with before.
    pub forced: bool,
    /// `KubernetesBackend` delivery: ids other bindings label already in the namespace the
    /// backend reads (and were created first), by kind and id → that binding.
    pub taken: &'a BTreeMap<crate::plan::labelled::LabelledId, String>,
}

/// A problem of the whole binding: Ready is False with this reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The binding's plan.
#[derive(Debug, Clone)]
pub struct BindingPlan {
    /// The Secrets to write; None leaves them as they are.
    pub content: Option<Content>,
    pub delivery: Delivery,
    /// Entries for status; None keeps the previous status's entries (content held back).
    pub entries: Option<Vec<EntryStatus>>,
    pub problem: Option<Problem>,
}

/// Plans one binding.
pub fn plan_binding(mut input: BindingInput<'_>) -> BindingPlan {
    let binding = input.binding;
    let spec = &binding.spec;
    let resolved = match std::mem::replace(&mut input.read, Read::Entries(Arc::default())) {
        Read::Failed(message) => {
            return BindingPlan {
                content: None,
                delivery: Delivery::Hold,
                entries: None,
                problem: Some(Problem {
                    reason: reason::SECRETS_MANAGER_UNAVAILABLE,
                    message: format!("{message}; the managed Secret keeps its last good content"),
                }),
            };
        }
        Read::Refused(problem) => {
            return BindingPlan {
                content: None,
                delivery: Delivery::Hold,
                entries: None,
                problem: Some(problem),
            };
        }
        Read::Entries(e) => e,
    };
    let injection = spec.target.injection;
    let conversion = held::Conversion::of(spec);
    let (resolved, mut desired, labelled) = delivered(&input, resolved);
    let env_bytes = match injection {
        Injection::SecretOnly => 0,
        _ => content::enforce_env_limits(&mut desired),
    };
    if let Some(held) = emptied_source(binding, &desired.entries, input.forced) {
        return BindingPlan {
            content: None,
            delivery: Delivery::Hold,
            entries: None,
            problem: Some(held),
        };
    }
    let source_digest = held::digest_of_content(&resolved, &desired.entries, conversion);
    // The values read are in the content now: at 10,000 entries, every copy held while the
    // content is split and written counts.
    drop(resolved);
    let entries = if input.pattern_problems.is_empty() {
        std::mem::take(&mut desired.entries)
    } else {
        let mut all = input.pattern_problems;
        all.append(&mut desired.entries);
        all
    };
    if let Some(name) = input.foreign_secret {
        return BindingPlan {
            content: None,
            delivery: Delivery::Hold,
            entries: Some(entries),
            problem: Some(Problem {
                reason: reason::SECRET_NOT_OWNED,
                message: format!(
                    "Secret {name} exists and is not managed by this binding; it is left untouched (choose another spec.target.secretName or delete that Secret)"
                ),
            }),
        };
    }
    let mut content = content::split(desired, &input.secret_name);
    content.source_digest = source_digest;
    content.labelled = labelled;
    let delivery = delivery_of(
        spec,
        &content,
        env_bytes,
        backend_options(binding, input.origin),
    );
    BindingPlan {
        content: Some(content),
        delivery,
        entries: Some(entries),
        problem: None,
    }
}

/// The entries as delivered (with the backend options of the KubernetesBackend delivery), the
/// content, and the labelled Secrets of that delivery.
/// Held entries ([`Fetched::Held`]) take their converted value from the managed Secret's data.
fn delivered(
    input: &BindingInput<'_>,
    mut resolved: Arc<Vec<ResolvedEntry>>,
) -> (
    Arc<Vec<ResolvedEntry>>,
    content::DesiredSecret,
    Vec<labelled::LabelledSecret>,
) {
    let binding = input.binding;
    let injection = binding.spec.target.injection;
    let backend = injection == Injection::KubernetesBackend;
    let own_ns = binding.metadata.namespace.clone().unwrap_or_default();
    let target_ns = labelled::target_namespace(binding);
    if backend {
        Arc::make_mut(&mut resolved).extend(labelled::backend_entries(&target_ns));
    }
    let words = binding.spec.extra_conn_words();
    let mut desired = content::desired_secret_holding(&resolved, input.last_good, injection, words);
    carry_warnings(binding, &resolved, &mut desired.entries);
    if backend {
        labelled::check_ids(
            &mut desired.entries,
            input.taken,
            binding.spec.team.as_deref(),
        );
    }
    if let Some(previous) = input.last_good {
        content::keep_last_good(&mut desired, previous);
    }
    let labelled = if backend {
        let name = binding.name_any();
        let placement = labelled::Placement {
            binding: &name,
            namespace: &own_ns,
            target: &target_ns,
        };
        let l = labelled::take_labelled(&mut desired, placement, binding.spec.team.as_deref());
        content::rehash(&mut desired);
        l
    } else {
        vec![]
    };
    (resolved, desired, labelled)
}

/// What the binding hands its Deployments for this content.
fn delivery_of(
    spec: &crate::api::AirflowSecretBindingSpec,
    content: &Content,
    env_bytes: usize,
    plain: BTreeMap<String, String>,
) -> Delivery {
    let injection = spec.target.injection;
    let rollout_hash = spec
        .target
        .rollout_on_change
        .then(|| content.content_hash.clone());
    match injection {
        Injection::SecretOnly => Delivery::Release,
        Injection::Env | Injection::KubernetesBackend => Delivery::Inject {
            env: content.env_refs(),
            env_from: vec![],
            rollout_hash,
            env_bytes,
            plain,
        },
        Injection::EnvFrom => Delivery::Inject {
            env: vec![],
            env_from: content.parts.iter().map(|p| p.name.clone()).collect(),
            rollout_hash,
            env_bytes,
            plain,
        },
    }
}

/// The options that configure a secrets backend (Backend mode, the KubernetesBackend
/// delivery), by env name: not secret, so a chart that sets them to the same value is fine.
fn backend_options(
    binding: &AirflowSecretBinding,
    origin: &crate::source::Origin,
) -> BTreeMap<String, String> {
    let spec = &binding.spec;
    let entries = if spec.mode == crate::api::Mode::Backend {
        crate::plan::backend::backend_entries(spec, origin)
    } else if spec.target.injection == Injection::KubernetesBackend {
        labelled::backend_entries(&labelled::target_namespace(binding))
    } else {
        vec![]
    };
    entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Fetched::Value(v) => Some((env_name_of(e), v.clone())),
            _ => None,
        })
        .collect()
}

/// A held value was not converted now, so its conversion warnings come from the status line
/// written when it was (same entry, same version).
fn carry_warnings(
    binding: &AirflowSecretBinding,
    resolved: &[ResolvedEntry],
    statuses: &mut [EntryStatus],
) {
    let Some(before) = binding.status.as_ref().map(|s| &s.entries) else {
        return;
    };
    for (e, s) in resolved.iter().zip(statuses.iter_mut()) {
        if !matches!(e.outcome, Fetched::Converted(_) | Fetched::Held)
            || s.state != EntryState::Synced
        {
            continue;
        }
        s.message = before
            .iter()
            .find(|b| {
                b.kind == s.kind
                    && b.name == s.name
                    && b.version_id == s.version_id
                    && b.state == EntryState::Synced
            })
            .and_then(|b| b.message.clone());
    }
}

/// The guard against an emptied source: with an unchanged spec, a refresh that finds fewer than
/// half of the entries synced before (and at least two fewer) is held, unless the binding follows
/// mass deletions or the user forced this sync.
pub fn emptied_source(
    binding: &AirflowSecretBinding,
    entries: &[EntryStatus],
    forced: bool,
) -> Option<Problem> {
    if binding.spec.mass_deletion_policy == MassDeletionPolicy::Follow || forced {
        return None;
    }
    let status = binding.status.as_ref()?;
    if status.observed_generation != binding.metadata.generation {
        return None;
    }
    let before = status.synced_entries.unwrap_or(0);
    let found = entries
        .iter()
        .filter(|e| e.state != EntryState::NotFound)
        .count() as i64;
    if before - found >= 2 && found * 2 < before {
        return Some(Problem {
            reason: reason::SOURCE_EMPTIED,
            message: format!(
                "Secrets Manager now shows {found} of the {before} entries synced before; the last good content is held on the agents. Check the region, the role's secretsmanager:ListSecrets permission and the prefixes; if the deletions are intended, set a new value on the annotation airflow-secrets.io/force-sync (or spec.massDeletionPolicy: Follow)"
            ),
        });
    }
    None
}

/// The Ready condition and warnings, from the binding's own problem, its entries and what its
/// Deployments carry.
pub fn verdict(
    problem: Option<&Problem>,
    entries: &[EntryStatus],
    workloads: &[WorkloadStatus],
    shadowing: &[String],
    secret_name: &str,
) -> Verdict {
    let warnings = if shadowing.is_empty() {
        vec![]
    } else {
        vec![(
            reason::BACKEND_SHADOWING,
            reason::BACKEND_SHADOWING,
            shadowing.join("; "),
        )]
    };
    let not_ready = |reason: &'static str, message: String| Verdict {
        ready: false,
        reason,
        message,
        warnings: warnings.clone(),
    };
    if let Some(p) = problem {
        return not_ready(p.reason, p.message.clone());
    }
    if let Some((reason, message)) = workload_problem(workloads) {
        return not_ready(reason, message);
    }
    let bad = entries
        .iter()
        .filter(|e| e.state != EntryState::Synced)
        .count();
    let (reason, message) = if bad > 0 {
        (
            reason::SYNCED_WITH_ERRORS,
            format!(
                "{bad} of {} entries are not injected; see status.entries",
                entries.len()
            ),
        )
    } else {
        (
            reason::SYNCED,
            format!(
                "{} entries in Secret {secret_name}, injected into {} workloads",
                entries.len(),
                workloads.len()
            ),
        )
    };
    Verdict {
        ready: true,
        reason,
        message,
        warnings,
    }
}

/// The worst thing the binding's Deployments report: a conflict, a too large environment, a
/// refused write, or a write still to come.
fn workload_problem(workloads: &[WorkloadStatus]) -> Option<(&'static str, String)> {
    let troubled = |state: Option<WorkloadState>| -> Vec<String> {
        workloads
            .iter()
            .filter(|w| w.state == state && (state.is_some() || w.message.is_some()))
            .map(|w| {
                format!(
                    "Deployment {}: {}",
                    w.name,
                    w.message.clone().unwrap_or_default()
                )
            })
            .collect()
    };
    for (state, reason) in [
        (Some(WorkloadState::Conflict), reason::WORKLOAD_CONFLICT),
        (Some(WorkloadState::TooLarge), reason::TOO_LARGE),
        (None, reason::WRITE_FAILED),
    ] {
        let found = troubled(state);
        if !found.is_empty() {
            return Some((reason, found.join("; ")));
        }
    }
    let pending = workloads
        .iter()
        .filter(|w| w.state == Some(WorkloadState::Pending))
        .count();
    (pending > 0).then(|| {
        (
            reason::PROGRESSING,
            format!("{pending} Deployment(s) not yet updated with the new content"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AirflowSecretBindingStatus, EntryKind};
    use crate::entries::Fetched;
    use serde_json::json;

    fn binding(
        status: Option<AirflowSecretBindingStatus>,
        extra: serde_json::Value,
    ) -> AirflowSecretBinding {
        let mut spec = json!({
            "discovery": {"connectionsPrefix": "p"},
            "target": {"workloads": {"helmRelease": "r"}}
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let mut b: AirflowSecretBinding = serde_json::from_value(json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "b", "namespace": "n", "generation": 3, "uid": "u"},
            "spec": spec
        }))
        .unwrap();
        b.status = status;
        b
    }

    fn synced_before(n: i64) -> AirflowSecretBindingStatus {
        AirflowSecretBindingStatus {
            observed_generation: Some(3),
            synced_entries: Some(n),
            ..Default::default()
        }
    }

    fn conns(n: usize) -> Vec<ResolvedEntry> {
        (0..n)
            .map(|i| ResolvedEntry {
                kind: EntryKind::Connection,
                name: format!("c{i}"),
                config: None,
                secret_id: format!("p/c{i}"),
                version_id: Some("v".into()),
                outcome: Fetched::Value(format!("postgres://h/{i}")),
                team: None,
            })
            .collect()
    }

    fn input(b: &AirflowSecretBinding, read: Read) -> BindingInput<'_> {
        BindingInput {
            binding: b,
            secret_name: "b-airflow".into(),
            read,
            pattern_problems: vec![],
            last_good: None,
            origin: &NO_ORIGIN,
            foreign_secret: None,
            forced: false,
            taken: &NOTHING_TAKEN,
        }
    }

    static NO_ORIGIN: crate::source::Origin = crate::source::Origin {
        region: None,
        role_arn: None,
        external_id: None,
        endpoint: None,
        session_name: None,
        session_tags: vec![],
    };
    static NOTHING_TAKEN: BTreeMap<crate::plan::labelled::LabelledId, String> = BTreeMap::new();

    #[test]
    fn an_emptied_source_is_held_unless_forced_or_followed() {
        let b = binding(Some(synced_before(20)), json!({}));
        let plan = plan_binding(input(&b, Read::Entries(Arc::default())));
        assert!(plan.content.is_none(), "nothing is written");
        assert_eq!(plan.delivery, Delivery::Hold);
        assert_eq!(plan.problem.unwrap().reason, reason::SOURCE_EMPTIED);
        // A small fraction is held too; a single deletion is followed.
        let plan = plan_binding(input(&b, Read::Entries(conns(3).into())));
        assert!(plan.content.is_none());
        let plan = plan_binding(input(&b, Read::Entries(conns(19).into())));
        assert_eq!(plan.content.unwrap().parts[0].data.len(), 19);
        let b1 = binding(Some(synced_before(1)), json!({}));
        assert!(
            plan_binding(input(&b1, Read::Entries(Arc::default())))
                .content
                .is_some()
        );
        // Forced, followed, or a changed spec: applied.
        let mut forced = input(&b, Read::Entries(Arc::default()));
        forced.forced = true;
        assert!(plan_binding(forced).content.is_some());
        let follow = binding(
            Some(synced_before(20)),
            json!({"massDeletionPolicy": "Follow"}),
        );
        assert!(
            plan_binding(input(&follow, Read::Entries(Arc::default())))
                .content
                .is_some()
        );
        let mut edited = synced_before(20);
        edited.observed_generation = Some(2);
        let edited = binding(Some(edited), json!({}));
        assert!(
            plan_binding(input(&edited, Read::Entries(Arc::default())))
                .content
                .is_some()
        );
    }

    #[test]
    fn a_failed_read_holds_everything() {
        let b = binding(Some(synced_before(2)), json!({}));
        let plan = plan_binding(input(
            &b,
            Read::Failed("ListSecrets failed: timeout".into()),
        ));
        assert!(plan.content.is_none() && plan.entries.is_none());
        assert_eq!(plan.delivery, Delivery::Hold);
        let p = plan.problem.unwrap();
        assert_eq!(p.reason, reason::SECRETS_MANAGER_UNAVAILABLE);
        assert!(p.message.contains("last good content"));
    }

    #[test]
    fn delivery_follows_the_injection() {
        let b = binding(None, json!({}));
        match plan_binding(input(&b, Read::Entries(conns(2).into()))).delivery {
            Delivery::Inject {
                env, rollout_hash, ..
            } => {
                assert_eq!(env.len(), 2);
                assert!(rollout_hash.is_some());
            }
            other => panic!("{other:?}"),
        }
        let b = binding(None, json!({"target": {"injection": "SecretOnly"}}));
        assert_eq!(
            plan_binding(input(&b, Read::Entries(conns(2).into()))).delivery,
            Delivery::Release
        );
        let b = binding(
            None,
            json!({"target": {"workloads": {"helmRelease": "r"}, "injection": "EnvFrom", "rolloutOnChange": false}}),
        );
        match plan_binding(input(&b, Read::Entries(conns(2).into()))).delivery {
            Delivery::Inject {
                env,
                env_from,
                rollout_hash,
                ..
            } => {
                assert!(env.is_empty());
                assert_eq!(env_from, ["b-airflow"]);
                assert!(rollout_hash.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_foreign_secret_is_never_written() {
        let b = binding(None, json!({}));
        let mut i = input(&b, Read::Entries(conns(1).into()));
        i.foreign_secret = Some("b-airflow".into());
        let plan = plan_binding(i);
        assert!(plan.content.is_none());
        assert_eq!(plan.problem.unwrap().reason, reason::SECRET_NOT_OWNED);
        assert_eq!(plan.entries.unwrap().len(), 1);
    }

    #[test]
    fn verdict_names_the_worst_problem_first() {
        let w = |state: Option<WorkloadState>, message: Option<&str>| WorkloadStatus {
            name: "d".into(),
            component: None,
            containers: vec![],
            state,
            content_hash: None,
            message: message.map(str::to_string),
        };
        let v = verdict(
            None,
            &[],
            &[
                w(Some(WorkloadState::Injected), None),
                w(Some(WorkloadState::Conflict), Some("AIRFLOW_VAR_X")),
            ],
            &[],
            "s",
        );
        assert!(!v.ready);
        assert_eq!(v.reason, reason::WORKLOAD_CONFLICT);
        assert!(v.message.contains("AIRFLOW_VAR_X"));
        let v = verdict(None, &[], &[w(None, Some("HTTP 500"))], &[], "s");
        assert_eq!(v.reason, reason::WRITE_FAILED);
        let v = verdict(
            None,
            &[],
            &[w(Some(WorkloadState::Pending), None)],
            &[],
            "s",
        );
        assert_eq!(v.reason, reason::PROGRESSING);
        let v = verdict(
            None,
            &[],
            &[w(Some(WorkloadState::Injected), None)],
            &["shadowed".into()],
            "s",
        );
        assert!(v.ready);
        assert_eq!(v.warnings.len(), 1);
    }
}
