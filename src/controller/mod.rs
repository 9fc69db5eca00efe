//! The controllers and their wiring. Data flows one way: observe (reflector caches of bindings,
//! Deployments and owned Secret metadata; the Secrets Manager reader) → plan ([`crate::plan`],
//! pure) → act (write only what differs).
//!
//! Two controllers share one [`index::Index`]:
//! - [`binding`] reconciles each binding: reads Secrets Manager, writes its Secrets and status,
//!   and publishes what it delivers to Deployments;
//! - [`workload`] reconciles each Deployment: one writer that combines every binding's delivery
//!   and applies it once, debounced, after the bindings involved have settled.

#![warn(clippy::too_many_lines)]

pub mod binding;
pub mod index;
pub mod labelled;
pub mod lenient;
pub mod owners;
#[cfg(test)]
mod props;
pub mod scope;
pub mod sources;
pub mod workload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

pub use crate::plan::status::reason;
pub use crate::plan::workload::FIELD_MANAGER as MANAGER;
pub use binding::{BINDING_LABEL, FORCE_SYNC_ANNOTATION, HASH_ANNOTATION, secret_name};
pub use scope::Scope;

use crate::api::AirflowSecretBinding;
use crate::metrics::Metrics;
use crate::secretsmanager::{ResolveError, SecretsManager};

/// Finalizer that removes our env from workloads before a binding goes away.
pub const FINALIZER: &str = "airflow-secrets.io/cleanup";
/// Bindings reconciled at the same time.
pub const BINDING_CONCURRENCY: u16 = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    SecretsManager(#[from] ResolveError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("Secret {0} exists and is not managed by this binding")]
    NotOwned(String),
    #[error("{0}")]
    Pending(String),
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub secrets_manager: Arc<SecretsManager>,
    pub metrics: Arc<Metrics>,
    /// Who publishes Events. A [`Recorder`] is made per Event: its cache (kept six minutes,
    /// to count repeats of one Event) would hold an Event per binding after a creation of
    /// thousands, and the operator publishes only on changes, never the same Event in a loop.
    reporter: Reporter,
    pub bindings: Store<AirflowSecretBinding>,
    /// The sources bindings read through, and what decides their grants.
    pub sources: sources::Sources,
    pub deployments: Store<Deployment>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// The namespaces the operator watches (a backend namespace must be one of them).
    pub scope: Scope,
    /// Which cached Secrets each binding controls ([`owners::Owners`]).
    pub owners: Arc<owners::Owners>,
    pub index: Mutex<index::Index>,
    to_workloads: UnboundedSender<ObjectRef<Deployment>>,
    to_bindings: UnboundedSender<ObjectRef<AirflowSecretBinding>>,
}

impl Context {
    /// Makes a binding reconcile now, reading Secrets Manager again (an event found that a
    /// secret it reads changed): marks it stale and triggers it.
    pub fn wake(&self, key: &index::Key) {
        self.index.lock().expect("index").binding(key).stale = true;
        let _ = self
            .to_bindings
            .unbounded_send(ObjectRef::new(&key.1).within(&key.0));
    }

    /// Wakes the bindings that read a secret whose version changed, or a listing whose members
    /// changed, or whose check began or stopped failing (as the shared view found); returns
    /// them.
    pub fn wake_changed(&self) -> std::collections::BTreeSet<index::Key> {
        let changed = self.secrets_manager.take_changed();
        let mut woken: std::collections::BTreeSet<index::Key> = self
            .index
            .lock()
            .expect("index")
            .mark_readers_stale(&changed)
            .into_iter()
            .collect();
        woken.extend(self.secrets_manager.take_woken());
        for k in &woken {
            self.wake(k);
        }
        woken
    }

    async fn publish(
        &self,
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
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&ev, &binding.object_ref(&())).await {
            warn!(error = %e, "could not publish an Event");
        }
    }
}

