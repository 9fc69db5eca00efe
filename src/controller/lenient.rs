//! Bindings this version cannot read. The API server accepts what the installed CRD allows, and
//! during a rolling upgrade (or after a rollback) that CRD may be a newer version's: an enum
//! value, a field made optional or a status shape this version's types do not know. Decoded
//! strictly, one such binding fails the whole list of bindings, so the watch never starts (and
//! the cache never fills) for every other binding of the scope.
//!
//! Here the watch decodes each binding on its own ([`Lenient`]):
//! - a binding this version reads is used as it is;
//! - one whose `status` only is unreadable (a newer operator wrote it) is used with the part of
//!   its status this version reads (conditions, observed generation): the next status write
//!   replaces the rest;
//! - one whose `spec` is unreadable becomes a placeholder marked with [`UNREADABLE_ANNOTATION`]
//!   (held in memory, never written): [`reconcile`] reports it in status (Ready False,
//!   reason [`UNSUPPORTED_SPEC`], the field and why) and holds what it delivered (its Secret and
//!   its entries on the workloads stay as they are) until an operator that reads it takes over.
//!   Deleted, it is released like any binding (its Secrets deleted, or kept when its
//!   `deletionPolicy` is `Retain` or itself unreadable).

use std::borrow::Cow;
use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tracing::warn;

use super::binding::{answer_of, key_of, own_secret_names, secret_name};
use super::{Context, Error, FINALIZER, MANAGER};
use crate::api::{
    AirflowSecretBinding, AirflowSecretBindingSpec, AirflowSecretBindingStatus, DeletionPolicy,
    Source,
};
use crate::plan::status::reason;
use crate::plan::workload::Delivery;

/// In-memory annotation of a binding whose spec this version cannot read: why. Never written to
/// the cluster; one found on a readable binding is dropped.
pub const UNREADABLE_ANNOTATION: &str = "airflow-secrets.io/unreadable";

/// Ready's reason for a binding whose spec this version cannot read.
pub const UNSUPPORTED_SPEC: &str = "UnsupportedSpec";

/// A binding as the watch decodes it: never fails on what follows its metadata.
#[derive(Clone, Debug)]
pub struct Lenient(pub AirflowSecretBinding);

impl From<Lenient> for AirflowSecretBinding {
    fn from(l: Lenient) -> Self {
        l.0
    }
}

impl Resource for Lenient {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AirflowSecretBinding::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        AirflowSecretBinding::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        AirflowSecretBinding::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        AirflowSecretBinding::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.0.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        decode(&value)
            .map(Lenient)
            .map_err(serde::de::Error::custom)
    }
}

/// Decodes a binding as the API server serves it (see the module docs). Fails only when its
/// metadata cannot be read, i.e. never for an object the API server stored.
pub fn decode(value: &Value) -> Result<AirflowSecretBinding, String> {
    if let Ok(mut b) = AirflowSecretBinding::deserialize(value) {
        if let Some(a) = b.metadata.annotations.as_mut() {
            a.remove(UNREADABLE_ANNOTATION);
        }
        return Ok(b);
    }
    let metadata = ObjectMeta::deserialize(value.get("metadata").unwrap_or(&Value::Null))
        .map_err(|e| format!("an AirflowSecretBinding whose metadata is unreadable: {e}"))?;
    let spec = value.get("spec").unwrap_or(&Value::Null);
    let status = value.get("status").map(lenient_status);
    let mut b = AirflowSecretBinding::new(
        &metadata.name.clone().unwrap_or_default(),
        Default::default(),
    );
    b.metadata = metadata;
    b.status = status;
    match serde_path_to_error::deserialize::<_, AirflowSecretBindingSpec>(spec) {
        Ok(spec) => b.spec = spec,
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                "spec".to_string()
            } else {
                format!("spec.{path}")
            };
            let why = format!("{field}: {}", e.inner());
            b.spec = placeholder(spec);
            b.annotations_mut()
                .insert(UNREADABLE_ANNOTATION.into(), why);
        }
    }
    Ok(b)
}

/// What can be read of an unreadable spec, for releasing the binding: the managed Secret's name,
/// the source, the deletion policy (`Retain` when it cannot be read: nothing is deleted that
/// its author may have wanted kept). Nothing is selected, read or written with it.
fn placeholder(spec: &Value) -> AirflowSecretBindingSpec {
    let mut out = AirflowSecretBindingSpec::default();
    out.target.secret_name = spec
        .pointer("/target/secretName")
        .and_then(Value::as_str)
        .map(str::to_string);
    out.source = spec
        .get("source")
        .and_then(|s| Source::deserialize(s).ok())
        .unwrap_or_default();
    out.deletion_policy = match spec.get("deletionPolicy") {
        None | Some(Value::Null) => DeletionPolicy::Delete,
        Some(p) => DeletionPolicy::deserialize(p).unwrap_or(DeletionPolicy::Retain),
    };
    out
}

