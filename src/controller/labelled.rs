//! The `KubernetesBackend` delivery's I/O: the labelled Secrets (one per connection and
//! variable), the ids other bindings label already, and the Role + RoleBinding that let the
//! selected workloads' ServiceAccounts list Secrets in the namespace the backend reads (what
//! Airflow's `KubernetesSecretsBackend` does at each lookup) — the binding's own, or
//! `spec.target.backendNamespace`, which must admit the binding's namespace. Objects in another
//! namespace carry no owner reference (none can cross namespaces): they are labelled with the
//! binding's name and namespace, found by those labels, and deleted by the operator itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::binding::{
    BINDING_LABEL, BINDING_NAMESPACE_LABEL, HASH_ANNOTATION, MANAGED_BY, Written, owned_secrets,
    write_secret,
};
use super::index::{Access, Key};
use super::{Context, Error};
use crate::api::{AirflowSecretBinding, Injection};
use crate::plan::binding::Problem;
use crate::plan::labelled::{
    DATA_KEY, LabelledId, LabelledSecret, TEAM_LABEL, admit_backend_namespace, labelled_id,
    target_namespace,
};
use crate::plan::select::SelectedWorkload;
use crate::plan::status::reason;
use crate::plan::workload::FIELD_MANAGER;

/// Labelled Secrets written at once.
const WRITE_CONCURRENCY: usize = 8;

/// Ids a Secret of another binding labels already in the namespace the backend reads — a
/// binding of that namespace, or of any namespace it admits — where that binding was created
/// first (or no longer exists): (kind, id, team) → who.
pub(super) fn taken_ids(
    ctx: &Context,
    binding: &AirflowSecretBinding,
) -> BTreeMap<LabelledId, String> {
    let mut out = BTreeMap::new();
    if binding.spec.target.injection != Injection::KubernetesBackend {
        return out;
    }
    let target = target_namespace(binding);
    let me_at = (binding.namespace().unwrap_or_default(), binding.name_any());
    let me = (binding.creation_timestamp(), me_at.clone());
    for s in ctx
        .secrets
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(target.as_str()))
    {
        let Some(name) = s.labels().get(BINDING_LABEL) else {
            continue;
        };
        let Some(id) = labelled_id(s.labels()) else {
            continue;
        };
        // A Secret of the namespace's own binding, or labelled for a binding elsewhere.
        let other = (
            s.labels()
                .get(BINDING_NAMESPACE_LABEL)
                .cloned()
                .unwrap_or_else(|| target.clone()),
            name.clone(),
        );
        if other == me_at {
            continue;
        }
        let who_ = if other.0 == me_at.0 {
            format!("binding {}", other.1)
        } else {
            format!("binding {}/{}", other.0, other.1)
        };
        let who = match ctx.bindings.get(&ObjectRef::new(&other.1).within(&other.0)) {
            Some(b) if (b.creation_timestamp(), key_of(&b)) < me => {
                format!("{who_} (created first)")
            }
            Some(_) => continue,
            None => format!("Secret {}, left by {who_}", s.name_any()),
        };
        out.insert(id, who);
    }
    out
}

fn key_of(b: &AirflowSecretBinding) -> (String, String) {
    (b.namespace().unwrap_or_default(), b.name_any())
}

/// Whether the binding may write its labelled Secrets where `spec.target.backendNamespace`
/// says (its own namespace always), from the cached namespaces and the operator's scope.
pub(super) fn admission(ctx: &Context, binding: &AirflowSecretBinding) -> Result<(), Problem> {
    if binding.spec.target.injection != Injection::KubernetesBackend {
        return Ok(());
    }
    let from = binding.namespace().unwrap_or_default();
    let to = target_namespace(binding);
    let annotations = ctx
        .sources
        .namespaces
        .get(&ObjectRef::new(&to))
        .map(|n| n.metadata.annotations.clone().unwrap_or_default());
    admit_backend_namespace(&from, &to, annotations.as_ref(), ctx.scope.contains(&to)).map_err(
        |message| Problem {
            reason: reason::BACKEND_NAMESPACE_REFUSED,
            message,
        },
    )
}