/// Fails, saying what to do, when the binding API cannot be listed (CRD missing, no rights) in
/// a namespace of the scope, or the source API and namespaces cannot be listed.
pub async fn ensure_crd(client: &Client, scope: &Scope) -> anyhow::Result<()> {
    let sources: Api<crate::api::AirflowSecretSource> = Api::all(client.clone());
    if let Err(e) = sources.list_metadata(&ListParams::default().limit(1)).await {
        anyhow::bail!(
            "cannot list AirflowSecretSources ({e}); are the CRDs of this version installed (`airflow-secrets-operator crd | kubectl apply --server-side -f -`) and may the operator read them?"
        );
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces
        .list_metadata(&ListParams::default().limit(1))
        .await
    {
        anyhow::bail!(
            "cannot list namespaces ({e}); the operator reads their labels for AirflowSecretSources' namespace selectors"
        );
    }
    for bindings in scope.apis::<AirflowSecretBinding>(client) {
        // Metadata only: a binding this version cannot read must not stop the start.
        if let Err(e) = bindings
            .list_metadata(&ListParams::default().limit(1))
            .await
        {
            let place = bindings.namespace().unwrap_or("all namespaces").to_string();
            anyhow::bail!(
                "cannot list AirflowSecretBindings in {place} ({e}); is the CRD installed (`airflow-secrets-operator crd | kubectl apply -f -`) and may the operator read there?"
            );
        }
    }
    Ok(())
}

/// Keeps what the controllers read of an object's metadata: of the managed fields only the
/// managers' names (to find the first version's managers), and no last-applied copy of the
/// object, so that the caches stay small.
fn slim_meta(m: &mut ObjectMeta) {
    if let Some(fields) = m.managed_fields.as_mut() {
        for f in fields.iter_mut() {
            *f = ManagedFieldsEntry {
                manager: f.manager.take(),
                ..Default::default()
            };
        }
    }
    if let Some(a) = m.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A Deployment as the cache keeps it: no status, slim metadata.
fn slim(d: &mut Deployment) {
    d.status = None;
    slim_meta(&mut d.metadata);
}

/// Name and namespace only: what a controller takes from a watch event (the object itself is
/// read from the cache). Events wait in [`on_own_task`]'s queue while the controllers start (a
/// restart lists every object at once); full copies there would double the memory.
fn reference(m: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        ..Default::default()
    }
}

/// Polls a watch stream on its own task, so that its cache fills whatever the controller that
/// consumes its events is busy with, and hands the events on.
fn on_own_task<T: Send + 'static>(
    events: impl futures::Stream<Item = T> + Send + 'static,
) -> impl futures::Stream<Item = T> {
    let (tx, rx) = unbounded();
    tokio::spawn(events.for_each(move |e| {
        let _ = tx.unbounded_send(e);
        futures::future::ready(())
    }));
    rx
}

/// The bindings' cache, complete, and its events. Every binding's explicit names are known to
/// the Secrets Manager view before the first reconcile, so that the first version check after a
/// start serves all of them.
async fn watch_bindings(
    client: &Client,
    scope: &Scope,
    secrets_manager: &SecretsManager,
    sources: &sources::Sources,
) -> anyhow::Result<(
    Store<AirflowSecretBinding>,
    impl futures::Stream<Item = Result<AirflowSecretBinding, watcher::Error>> + use<>,
)> {
    let (reader, writer) = reflector::store();
    let events = on_own_task(
        // Decoded one by one: a binding this version cannot read is reported, not a failed
        // list of every binding (lenient).
        scope::reflect_as::<lenient::Lenient, _, _>(
            client,
            scope,
            watcher::Config::default().any_semantic(),
            |b: &mut AirflowSecretBinding| slim_meta(&mut b.metadata),
            writer,
        )
        .applied_objects()
        .predicate_filter(what_reconciles(), PredicateConfig::default())
        .map_ok(|b| {
            let mut only = AirflowSecretBinding::new(&b.name_any(), Default::default());
            only.metadata.namespace = b.metadata.namespace;
            only
        }),
    );
    reader.wait_until_ready().await?;
    for b in reader
        .state()
        .iter()
        .filter(|b| lenient::unreadable(b).is_none())
    {
        if let Ok(grant) = sources.grant(b) {
            secrets_manager
                .register(&binding::key_of(b), &grant, &b.spec)
                .await;
        }
    }
    Ok((reader, events))
}

/// What a binding's reconcile depends on in the binding object: its spec (generation, which
/// the API server also bumps when deletion starts), the force-sync and other annotations,
/// labels and finalizers. A status write (ours, on every first sync) changes none of these and
/// wakes nothing: during a mass creation those echoes were a third of all reconciles, queued
/// before the first syncs still to do.
fn what_reconciles() -> impl Predicate<AirflowSecretBinding> {
    predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::labels)
        .combine(predicates::finalizers)
}

/// The Deployments' cache (slim) and their events.
fn watch_deployments(
    client: &Client,
    scope: &Scope,
) -> (
    Store<Deployment>,
    impl futures::Stream<Item = Result<Deployment, watcher::Error>> + use<>,
) {
    let (reader, writer) = reflector::store();
    let events = on_own_task(
        scope::reflect(client, scope, watcher::Config::default(), slim, writer)
            .applied_objects()
            .map_ok(|d| Deployment {
                metadata: reference(d.metadata),
                ..Default::default()
            }),
    );
    (reader, events)
}