/// The status as far as this version reads it: all of it, or else its conditions and observed
/// generation.
fn lenient_status(status: &Value) -> AirflowSecretBindingStatus {
    AirflowSecretBindingStatus::deserialize(status).unwrap_or_else(|_| AirflowSecretBindingStatus {
        conditions: status
            .get("conditions")
            .and_then(|c| Vec::<Condition>::deserialize(c).ok())
            .unwrap_or_default(),
        observed_generation: status.get("observedGeneration").and_then(Value::as_i64),
        ..Default::default()
    })
}

/// Why this version cannot read the binding's spec, if it cannot.
pub fn unreadable(binding: &AirflowSecretBinding) -> Option<&str> {
    binding
        .annotations()
        .get(UNREADABLE_ANNOTATION)
        .map(String::as_str)
}

/// The Ready message of an unreadable binding.
pub fn message(binding: &AirflowSecretBinding, why: &str) -> String {
    format!(
        "AirflowSecretBinding {}/{} cannot be read by this operator version ({}): {why}. It was \
         probably written for a newer version (an upgrade in progress, or a rollback); its \
         Secret and its entries on the workloads are kept as they are until an operator that \
         reads it reconciles it",
        binding.namespace().unwrap_or_default(),
        binding.name_any(),
        env!("CARGO_PKG_VERSION"),
    )
}

/// Reconciles a binding whose spec this version cannot read: holds what it delivered, reports
/// it, and releases it when it is deleted.
pub(super) async fn reconcile(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    why: &str,
) -> Result<Action, Error> {
    let key = key_of(binding);
    if binding.meta().deletion_timestamp.is_some() {
        if binding.finalizers().iter().any(|f| f == FINALIZER) {
            super::binding::cleanup(binding, ctx).await?;
            remove_finalizer(binding, ctx).await?;
        }
        return Ok(Action::await_change());
    }
    let mut names: BTreeSet<String> = BTreeSet::from([secret_name(binding)]);
    names.extend(own_secret_names(ctx, binding));
    {
        let mut index = ctx.index.lock().expect("index");
        let state = index.binding(&key);
        state.delivery = Delivery::Hold;
        state.answered = Some(answer_of(binding));
        state.secret_names.extend(names);
    }
    // The Deployments that carry it need not wait for it to settle.
    for d in super::binding::carrying(ctx, &key) {
        let _ = ctx
            .to_workloads
            .unbounded_send(ObjectRef::new(&d).within(&key.0));
    }
    write_status(binding, ctx, &message(binding, why)).await?;
    Ok(Action::await_change())
}

