//! The `KubernetesBackend` delivery's I/O: the labelled Secrets (one per connection and
//! variable), the ids other bindings label already, and the Role + RoleBinding that let the
//! selected workloads' ServiceAccounts list Secrets in the namespace (what Airflow's
//! `KubernetesSecretsBackend` does at each lookup).

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
    BINDING_LABEL, HASH_ANNOTATION, MANAGED_BY, Written, owned_secrets, write_secret,
};
use super::index::Key;
use super::{Context, Error};
use crate::api::{AirflowSecretBinding, Injection};
use crate::plan::labelled::{DATA_KEY, LabelledId, LabelledSecret, TEAM_LABEL, labelled_id};
use crate::plan::select::SelectedWorkload;
use crate::plan::workload::FIELD_MANAGER;

/// Labelled Secrets written at once.
const WRITE_CONCURRENCY: usize = 8;

/// Ids a Secret of another binding of the namespace labels already, where that binding was
/// created first (or no longer exists): (kind, id, team) → who.
pub(super) fn taken_ids(
    ctx: &Context,
    binding: &AirflowSecretBinding,
) -> BTreeMap<LabelledId, String> {
    let mut out = BTreeMap::new();
    if binding.spec.target.injection != Injection::KubernetesBackend {
        return out;
    }
    let ns = binding.namespace();
    let me = (binding.creation_timestamp(), binding.name_any());
    for s in ctx.secrets.state().iter().filter(|s| s.namespace() == ns) {
        let Some(other) = s.labels().get(BINDING_LABEL) else {
            continue;
        };
        let Some(id) = labelled_id(s.labels()) else {
            continue;
        };
        if *other == me.1 {
            continue;
        }
        let who = match ctx
            .bindings
            .get(&ObjectRef::new(other).within(ns.as_deref().unwrap_or_default()))
        {
            Some(b) if (b.creation_timestamp(), b.name_any()) < me => {
                format!("binding {other} (created first)")
            }
            Some(_) => continue,
            None => format!("Secret {}, left by binding {other}", s.name_any()),
        };
        out.insert(id, who);
    }
    out
}

/// Writes the labelled Secrets that differ (a few at once); returns how many were written.
pub(super) async fn write_all(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    labelled: &[LabelledSecret],
) -> Result<usize, Error> {
    let owned = owned_secrets(ctx, binding);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.0);
    let due: Vec<(&LabelledSecret, bool)> = labelled
        .iter()
        .filter_map(|l| {
            let current = owned.get(&l.name);
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

fn object(binding: &AirflowSecretBinding, l: &LabelledSecret) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(l.name.clone()),
            labels: Some(
                [
                    (MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
                    (BINDING_LABEL.to_string(), binding.name_any()),
                    (l.label.0.to_string(), l.label.1.clone()),
                ]
                .into_iter()
                .chain(l.team.clone().map(|t| (TEAM_LABEL.to_string(), t)))
                .collect(),
            ),
            annotations: Some(BTreeMap::from([(
                HASH_ANNOTATION.to_string(),
                l.hash.clone(),
            )])),
            owner_references: Some(vec![
                binding
                    .controller_owner_ref(&())
                    .expect("a stored binding has a uid"),
            ]),
            ..Default::default()
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

/// Name of the Role and RoleBinding that let a binding's workloads use the backend.
pub fn access_name(binding: &str) -> String {
    let name = format!("{binding}-kubernetes-backend");
    if name.len() <= 253 {
        return name;
    }
    let digest = hex::encode(Sha256::digest(binding.as_bytes()));
    format!("{}-kubernetes-backend-{}", &binding[..200], &digest[..8])
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

/// Grants the selected workloads' ServiceAccounts `list` on Secrets in the namespace (Role +
/// RoleBinding owned by the binding), or removes the grant when the binding no longer delivers
/// through the backend. Written only when it changed since this process last wrote it.
pub(super) async fn grant_access(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
) -> Result<(), Error> {
    let accounts = if binding.spec.target.injection == Injection::KubernetesBackend {
        service_accounts(selected)
    } else {
        BTreeSet::new()
    };
    let fingerprint = format!("{accounts:?}");
    let known = ctx.index.lock().expect("index").binding(key).access.clone();
    if known.as_deref() == Some(fingerprint.as_str()) {
        return Ok(());
    }
    let name = access_name(&binding.name_any());
    let roles: Api<Role> = Api::namespaced(ctx.client.clone(), &key.0);
    let bindings: Api<RoleBinding> = Api::namespaced(ctx.client.clone(), &key.0);
    if accounts.is_empty() {
        // A grant this process did not write may exist only if the spec changed since the
        // last status (a switch of delivery while the operator was down).
        let may_exist = match &known {
            Some(k) => k != "{}",
            None => {
                binding.status.as_ref().and_then(|s| s.observed_generation)
                    != binding.metadata.generation
            }
        };
        if !may_exist {
            ctx.index.lock().expect("index").binding(key).access = Some(fingerprint);
            return Ok(());
        }
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
    } else {
        apply_access(binding, &name, &key.0, &accounts, &roles, &bindings).await?;
    }
    ctx.index.lock().expect("index").binding(key).access = Some(fingerprint);
    Ok(())
}

async fn apply_access(
    binding: &AirflowSecretBinding,
    name: &str,
    namespace: &str,
    accounts: &BTreeSet<String>,
    roles: &Api<Role>,
    bindings: &Api<RoleBinding>,
) -> Result<(), Error> {
    let meta = ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
            (BINDING_LABEL.to_string(), binding.name_any()),
        ])),
        owner_references: Some(vec![
            binding
                .controller_owner_ref(&())
                .expect("a stored binding has a uid"),
        ]),
        ..Default::default()
    };
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
            name: name.to_string(),
        },
        subjects: Some(
            accounts
                .iter()
                .map(|sa| Subject {
                    kind: "ServiceAccount".into(),
                    name: sa.clone(),
                    namespace: Some(namespace.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    roles.patch(name, &pp, &Patch::Apply(&role)).await?;
    bindings.patch(name, &pp, &Patch::Apply(&rb)).await?;
    Ok(())
}
