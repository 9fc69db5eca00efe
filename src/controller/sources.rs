//! The sources bindings read through: the `AirflowSecretSource` cache, the namespaces' labels
//! (a source may admit namespaces by label) and annotations (a backend namespace admits
//! bindings of other namespaces by annotation), and the triggers that reconcile a source's
//! bindings when the source, or a namespace's labels, change, and the bindings that target a
//! namespace when it changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;

use super::scope::BackoffErrors;
use kube::{Api, Client, ResourceExt};

use super::Context;
use crate::api::{AirflowSecretBinding, AirflowSecretSource};
use crate::source::{self, Grant, Refusal, Settings};

/// What decides a binding's grant: the installation's settings and the caches of sources and
/// namespace labels.
pub struct Sources {
    pub settings: Settings,
    pub sources: Store<AirflowSecretSource>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// What changed: a source (by name) or a namespace's labels (by name).
pub enum Change {
    Source(String),
    Namespace(String),
}

impl Sources {
    /// The binding's grant ([`source::grant`]) from the caches.
    pub fn grant(&self, binding: &AirflowSecretBinding) -> Result<Grant, Refusal> {
        let ns = binding.namespace().unwrap_or_default();
        let labels: BTreeMap<String, String> = self
            .namespaces
            .get(&ObjectRef::new(&ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        source::grant(
            &ns,
            &binding.spec,
            &self.settings,
            |name| self.sources.get(&ObjectRef::new(name)),
            &labels,
        )
    }

    /// Starts the caches (complete on return) and returns the stream of later changes.
    pub async fn watch(
        client: &Client,
        settings: Settings,
    ) -> anyhow::Result<(Sources, impl Stream<Item = Change> + Send + use<>)> {
        let (sources, source_writer) = reflector::store();
        let source_changes = reflector::reflector(
            source_writer,
            watcher(
                Api::<AirflowSecretSource>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .backoff_errors()
        .try_filter_map(|e| async move { Ok(changed(e).map(Change::Source)) });
        let (namespaces, ns_writer) = reflector::store();
        let namespace_changes = reflector::reflector(
            ns_writer,
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .backoff_errors()
        .try_filter_map(|e| async move { Ok(changed(e).map(Change::Namespace)) });
        let changes = super::on_own_task(
            futures::stream::select(source_changes, namespace_changes).filter_map(|c| async move {
                c.map_err(|e| tracing::warn!(error = %e, "watching sources or namespaces"))
                    .ok()
            }),
        );
        sources.wait_until_ready().await?;
        namespaces.wait_until_ready().await?;
        Ok((
            Sources {
                settings,
                sources,
                namespaces,
            },
            changes,
        ))
    }
}

/// The name of an object changed or deleted after the initial listing (at start every binding
/// is reconciled anyway; after a relist, the bindings' safety resync catches what was missed).
fn changed<K: kube::Resource>(event: watcher::Event<K>) -> Option<String> {
    match event {
        watcher::Event::Apply(o) | watcher::Event::Delete(o) => Some(o.name_any()),
        _ => None,
    }
}

/// Whether a binding writes its labelled Secrets to namespace `ns` of another namespace: the
/// namespace's annotation `airflow-secrets.io/backend-for` decides whether it may.
fn targets(b: &AirflowSecretBinding, ns: &str) -> bool {
    b.spec.target.injection == crate::api::Injection::KubernetesBackend
        && b.spec.target.backend_namespace.as_deref() == Some(ns)
}

/// Reconciles the bindings a change concerns: those that use a changed source (by reference or
/// as the default), those of a namespace whose labels changed that use any source, and those
/// that write their labelled Secrets to a namespace that changed (its annotations may now
/// admit or refuse them).
pub async fn trigger(ctx: Arc<Context>, changes: impl Stream<Item = Change>) {
    futures::pin_mut!(changes);
    while let Some(change) = changes.next().await {
        let settings = &ctx.sources.settings;
        for b in ctx.bindings.state() {
            let used = source::source_name(&b.spec, settings);
            let concerned = match &change {
                Change::Source(name) => used == Some(name.as_str()),
                Change::Namespace(ns) => {
                    (used.is_some() && b.namespace().as_deref() == Some(ns.as_str()))
                        || targets(&b, ns)
                }
            };
            if concerned {
                ctx.wake(&super::binding::key_of(&b));
            }
        }
    }
}