/// The namespaces other than the binding's target that hold labelled Secrets of it (its own
/// namespace or a backend namespace it left), from the cache.
pub(super) fn labelled_namespaces(
    ctx: &Context,
    binding: &AirflowSecretBinding,
) -> BTreeSet<String> {
    owned_secrets(ctx, binding)
        .iter()
        .filter(|(_, s)| labelled_id(s.labels()).is_some())
        .map(|((ns, _), _)| ns.clone())
        .collect()
}

/// Writes the labelled Secrets that differ (a few at once); returns how many were written.
pub(super) async fn write_all(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    labelled: &[LabelledSecret],
) -> Result<usize, Error> {
    let owned = owned_secrets(ctx, binding);
    let target = target_namespace(binding);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &target);
    let due: Vec<(&LabelledSecret, bool)> = labelled
        .iter()
        .filter_map(|l| {
            let current = owned.get(&(target.clone(), l.name.clone()));
            let fresh = current.is_some_and(|c| {
                c.annotations().get(HASH_ANNOTATION) == Some(&l.hash)
                    && c.labels().get(l.label.0) == Some(&l.label.1)
                    && c.labels().get(TEAM_LABEL) == l.team.as_ref()
            });
            (!fresh).then_some((l, current.is_some()))
        })
        .collect();
    let n = due.len();
    let writes: Vec<_> = due
        .into_iter()
        .map(|(l, exists)| write_one(binding, &api, l, exists))
        .collect();
    futures::stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(n)
}

/// Metadata of an object the binding writes in `at`: owned by the binding in its own
/// namespace, labelled with the binding's namespace in another.
fn meta(binding: &AirflowSecretBinding, name: &str, at: &str) -> ObjectMeta {
    let own = binding.namespace().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
        (BINDING_LABEL.to_string(), binding.name_any()),
    ]);
    let owner_references = if at == own {
        Some(vec![
            binding
                .controller_owner_ref(&())
                .expect("a stored binding has a uid"),
        ])
    } else {
        labels.insert(BINDING_NAMESPACE_LABEL.to_string(), own);
        None
    };
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(at.to_string()),
        labels: Some(labels),
        owner_references,
        ..Default::default()
    }
}

fn object(binding: &AirflowSecretBinding, l: &LabelledSecret) -> Secret {
    let mut metadata = meta(binding, &l.name, &target_namespace(binding));
    let labels = metadata.labels.get_or_insert_default();
    labels.insert(l.label.0.to_string(), l.label.1.clone());
    if let Some(t) = &l.team {
        labels.insert(TEAM_LABEL.to_string(), t.clone());
    }
    Secret {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                HASH_ANNOTATION.to_string(),
                l.hash.clone(),
            )])),
            ..metadata
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_string(),
            ByteString(l.value.clone().into_bytes()),
        )])),
        ..Default::default()
    }
}

/// Writes one labelled Secret the way every managed Secret is written.
async fn write_one(
    binding: &AirflowSecretBinding,
    api: &Api<Secret>,
    l: &LabelledSecret,
    exists: bool,
) -> Result<(), Error> {
    match write_secret(binding, api, object(binding, l), exists).await? {
        Written::Version(_) => Ok(()),
        Written::Foreign => Err(Error::NotOwned(l.name.clone())),
    }
}

/// Name of the Role and RoleBinding that let a binding's workloads use the backend in its own
/// namespace.
pub fn access_name(binding: &str) -> String {
    let name = format!("{binding}-kubernetes-backend");
    if name.len() <= 253 {
        return name;
    }
    let digest = hex::encode(Sha256::digest(binding.as_bytes()));
    format!("{}-kubernetes-backend-{}", &binding[..200], &digest[..8])
}

/// Name of the Role and RoleBinding of a binding in namespace `at`: [`access_name`] in its own,
/// `<namespace>.<binding>-backend-access` in another (a namespace has no dot, so no two
/// bindings share it; nor does any binding's own-namespace name end that way).
pub fn access_name_at(binding: &AirflowSecretBinding, at: &str) -> String {
    let (ns, name) = key_of(binding);
    if ns == at {
        return access_name(&name);
    }
    let full = format!("{ns}.{name}");
    let plain = format!("{full}-backend-access");
    if plain.len() <= 253 {
        return plain;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let head: String = full.chars().take(200).collect();
    format!("{head}-backend-access-{}", &digest[..8])
}

/// The ServiceAccounts of the selected Deployments.
fn service_accounts(selected: &[(Arc<Deployment>, SelectedWorkload)]) -> BTreeSet<String> {
    selected
        .iter()
        .map(|(d, _)| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.service_account_name.clone())
                .unwrap_or_else(|| "default".into())
        })
        .collect()
}

