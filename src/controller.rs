//! The controller: watches bindings, the Secrets they own (metadata only) and Deployments, and
//! reconciles each binding: resolve (Secrets Manager, cached) → desired state (pure) → apply
//! (server-side apply) → status and Events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{
    AirflowSecretBinding, AirflowSecretBindingStatus, EntryState, EntryStatus, Injection, Mode,
    WorkloadStatus,
};
use crate::desired::{self, DesiredSecret, HASH_ANNOTATION, ResolvedEntry};
use crate::metrics::{BindingLabels, EntryLabels, Metrics};
use crate::resolve::{DiscoveryPatterns, ResolveError, SecretsManager};

/// Field manager prefix; each binding applies under `airflow-secrets-operator/<binding>` so that
/// two bindings touching one Deployment conflict instead of silently replacing each other.
pub const MANAGER: &str = "airflow-secrets-operator";
/// Finalizer that removes our env from workloads before a binding goes away.
pub const FINALIZER: &str = "airflow-secrets.io/cleanup";
/// Changing this annotation's value on a binding forces a re-read of Secrets Manager.
pub const FORCE_SYNC_ANNOTATION: &str = "airflow-secrets.io/force-sync";
/// Label on every managed Secret: the binding's name.
pub const BINDING_LABEL: &str = "airflow-secrets.io/binding";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Condition type and reasons, as constants users can grep and alert on.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const SYNCED: &str = "Synced";
    pub const SYNCED_WITH_ERRORS: &str = "SyncedWithEntryErrors";
    pub const SECRETS_MANAGER_UNAVAILABLE: &str = "SecretsManagerUnavailable";
    pub const SECRET_NOT_OWNED: &str = "SecretNotOwned";
    pub const WORKLOAD_CONFLICT: &str = "WorkloadConflict";
    pub const BACKEND_SHADOWING: &str = "BackendShadowing";
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    SecretsManager(#[from] ResolveError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("{0}")]
    Spec(String),
}

/// What the last successful read of Secrets Manager gave, per binding.
struct Resolved {
    generation: Option<i64>,
    force: Option<String>,
    at: Instant,
    when: Timestamp,
    entries: Vec<ResolvedEntry>,
}

impl Resolved {
    /// What was just read for `binding` (at its current generation and force-sync value).
    fn now(
        binding: &AirflowSecretBinding,
        force: Option<String>,
        entries: Vec<ResolvedEntry>,
    ) -> Resolved {
        Resolved {
            generation: binding.metadata.generation,
            force,
            at: Instant::now(),
            when: Timestamp::now(),
            entries,
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub secrets_manager: Arc<SecretsManager>,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    resolved: Mutex<HashMap<(String, String), Resolved>>,
}

impl Context {
    pub fn new(
        client: Client,
        secrets_manager: Arc<SecretsManager>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            secrets_manager,
            metrics,
            resolved: Mutex::default(),
        })
    }
}

/// Fails, saying what to do, when the binding API cannot be listed (CRD missing, no rights).
pub async fn ensure_crd(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    let bindings: Api<AirflowSecretBinding> = scoped(client, namespace);
    if let Err(e) = bindings.list(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list AirflowSecretBindings ({e}); is the CRD installed (`airflow-secrets-operator crd | kubectl apply -f -`)?"
        );
    }
    Ok(())
}