/// The managed Secrets' metadata cache and their events (with owners, and the labels naming the
/// binding of a Secret in another namespace: they trigger their bindings).
fn watch_owned_secrets(
    client: &Client,
    scope: &Scope,
    owners: Arc<owners::Owners>,
) -> (
    Store<PartialObjectMeta<Secret>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + use<>,
) {
    let (reader, writer) = reflector::store();
    let events = on_own_task(
        scope::reflect(
            client,
            scope,
            watcher::Config::default().labels(&format!("{}={MANAGER}", binding::MANAGED_BY)),
            |s: &mut PartialObjectMeta<Secret>| slim_meta(&mut s.metadata),
            writer,
        )
        .map_ok(move |event| {
            match &event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => owners.note(s),
                watcher::Event::Delete(s) => owners.deleted(s),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
            event
        })
        .touched_objects()
        .map_ok(|s| PartialObjectMeta {
            metadata: ObjectMeta {
                owner_references: s.metadata.owner_references.clone(),
                labels: owners::labelled_for(&s).map(|((ns, name), _)| {
                    [
                        (binding::BINDING_NAMESPACE_LABEL.to_string(), ns),
                        (BINDING_LABEL.to_string(), name),
                    ]
                    .into()
                }),
                ..reference(s.metadata)
            },
            ..s
        }),
    );
    (reader, events)
}

/// The binding a managed Secret belongs to: its controller (in the Secret's namespace), or the
/// binding its labels name (a Secret in another namespace).
fn binding_of_secret(s: PartialObjectMeta<Secret>) -> Vec<ObjectRef<AirflowSecretBinding>> {
    let ns = s.namespace().unwrap_or_default();
    let mut out: Vec<ObjectRef<AirflowSecretBinding>> = s
        .owner_references()
        .iter()
        .filter(|o| o.controller == Some(true) && o.kind == "AirflowSecretBinding")
        .map(|o| ObjectRef::new(&o.name).within(&ns))
        .collect();
    if let Some(((at, name), _)) = owners::labelled_for(&s) {
        out.push(ObjectRef::new(&name).within(&at));
    }
    out
}

/// Runs both controllers until the process is asked to stop, watching the namespaces of
/// `scope`. With `events`, the change-event consumer runs alongside
/// (only where the controllers run: on the leader). Call [`ensure_crd`] first.
pub async fn run(
    client: Client,
    secrets_manager: Arc<SecretsManager>,
    metrics: Arc<Metrics>,
    scope: Scope,
    settings: crate::source::Settings,
    events: Option<crate::events::SqsConfig>,
) -> anyhow::Result<()> {
    let (sources, source_changes) = sources::Sources::watch(&client, settings).await?;
    let (deploy_reader, deployments) = watch_deployments(&client, &scope);
    let owners = Arc::new(owners::Owners::default());
    let (secret_reader, owned_secrets) = watch_owned_secrets(&client, &scope, owners.clone());
    // Plans read these caches: they must be complete before the first reconcile (an empty one
    // would look like Secrets to create and values to read again after every restart).
    deploy_reader.wait_until_ready().await?;
    secret_reader.wait_until_ready().await?;
    let (to_workloads, workload_triggers) = unbounded();
    let (to_bindings, binding_triggers) = unbounded();
    let (binding_reader, binding_events) =
        watch_bindings(&client, &scope, &secrets_manager, &sources).await?;
    let bindings = Controller::for_stream(binding_events, binding_reader.clone())
        .with_config(Config::default().concurrency(BINDING_CONCURRENCY))
        .trigger_backoff(NoTriggerBackoff);
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let ctx = Arc::new(Context {
        reporter,
        client,
        secrets_manager,
        metrics,
        bindings: binding_reader,
        sources,
        deployments: deploy_reader.clone(),
        secrets: secret_reader,
        scope: scope.clone(),
        owners,
        index: Mutex::default(),
        to_workloads,
        to_bindings,
    });
    let binding_loop = bindings
        .watches_stream(owned_secrets, binding_of_secret)
        .reconcile_on(binding_triggers)
        .shutdown_on_signal()
        .run(reconcile_binding, binding_error, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(binding = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        });
    let workload_loop = Controller::for_stream(deployments, deploy_reader)
        .with_config(Config::default().debounce(workload::DEBOUNCE))
        .trigger_backoff(NoTriggerBackoff)
        .reconcile_on(workload_triggers)
        .shutdown_on_signal()
        .run(workload::reconcile, workload_error, ctx.clone())
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(deployment = %obj, "workload reconciled"),
                Err(e) => warn!(error = %e, "workload reconcile failed"),
            }
        });
    info!("controllers running");
    let refresher = tokio::spawn(refresh(ctx.clone()));
    let source_triggers = tokio::spawn(sources::trigger(ctx.clone(), source_changes));
    let _consumer = events.map(|cfg| crate::events::start(cfg, ctx.clone()));
    futures::future::join(binding_loop, workload_loop).await;
    refresher.abort();
    source_triggers.abort();
    Ok(())
}