/// Ready False with [`UNSUPPORTED_SPEC`], unless status says so already; an Event when the
/// reason is new.
async fn write_status(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    message: &str,
) -> Result<(), Error> {
    let status = binding.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == reason::READY);
    let generation = binding.metadata.generation;
    let current = ready.is_some_and(|c| {
        c.status == "False"
            && c.reason == UNSUPPORTED_SPEC
            && c.message == message
            && c.observed_generation == generation
    }) && status.observed_generation == generation;
    if current {
        return Ok(());
    }
    if ready.is_none_or(|c| c.reason != UNSUPPORTED_SPEC) {
        warn!(binding = %binding.name_any(), namespace = ?binding.namespace(), "{message}");
        ctx.publish(
            binding,
            EventType::Warning,
            UNSUPPORTED_SPEC,
            "Reconcile",
            message,
        )
        .await;
    }
    let since = ready
        .filter(|c| c.status == "False")
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    let condition = Condition {
        type_: reason::READY.into(),
        status: "False".into(),
        reason: UNSUPPORTED_SPEC.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    };
    let patch = json!({"status": {"conditions": [condition], "observedGeneration": generation}});
    // Untyped: the answer is this very binding, which the typed API cannot read.
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &binding.namespace().unwrap_or_default(),
        &ApiResource::erase::<AirflowSecretBinding>(&()),
    );
    api.patch_status(
        &binding.name_any(),
        &PatchParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// Removes the finalizer once the binding is released (a merge patch on the metadata, guarded
/// by the resource version: the typed API cannot read the answer).
async fn remove_finalizer(binding: &AirflowSecretBinding, ctx: &Context) -> Result<(), Error> {
    let rest: Vec<&String> = binding
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let api: Api<AirflowSecretBinding> =
        Api::namespaced(ctx.client.clone(), &binding.namespace().unwrap_or_default());
    let patch =
        json!({"metadata": {"resourceVersion": binding.resource_version(), "finalizers": rest}});
    match api
        .patch_metadata(
            &binding.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: Value, status: Option<Value>) -> Value {
        let mut o = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "b", "namespace": "ns", "uid": "u-1", "generation": 3,
                         "finalizers": [FINALIZER]},
            "spec": spec,
        });
        if let Some(s) = status {
            o["status"] = s;
        }
        o
    }

    /// Sets the JSON pointer `at` of `v` (its parent exists) to `value`.
    fn set(v: &mut Value, at: &str, value: Value) {
        let (parent, last) = at.rsplit_once('/').unwrap();
        let parent = if parent.is_empty() {
            v
        } else {
            v.pointer_mut(parent).unwrap()
        };
        parent[last] = value;
    }

    fn good_spec() -> Value {
        json!({"variables": [{"key": "v", "secretId": "s"}], "target": {"injection": "SecretOnly"}})
    }

    #[test]
    fn a_readable_binding_is_read_as_it_is() {
        let v = object(good_spec(), None);
        let b = decode(&v).unwrap();
        let strict = serde_json::from_value::<AirflowSecretBinding>(v).unwrap();
        assert_eq!(
            (b.metadata.clone(), &b.spec, &b.status),
            (strict.metadata, &strict.spec, &strict.status)
        );
        assert_eq!(unreadable(&b), None);
    }

    #[test]
    fn the_annotation_cannot_be_set_from_outside() {
        let mut v = object(good_spec(), None);
        v["metadata"]["annotations"] = json!({UNREADABLE_ANNOTATION: "forged", "a": "b"});
        let b = decode(&v).unwrap();
        assert_eq!(unreadable(&b), None);
        assert_eq!(b.annotations().get("a").map(String::as_str), Some("b"));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut spec = good_spec();
        spec["somethingNew"] = json!({"a": 1});
        spec["target"]["alsoNew"] = json!(true);
        let b = decode(&object(spec, None)).unwrap();
        assert_eq!(unreadable(&b), None);
        assert_eq!(b.spec.variables.len(), 1);
    }

    #[test]
    fn a_newer_enum_value_names_the_field_and_the_value() {
        for (field, value, path) in [
            ("/mode", json!("SomethingNew"), "spec.mode"),
            (
                "/target/injection",
                json!("Sidecar"),
                "spec.target.injection",
            ),
            (
                "/target/components",
                json!(["worker", "scheduler"]),
                "spec.target.components[1]",
            ),
            (
                "/massDeletionPolicy",
                json!("Ask"),
                "spec.massDeletionPolicy",
            ),
        ] {
            let mut spec = good_spec();
            spec["target"]["workloads"] = json!({"names": ["d"]});
            spec["target"]["secretName"] = json!("custom");
            spec["deletionPolicy"] = json!("Retain");
            set(&mut spec, field, value.clone());
            let b = decode(&object(spec, None)).unwrap();
            let why = unreadable(&b).unwrap_or_else(|| panic!("{field} must be unreadable"));
            assert!(why.starts_with(&format!("{path}: ")), "{why}");
            let shown = value
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| "scheduler".into());
            assert!(why.contains(&shown), "{why}");
            // What releasing it needs is kept; nothing is selected.
            assert_eq!(b.spec.target.secret_name.as_deref(), Some("custom"));
            assert_eq!(b.spec.deletion_policy, DeletionPolicy::Retain);
            assert!(b.spec.target.workloads.is_none());
            assert!(b.spec.variables.is_empty());
            assert_eq!(b.name_any(), "b");
            assert_eq!(b.finalizers(), [FINALIZER.to_string()]);
            let m = message(&b, why);
            assert!(
                m.contains("AirflowSecretBinding ns/b") && m.contains(path),
                "{m}"
            );
        }
    }

    #[test]
    fn a_required_field_a_newer_version_made_optional() {
        let b = decode(&object(
            json!({"variables": [{"key": "v", "secretId": "s"}]}),
            None,
        ))
        .unwrap();
        assert_eq!(unreadable(&b), Some("spec: missing field `target`"));
    }

    #[test]
    fn an_unreadable_deletion_policy_retains() {
        let mut spec = good_spec();
        spec["deletionPolicy"] = json!("Orphan");
        let b = decode(&object(spec, None)).unwrap();
        assert!(unreadable(&b).unwrap().starts_with("spec.deletionPolicy: "));
        assert_eq!(b.spec.deletion_policy, DeletionPolicy::Retain);
        let mut spec = good_spec();
        spec["mode"] = json!("New");
        let b = decode(&object(spec, None)).unwrap();
        assert_eq!(b.spec.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn a_newer_status_keeps_the_spec_and_the_conditions() {
        let status = json!({
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "entries": [{"kind": "Variable", "name": "v", "secretId": "s", "state": "Stale"}],
        });
        let b = decode(&object(good_spec(), Some(status))).unwrap();
        assert_eq!(unreadable(&b), None);
        assert_eq!(b.spec.variables.len(), 1);
        let s = b.status.unwrap();
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.conditions[0].reason, "Synced");
        assert!(s.entries.is_empty());
    }

    #[test]
    fn unreadable_metadata_is_the_only_failure() {
        assert!(decode(&json!({"metadata": {"name": 5}, "spec": {}})).is_err());
        assert!(serde_json::from_value::<Lenient>(object(json!(7), None)).is_ok());
        // A list of bindings with an unreadable one decodes whole.
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {},
                          "items": [object(good_spec(), None), object(json!({"mode": 1}), None)]});
        // Strictly, the unreadable one fails the whole list (what kube's watcher lists).
        assert!(
            serde_json::from_value::<kube::core::ObjectList<AirflowSecretBinding>>(list.clone())
                .is_err()
        );
        let list: kube::core::ObjectList<Lenient> = serde_json::from_value(list).unwrap();
        assert_eq!(list.items.len(), 2);
        assert!(unreadable(&list.items[1].0).unwrap().contains("spec"));
    }
}