/// Runs the controller until the process is asked to stop. `namespace` limits it to one
/// namespace (a namespace-scoped install); `None` watches all. Call [`ensure_crd`] first.
pub async fn run(
    client: Client,
    secrets_manager: Arc<SecretsManager>,
    metrics: Arc<Metrics>,
    namespace: Option<String>,
) -> anyhow::Result<()> {
    let bindings: Api<AirflowSecretBinding> = scoped(&client, namespace.as_deref());
    let ctx = Context::new(client.clone(), secrets_manager, metrics);
    // Owned Secrets are watched as metadata only: no Secret data sits in the operator's memory.
    let secrets: Api<PartialObjectMeta<Secret>> = scoped(&client, namespace.as_deref());
    let deployments: Api<Deployment> = scoped(&client, namespace.as_deref());
    let controller = Controller::new(bindings, watcher::Config::default().any_semantic());
    let store = controller.store();
    controller
        .owns(
            secrets,
            watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}")),
        )
        .watches(
            deployments,
            watcher::Config::default(),
            move |d: Deployment| {
                // A Deployment concerns every binding of its namespace (selection is cheap and done in
                // reconcile, from cached Secrets Manager data).
                let ns = d.namespace();
                store
                    .state()
                    .into_iter()
                    .filter(|b| b.namespace() == ns)
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(binding = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    Ok(())
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(binding: Arc<AirflowSecretBinding>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&labels(&binding))
        .inc();
    warn!(binding = %binding.name_any(), namespace = ?binding.namespace(), error = %error, "reconcile error; retrying");
    Action::requeue(with_jitter(Duration::from_secs(5)))
}

fn labels(binding: &AirflowSecretBinding) -> BindingLabels {
    BindingLabels {
        namespace: binding.namespace().unwrap_or_default(),
        binding: binding.name_any(),
    }
}

async fn reconcile(binding: Arc<AirflowSecretBinding>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let labels = labels(&binding);
    let result = reconcile_inner(binding, ctx.clone()).await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(
    binding: Arc<AirflowSecretBinding>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = binding
        .namespace()
        .ok_or_else(|| Error::Spec("binding without namespace".into()))?;
    let api: Api<AirflowSecretBinding> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, binding, |event| async {
        match event {
            Finalizer::Apply(b) => apply(&b, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(&b, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The field manager of one binding.
pub fn field_manager(binding_name: &str) -> String {
    let m = format!("{MANAGER}/{binding_name}");
    if m.len() <= 128 {
        m
    } else {
        format!("{MANAGER}/{}", &binding_name[..100])
    }
}

/// Name of the managed Secret.
pub fn secret_name(binding: &AirflowSecretBinding) -> String {
    binding
        .spec
        .target
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-airflow", binding.name_any()))
}

fn refresh_interval(binding: &AirflowSecretBinding) -> Duration {
    binding
        .spec
        .refresh_interval
        .parse::<kube::core::Duration>()
        .map(Duration::from)
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(1))
}

/// Adds up to 10 % random delay so that bindings created together do not refresh together.
fn with_jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() * 0.1)
}

async fn apply(binding: &AirflowSecretBinding, ctx: &Context) -> Result<Action, Error> {
    let ns = binding.namespace().unwrap_or_default();
    let name = binding.name_any();
    let manager = field_manager(&name);
    let interval = refresh_interval(binding);
    let (patterns, pattern_problems) = DiscoveryPatterns::compile(&binding.spec);

    // Resolve, or reuse what was read within the refresh interval for this generation.
    let key = (ns.clone(), name.clone());
    let force = binding.annotations().get(FORCE_SYNC_ANNOTATION).cloned();
    let fresh = {
        let cache = ctx.resolved.lock().expect("resolved lock");
        cache.get(&key).is_some_and(|r| {
            r.generation == binding.metadata.generation
                && r.force == force
                && r.at.elapsed() < interval
        })
    };
    if binding.spec.mode == Mode::Backend {
        let entries = desired::backend_entries(&binding.spec);
        let mut cache = ctx.resolved.lock().expect("resolved lock");
        let keep = cache.get(&key).is_some_and(|r| r.entries == entries);
        if !keep {
            cache.insert(key.clone(), Resolved::now(binding, force.clone(), entries));
        }
    } else if !fresh {
        match ctx.secrets_manager.resolve(&binding.spec, &patterns).await {
            Ok(entries) => {
                ctx.resolved
                    .lock()
                    .expect("resolved lock")
                    .insert(key.clone(), Resolved::now(binding, force.clone(), entries));
            }
            Err(e) => {
                // Keep the last good Secret untouched; say so in status and retry with backoff.
                let message = format!("{e}; the managed Secret keeps its last good content");
                set_ready(
                    binding,
                    ctx,
                    false,
                    reason::SECRETS_MANAGER_UNAVAILABLE,
                    &message,
                )
                .await?;
                publish(
                    ctx,
                    binding,
                    EventType::Warning,
                    "SyncFailed",
                    "ReadSecretsManager",
                    &message,
                )
                .await;
                return Err(e.into());
            }
        }
    }
    let (entries, synced_at) = {
        let cache = ctx.resolved.lock().expect("resolved lock");
        let r = cache.get(&key).expect("resolved above");
        (r.entries.clone(), r.when)
    };

    let extra_words = binding
        .spec
        .discovery
        .as_ref()
        .map(|d| d.extra_conn_words.clone())
        .unwrap_or_default();
    let injection = binding.spec.target.injection;
    let mut desired = desired::desired_secret(&entries, injection, &extra_words);

    // The managed Secret.
    let secret_name = secret_name(binding);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = secrets.get_opt(&secret_name).await?;
    if let Some(s) = &existing
        && !owned_by(s, binding)
    {
        let message = format!(
            "Secret {secret_name} exists and is not managed by this binding; it is left untouched (choose another spec.target.secretName or delete that Secret)"
        );
        let mut entries = pattern_problems;
        entries.extend(desired.entries);
        let observed = Observed {
            entries,
            workloads: vec![],
            content_hash: None,
            synced_at: Some(synced_at),
            ready: (false, reason::SECRET_NOT_OWNED, message),
            warnings: vec![],
        };
        ctx.metrics.conflicts.get_or_create(&labels(binding)).inc();
        write_status(binding, ctx, observed).await?;
        return Ok(Action::requeue(with_jitter(interval)));
    }
    if let Some(previous) = existing.as_ref().and_then(|s| s.data.as_ref()) {
        let previous: BTreeMap<String, String> = previous
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect();
        desired::keep_last_good(&mut desired, &previous);
    }
    let mut entry_status = pattern_problems;
    entry_status.extend(desired.entries.iter().cloned());
    let previous_hash = existing
        .as_ref()
        .and_then(|s| s.annotations().get(HASH_ANNOTATION).cloned());
    secrets
        .patch(
            &secret_name,
            &PatchParams::apply(&manager).force(),
            &Patch::Apply(secret_apply(binding, &secret_name, &desired)),
        )
        .await?;
    if previous_hash.as_deref() != Some(desired.content_hash.as_str()) {
        let verb = if existing.is_some() {
            "Updated"
        } else {
            "Created"
        };
        info!(binding = %name, namespace = %ns, secret = %secret_name, hash = %desired.content_hash, "{verb} managed Secret");
        publish(
            ctx,
            binding,
            EventType::Normal,
            verb,
            "WriteSecret",
            &format!("{verb} Secret {secret_name} ({} keys)", desired.data.len()),
        )
        .await;
    }

    // The workloads.
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let selected = if injection == Injection::SecretOnly {
        vec![]
    } else {
        let all = deployments.list(&ListParams::default()).await?.items;
        let selector = binding.spec.target.workloads.clone().unwrap_or_default();
        desired::select_workloads(
            &all,
            &selector,
            &binding.spec.target.components,
            &binding.spec.target.containers,
        )
    };
    let mut workload_status = Vec::new();
    let mut conflicts = Vec::new();
    let mut shadowing = Vec::new();
    let rollout_key = desired::pod_annotation_key(&name);
    for w in &selected {
        let before = deployments.get_opt(&w.name).await?;
        if let Some(warning) = before
            .as_ref()
            .and_then(|d| desired::backend_shadowing(d, &w.containers, &entry_status))
        {
            shadowing.push(format!("Deployment {}: {warning}", w.name));
        }
        let old_hash = before.as_ref().and_then(|d| template_hash(d, &rollout_key));
        let body = desired::workload_apply(
            w,
            &secret_name,
            &desired,
            injection,
            binding
                .spec
                .target
                .rollout_on_change
                .then_some(rollout_key.as_str()),
        );
        match deployments
            .patch(&w.name, &PatchParams::apply(&manager), &Patch::Apply(body))
            .await
        {
            Ok(_) => {
                if binding.spec.target.rollout_on_change
                    && old_hash.as_deref() != Some(desired.content_hash.as_str())
                {
                    info!(binding = %name, namespace = %ns, deployment = %w.name, "rolling out new content");
                    ctx.metrics.rollouts.get_or_create(&labels(binding)).inc();
                    publish(
                        ctx,
                        binding,
                        EventType::Normal,
                        "RolloutTriggered",
                        "RolloutDeployment",
                        &format!("Deployment {} rolls out new content", w.name),
                    )
                    .await;
                }
                workload_status.push(WorkloadStatus {
                    name: w.name.clone(),
                    component: w.component,
                    containers: w.containers.clone(),
                });
            }
            // 409: another field manager owns the field; 422: the chart sets a plain `value` for
            // a name we inject with `valueFrom` (an env entry cannot have both).
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                conflicts.push(format!("Deployment {}: {}", w.name, s.message));
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Release workloads we injected before and no longer select.
    let previously = binding
        .status
        .as_ref()
        .map(|s| s.workloads.clone())
        .unwrap_or_default();
    for old in previously
        .iter()
        .filter(|o| !selected.iter().any(|w| w.name == o.name))
    {
        release(&deployments, &old.name, &manager).await?;
    }

    if !conflicts.is_empty() {
        ctx.metrics.conflicts.get_or_create(&labels(binding)).inc();
    }
    for state in [
        EntryState::Synced,
        EntryState::NotFound,
        EntryState::Invalid,
        EntryState::Unrepresentable,
        EntryState::Conflict,
        EntryState::AccessDenied,
        EntryState::Error,
    ] {
        let n = entry_status.iter().filter(|e| e.state == state).count() as i64;
        let l = EntryLabels {
            namespace: ns.clone(),
            binding: name.clone(),
            state: format!("{state:?}"),
        };
        ctx.metrics.entries.get_or_create(&l).set(n);
    }
    let bad_entries = entry_status
        .iter()
        .filter(|e| e.state != EntryState::Synced)
        .count();
    let ready = if !conflicts.is_empty() {
        let message = format!(
            "{} (another binding or the chart already sets these fields)",
            conflicts.join("; ")
        );
        publish(
            ctx,
            binding,
            EventType::Warning,
            reason::WORKLOAD_CONFLICT,
            "ApplyDeployment",
            &message,
        )
        .await;
        (false, reason::WORKLOAD_CONFLICT, message)
    } else if bad_entries > 0 {
        (
            true,
            reason::SYNCED_WITH_ERRORS,
            format!(
                "{bad_entries} of {} entries are not injected; see status.entries",
                entry_status.len()
            ),
        )
    } else {
        (
            true,
            reason::SYNCED,
            format!(
                "{} entries in Secret {secret_name}, injected into {} workloads",
                entry_status.len(),
                workload_status.len()
            ),
        )
    };
    let remaining = {
        let cache = ctx.resolved.lock().expect("resolved lock");
        cache
            .get(&key)
            .map(|r| interval.saturating_sub(r.at.elapsed()))
            .unwrap_or(interval)
    };
    let mut warnings = Vec::new();
    if !shadowing.is_empty() {
        let message = shadowing.join("; ");
        publish(
            ctx,
            binding,
            EventType::Warning,
            reason::BACKEND_SHADOWING,
            "InspectDeployment",
            &message,
        )
        .await;
        warnings.push((
            reason::BACKEND_SHADOWING,
            reason::BACKEND_SHADOWING,
            message,
        ));
    }
    let observed = Observed {
        entries: entry_status,
        workloads: workload_status,
        content_hash: Some(desired.content_hash.clone()),
        synced_at: Some(synced_at),
        ready,
        warnings,
    };
    write_status(binding, ctx, observed).await?;
    Ok(Action::requeue(with_jitter(
        remaining.max(Duration::from_millis(200)),
    )))
}

/// Whether `secret` is controlled by `binding` (a controller ownerReference with its uid).
fn owned_by(secret: &Secret, binding: &AirflowSecretBinding) -> bool {
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == binding.uid().as_ref())
}

fn template_hash(d: &Deployment, key: &str) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

fn secret_apply(
    binding: &AirflowSecretBinding,
    name: &str,
    desired: &DesiredSecret,
) -> serde_json::Value {
    let owner = binding
        .controller_owner_ref(&())
        .expect("a stored binding has a uid");
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {MANAGED_BY: MANAGER, BINDING_LABEL: binding.name_any()},
            "annotations": {HASH_ANNOTATION: desired.content_hash},
            "ownerReferences": [owner],
        },
        "type": "Opaque",
        "stringData": desired.data,
    })
}

async fn release(deployments: &Api<Deployment>, name: &str, manager: &str) -> Result<(), Error> {
    match deployments
        .patch(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(desired::workload_release(name)),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn cleanup(binding: &AirflowSecretBinding, ctx: &Context) -> Result<Action, Error> {
    let ns = binding.namespace().unwrap_or_default();
    let name = binding.name_any();
    let manager = field_manager(&name);
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let mut names: Vec<String> = binding
        .status
        .as_ref()
        .map(|s| s.workloads.iter().map(|w| w.name.clone()).collect())
        .unwrap_or_default();
    if let Some(selector) = &binding.spec.target.workloads {
        let all = deployments.list(&ListParams::default()).await?.items;
        names.extend(
            desired::select_workloads(
                &all,
                selector,
                &binding.spec.target.components,
                &binding.spec.target.containers,
            )
            .into_iter()
            .map(|w| w.name),
        );
    }
    names.sort();
    names.dedup();
    for d in &names {
        release(&deployments, d, &manager).await?;
    }
    let secret_name = secret_name(binding);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = secrets.get_opt(&secret_name).await?
        && owned_by(&s, binding)
    {
        match binding.spec.deletion_policy {
            crate::api::DeletionPolicy::Delete => {
                secrets
                    .delete(&secret_name, &DeleteParams::default())
                    .await?;
            }
            crate::api::DeletionPolicy::Retain => {
                let patch =
                    json!({"metadata": {"ownerReferences": null, "labels": {BINDING_LABEL: null}}});
                secrets
                    .patch(&secret_name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
        }
    }
    ctx.resolved
        .lock()
        .expect("resolved lock")
        .remove(&(ns.clone(), name.clone()));
    info!(binding = %name, namespace = %ns, workloads = names.len(), "released");
    Ok(Action::await_change())
}

async fn set_ready(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    ok: bool,
    why: &'static str,
    message: &str,
) -> Result<(), Error> {
    let previous = binding.status.clone().unwrap_or_default();
    let observed = Observed {
        entries: previous.entries,
        workloads: previous.workloads,
        content_hash: previous.content_hash,
        synced_at: None,
        ready: (ok, why, message.to_string()),
        warnings: vec![],
    };
    write_status(binding, ctx, observed).await
}

/// What one reconcile found, for status.
struct Observed {
    entries: Vec<EntryStatus>,
    workloads: Vec<WorkloadStatus>,
    content_hash: Option<String>,
    synced_at: Option<Timestamp>,
    /// Ready: (ok, reason, message).
    ready: (bool, &'static str, String),
    /// Further conditions that are True: (type, reason, message).
    warnings: Vec<(&'static str, &'static str, String)>,
}

async fn write_status(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    observed: Observed,
) -> Result<(), Error> {
    let Observed {
        entries,
        workloads,
        content_hash,
        synced_at,
        ready: (ok, why, message),
        warnings,
    } = observed;
    let previous = binding.status.clone().unwrap_or_default();
    let status_str = if ok { "True" } else { "False" };
    let generation = binding.metadata.generation;
    let old_ready = previous
        .conditions
        .iter()
        .find(|c| c.type_ == reason::READY);
    let transition = match old_ready {
        Some(c) if c.status == status_str => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    let ready = Condition {
        type_: reason::READY.into(),
        status: status_str.into(),
        reason: why.into(),
        message,
        last_transition_time: transition,
        observed_generation: generation,
    };
    let mut conditions = vec![ready];
    for (type_, why, message) in warnings {
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| c.last_transition_time.clone());
        conditions.push(Condition {
            type_: type_.into(),
            status: "True".into(),
            reason: why.into(),
            message,
            last_transition_time: since.unwrap_or_else(|| Time(Timestamp::now())),
            observed_generation: generation,
        });
    }
    let status = AirflowSecretBindingStatus {
        conditions,
        observed_generation: generation,
        last_sync_time: synced_at.map(|t| t.to_string()).or(previous.last_sync_time),
        content_hash,
        secret_name: Some(secret_name(binding)),
        synced_entries: Some(
            entries
                .iter()
                .filter(|e| e.state == EntryState::Synced)
                .count() as i64,
        ),
        entries,
        workloads,
    };
    if binding.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<AirflowSecretBinding> =
        Api::namespaced(ctx.client.clone(), &binding.namespace().unwrap_or_default());
    api.patch_status(
        &binding.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    binding: &AirflowSecretBinding,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &binding.object_ref(&())).await {
        warn!(error = %e, "could not publish an Event");
    }
}