/// The controllers' trigger backoff: none. kube's controller pauses *all* its triggers (every
/// watch event and every wake-up it is given) after each error one of its trigger streams
/// yields, for 0.8 s doubling to 30 s, and forgets the errors only after 2 minutes without one.
/// Each of our watches already backs off on its own (`default_backoff`), so that second backoff
/// only delayed events: after the API server was unreachable for 4 s (about five watch errors,
/// then a 410 Gone per watch), a binding changed meanwhile was reconciled more than a minute
/// late (tests/control_plane_faults.rs, `expired_watch_is_relisted_and_catches_up`).
struct NoTriggerBackoff;

impl Iterator for NoTriggerBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoTriggerBackoff {
    fn reset(&mut self) {}
}

/// The shared view's background refresh: checks what is due on its readers' intervals and
/// wakes the bindings whose secrets changed. Unchanged bindings are not reconciled for it.
async fn refresh(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(crate::secretsmanager::view::REFRESH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ctx.secrets_manager.refresh().await;
        ctx.wake_changed();
        record_cache_sizes(&ctx);
    }
}

/// Publishes the sizes of what the operator holds per binding and per secret.
fn record_cache_sizes(ctx: &Context) {
    let (listings, versions, values) = ctx.secrets_manager.cache_sizes();
    let bindings = ctx.index.lock().expect("index").bindings.len();
    ctx.metrics.set_cache_sizes(&[
        ("listings", listings),
        ("versions", versions),
        ("values", values),
        ("bindings", bindings),
        ("owned_secrets", ctx.owners.len()),
    ]);
}

/// Exponential backoff with jitter: 1 s, 2 s, 4 s, … up to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(1) * 2u32.saturating_pow(failures.saturating_sub(1).min(9));
    let capped = base.min(Duration::from_secs(300));
    capped.mul_f64(0.5 + fastrand::f64() * 0.5) + Duration::from_millis(200)
}

/// Adds up to 10 % random delay so that bindings created together do not refresh together.
fn with_jitter(d: Duration) -> Duration {
    d + d.mul_f64(fastrand::f64() * 0.1)
}

fn binding_error(binding: Arc<AirflowSecretBinding>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&binding::labels(&binding))
        .inc();
    let failures = {
        let mut index = ctx.index.lock().expect("index");
        let state = index.binding(&binding::key_of(&binding));
        state.failures += 1;
        state.failures
    };
    let delay = backoff(failures);
    warn!(binding = %binding.name_any(), namespace = ?binding.namespace(), error = %error, retry_in = ?delay, "reconcile error");
    Action::requeue(delay)
}

fn workload_error(d: Arc<Deployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(deployment = %d.name_any(), namespace = ?d.namespace(), error = %error, "workload reconcile error");
    Action::requeue(backoff(2))
}

async fn reconcile_binding(
    binding: Arc<AirflowSecretBinding>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let labels = binding::labels(&binding);
    let ns = binding.namespace().unwrap_or_default();
    let api: Api<AirflowSecretBinding> = Api::namespaced(ctx.client.clone(), &ns);
    // A released binding's series were removed by its cleanup: counting would bring one back.
    let deleting = binding.metadata.deletion_timestamp.is_some();
    let count = |ctx: &Context| {
        if !deleting {
            ctx.metrics.reconciles.get_or_create(&labels).inc();
        }
    };
    if let Some(why) = lenient::unreadable(&binding) {
        count(&ctx);
        return lenient::reconcile(&binding, &ctx, why).await;
    }
    count(&ctx);
    let result = finalizer(&api, FINALIZER, binding, |event| async {
        match event {
            Finalizer::Apply(b) => binding::apply(&b, &ctx).await,
            Finalizer::Cleanup(b) => binding::cleanup(&b, &ctx).await,
        }
    })
    .await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    match result {
        // The binding is gone already (a second cleanup, started from a cache that had not yet
        // seen the deletion): nothing is left to do, and no error to count for it.
        Err(kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(e)))
        | Err(kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(e)))
            if e.code == 404 =>
        {
            Ok(Action::await_change())
        }
        r => r.map_err(|e| Error::Finalizer(Box::new(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) <= Duration::from_millis(1200));
        assert!(backoff(4) >= Duration::from_secs(4));
        assert!(backoff(30) <= Duration::from_secs(301));
        assert!(backoff(30) >= Duration::from_secs(150));
    }
}