/// Grants the selected workloads' ServiceAccounts `list` on Secrets in the namespace the backend
/// reads (Role + RoleBinding, owned by the binding in its own namespace, labelled for it in
/// another), and removes the grant where the binding no longer delivers: when it stops using the
/// backend, or moves to another namespace (`labelled_in`: where its labelled Secrets were before
/// this reconcile; a grant this process wrote is remembered too). Written only when it changed
/// since this process last wrote it.
pub(super) async fn grant_access(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
    labelled_in: &BTreeSet<String>,
) -> Result<(), Error> {
    let backend = binding.spec.target.injection == Injection::KubernetesBackend;
    let want = Access {
        namespace: target_namespace(binding),
        accounts: if backend {
            service_accounts(selected)
        } else {
            BTreeSet::new()
        },
    };
    let known = ctx.index.lock().expect("index").binding(key).access.clone();
    let mut revoke: BTreeSet<String> = labelled_in.clone();
    match &known {
        Some(k) => {
            if k.accounts.is_empty() && k.namespace == want.namespace && !backend {
                // Nothing granted, nothing wanted.
            } else {
                revoke.insert(k.namespace.clone());
            }
        }
        // A grant this process did not write may exist only if the spec changed since the
        // last status (a switch of delivery or namespace while the operator was down).
        None => {
            if binding.status.as_ref().and_then(|s| s.observed_generation)
                != binding.metadata.generation
            {
                revoke.insert(key.0.clone());
            }
        }
    }
    if !want.accounts.is_empty() {
        revoke.remove(&want.namespace);
    }
    if known.as_ref() == Some(&want) && revoke.iter().all(|ns| *ns == want.namespace) {
        return Ok(());
    }
    for ns in &revoke {
        revoke_at(binding, ctx, ns).await?;
    }
    if !want.accounts.is_empty() {
        apply_access(binding, ctx, &want).await?;
    }
    ctx.index.lock().expect("index").binding(key).access = Some(want);
    Ok(())
}

/// Deletes the binding's Role and RoleBinding in `at` (nothing there: fine). Never in a
/// namespace the operator does not watch: it wrote nothing there.
async fn revoke_at(binding: &AirflowSecretBinding, ctx: &Context, at: &str) -> Result<(), Error> {
    if !ctx.scope.contains(at) {
        return Ok(());
    }
    let name = access_name_at(binding, at);
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), at);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), at);
    for r in [
        bindings
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
        roles
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        r.or_else(super::binding::ignore_404)?;
    }
    Ok(())
}

/// When the binding goes: deletes its grants outside its own namespace (the garbage collector
/// removes the one there, which it owns) — in the namespace it targets, where its labelled
/// Secrets are, and where this process last granted.
pub(super) async fn revoke_elsewhere(
    binding: &AirflowSecretBinding,
    ctx: &Context,
) -> Result<(), Error> {
    let key = key_of(binding);
    let mut places = labelled_namespaces(ctx, binding);
    places.insert(target_namespace(binding));
    if let Some(a) = ctx
        .index
        .lock()
        .expect("index")
        .bindings
        .get(&key)
        .and_then(|s| s.access.clone())
    {
        places.insert(a.namespace);
    }
    places.remove(&key.0);
    for ns in places {
        revoke_at(binding, ctx, &ns).await?;
    }
    Ok(())
}

async fn apply_access(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    access: &Access,
) -> Result<(), Error> {
    let at = access.namespace.as_str();
    let name = access_name_at(binding, at);
    let own = binding.namespace().unwrap_or_default();
    let meta = meta(binding, &name, at);
    let role = Role {
        metadata: meta.clone(),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    let rb = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        // The agents run in the binding's namespace.
        subjects: Some(
            access
                .accounts
                .iter()
                .map(|sa| Subject {
                    kind: "ServiceAccount".into(),
                    name: sa.clone(),
                    namespace: Some(own.clone()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), at);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), at);
    roles.patch(&name, &pp, &Patch::Apply(&role)).await?;
    bindings.patch(&name, &pp, &Patch::Apply(&rb)).await?;
    Ok(())
}
