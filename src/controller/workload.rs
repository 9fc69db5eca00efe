//! The workload controller: one writer per Deployment. It combines the deliveries of every
//! binding that targets a Deployment ([`crate::plan::workload`]) and applies them in one write,
//! after the bindings involved have settled, so that however many bindings land or change
//! together a Deployment rolls once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::binding::{MANAGED_BY, key_of, labels, secret_name};
use super::index::Key;
use super::{Context, Error};
use crate::api::{AirflowSecretBinding, WorkloadStatus};
use crate::plan::select::{component_of, select_workloads};
use crate::plan::workload::{Claim, Delivery, FIELD_MANAGER, plan_workload, workload_release};

/// How long a Deployment waits for the bindings that target it to finish planning before it is
/// written with what is known (bindings still unplanned keep what they have on it).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// Trailing-edge debounce of workload writes: changes that arrive within this time of each other
/// are written together.
pub const DEBOUNCE: Duration = Duration::from_millis(1500);

/// One binding of the Deployment's namespace, as the workload plan needs it.
struct Member {
    binding: Arc<AirflowSecretBinding>,
    containers: Vec<String>,
    delivery: Delivery,
    secret_names: BTreeSet<String>,
    settled: bool,
}

/// Reconciles one Deployment.
pub(super) async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = d.namespace().unwrap_or_default();
    let key: Key = (ns.clone(), d.name_any());
    if ctx.bindings.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let members = members(&d, &ctx);
    if members.is_empty() && !carries_anything(&d) {
        ctx.index.lock().expect("index").outcomes.remove(&key);
        return Ok(Action::await_change());
    }
    if members.iter().any(|m| !m.settled) {
        let mut index = ctx.index.lock().expect("index");
        let since = *index
            .waiting_since
            .entry(key.clone())
            .or_insert_with(Instant::now);
        if since.elapsed() < SETTLE_LIMIT {
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
    }
    ctx.index.lock().expect("index").waiting_since.remove(&key);
    let ours = ours(&ctx, &ns, &members);
    let claims: Vec<Claim<'_>> = members
        .iter()
        .map(|m| Claim {
            binding: m.binding.metadata.name.as_deref().unwrap_or_default(),
            containers: m.containers.clone(),
            delivery: if m.settled {
                &m.delivery
            } else {
                &Delivery::Hold
            },
            secret_names: &m.secret_names,
        })
        .collect();
    let plan = plan_workload(&d, &claims, &ours);
    let mut outcomes = plan.outcomes.clone();
    let component = component_of(&d);
    for o in outcomes.values_mut() {
        o.name = d.name_any();
        o.component = component;
    }
    if let Some(body) = &plan.apply {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .patch(
                &d.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => {
                ctx.metrics.workload_writes.inc();
                for legacy in &plan.release_managers {
                    api.patch(
                        &d.name_any(),
                        &PatchParams::apply(legacy).force(),
                        &Patch::Apply(workload_release(&d.name_any())),
                    )
                    .await?;
                }
                announce_rollouts(&ctx, &d, &members, &plan.rollouts).await;
            }
            // 404: the Deployment is gone; 409/422: the API server refused the combination
            // (a field someone else forces, an entry the plan could not foresee).
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                for o in outcomes.values_mut() {
                    o.state = None;
                    o.message = Some(format!("the API server refused the update: {}", s.message));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    record(&ctx, &key, outcomes);
    Ok(Action::await_change())
}

/// The bindings of the Deployment's namespace that select it or have entries on it, in
/// precedence order (created first, then by name).
fn members(d: &Deployment, ctx: &Context) -> Vec<Member> {
    let ns = d.namespace();
    let mut bindings: Vec<Arc<AirflowSecretBinding>> = ctx
        .bindings
        .state()
        .into_iter()
        .filter(|b| b.namespace() == ns)
        .collect();
    bindings.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.name_any(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.name_any(),
            ))
    });
    let index = ctx.index.lock().expect("index");
    bindings
        .into_iter()
        .map(|b| {
            let deleting = b.meta().deletion_timestamp.is_some();
            let containers = match (&b.spec.target.workloads, deleting) {
                (Some(sel), false) => select_workloads(
                    std::slice::from_ref(d),
                    sel,
                    &b.spec.target.components,
                    &b.spec.target.containers,
                )
                .pop()
                .map(|w| w.containers)
                .unwrap_or_default(),
                _ => vec![],
            };
            let state = index.bindings.get(&key_of(&b));
            let answer = super::binding::answer_of(&b);
            let settled = state.is_some_and(|s| {
                s.answered.as_ref() == Some(&answer)
                    || (deleting && s.delivery == Delivery::Release)
            });
            let mut secret_names = state.map(|s| s.secret_names.clone()).unwrap_or_default();
            secret_names.insert(secret_name(&b));
            let delivery = state.map(|s| s.delivery.clone()).unwrap_or(Delivery::Hold);
            Member {
                binding: b,
                containers,
                delivery,
                secret_names,
                settled,
            }
        })
        .filter(|m| {
            !m.containers.is_empty()
                || crate::plan::workload::carries_binding(
                    d,
                    &m.secret_names,
                    &crate::plan::workload::pod_annotation_key(&m.binding.name_any()),
                )
        })
        .collect()
}

/// Whether the Deployment has any of the operator's annotations or first-version managers.
fn carries_anything(d: &Deployment) -> bool {
    let annotated = crate::plan::workload::template_annotations(d)
        .keys()
        .any(|k| k.starts_with(crate::plan::workload::ROLLOUT_ANNOTATION_PREFIX));
    annotated || !crate::plan::workload::legacy_managers(&d.metadata).is_empty()
}

/// Every Secret name the operator writes in a namespace: env entries referring to them are ours.
fn ours(ctx: &Context, ns: &str, members: &[Member]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ctx
        .secrets
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| s.labels().get(MANAGED_BY).map(String::as_str) == Some(FIELD_MANAGER))
        .map(|s| s.name_any())
        .collect();
    for m in members {
        out.extend(m.secret_names.iter().cloned());
    }
    out
}

/// Events and metrics for the bindings whose content rolls the Deployment.
async fn announce_rollouts(ctx: &Context, d: &Deployment, members: &[Member], rolled: &[String]) {
    for m in members
        .iter()
        .filter(|m| rolled.contains(&m.binding.name_any()))
    {
        info!(binding = %m.binding.name_any(), namespace = ?d.namespace(), deployment = %d.name_any(), "rolling out new content");
        ctx.metrics
            .rollouts
            .get_or_create(&labels(&m.binding))
            .inc();
        ctx.publish(
            &m.binding,
            EventType::Normal,
            "RolloutTriggered",
            "RolloutDeployment",
            &format!("Deployment {} rolls out new content", d.name_any()),
        )
        .await;
    }
}

/// Stores what the Deployment carries and wakes the bindings whose view of it changed.
fn record(ctx: &Context, key: &Key, outcomes: BTreeMap<String, WorkloadStatus>) {
    let before = {
        let mut index = ctx.index.lock().expect("index");
        index
            .outcomes
            .insert(key.clone(), outcomes.clone())
            .unwrap_or_default()
    };
    let names: BTreeSet<&String> = before.keys().chain(outcomes.keys()).collect();
    for b in names {
        if before.get(b) != outcomes.get(b) {
            let _ = ctx
                .to_bindings
                .unbounded_send(ObjectRef::new(b).within(&key.0));
        }
    }
}
