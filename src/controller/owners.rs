//! Which managed Secrets each binding controls, without scanning every cached Secret: the
//! Secret watch notes each Secret it reports under its controller's uid — or, for the labelled
//! Secrets a binding writes to another namespace (`spec.target.backendNamespace`, where owner
//! references cannot point), under the binding's namespace and name from its labels — and drops
//! it when it reports its deletion; a lookup checks the noted names against the cache (a
//! deletion missed while the watch was down leaves a name the cache no longer has: it is
//! skipped). At 10,000 bindings a scan per reconcile was most of the operator's CPU.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use super::binding::{BINDING_LABEL, BINDING_NAMESPACE_LABEL};

/// (namespace, name) of a Secret.
pub type SecretRef = (String, String);

/// (namespace, name) of a binding.
type BindingRef = (String, String);

#[derive(Debug, Default)]
struct Noted {
    /// Controller uid → Secrets.
    by_uid: HashMap<String, BTreeSet<SecretRef>>,
    /// Binding (from the labels of a Secret in another namespace) → Secrets.
    by_label: HashMap<BindingRef, BTreeSet<SecretRef>>,
}

/// What the watch reported, by owner (candidates, see the module).
#[derive(Debug, Default)]
pub struct Owners(Mutex<Noted>);

impl Owners {
    /// Notes a Secret the watch reported as applied or listed.
    pub fn note(&self, secret: &PartialObjectMeta<Secret>) {
        let mut noted = self.lock();
        if let Some((uid, at)) = controller_of(secret) {
            noted.by_uid.entry(uid).or_default().insert(at);
        }
        if let Some((binding, at)) = labelled_for(secret) {
            noted.by_label.entry(binding).or_default().insert(at);
        }
    }

    /// Drops a Secret the watch reported as deleted.
    pub fn deleted(&self, secret: &PartialObjectMeta<Secret>) {
        let mut noted = self.lock();
        if let Some((uid, at)) = controller_of(secret) {
            prune(&mut noted.by_uid, &uid, &at);
        }
        if let Some((binding, at)) = labelled_for(secret) {
            prune(&mut noted.by_label, &binding, &at);
        }
    }

    /// Drops everything noted under a binding that is gone.
    pub fn forget(&self, uid: &str, namespace: &str, name: &str) {
        let mut noted = self.lock();
        noted.by_uid.remove(uid);
        noted
            .by_label
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// The Secrets noted under `uid`, or under the binding `namespace`/`name` by label.
    pub fn candidates(&self, uid: &str, namespace: &str, name: &str) -> BTreeSet<SecretRef> {
        let noted = self.lock();
        let mut out = noted.by_uid.get(uid).cloned().unwrap_or_default();
        if let Some(l) = noted
            .by_label
            .get(&(namespace.to_string(), name.to_string()))
        {
            out.extend(l.iter().cloned());
        }
        out
    }

    /// How many Secrets are noted, under all bindings (one noted both ways counts twice).
    pub fn len(&self) -> usize {
        let noted = self.lock();
        noted.by_uid.values().map(BTreeSet::len).sum::<usize>()
            + noted.by_label.values().map(BTreeSet::len).sum::<usize>()
    }

    /// Whether nothing is noted.
    pub fn is_empty(&self) -> bool {
        let noted = self.lock();
        noted.by_uid.is_empty() && noted.by_label.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Noted> {
        self.0.lock().expect("owners")
    }
}

fn prune<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, BTreeSet<SecretRef>>,
    key: &K,
    gone: &SecretRef,
) {
    if let Some(set) = map.get_mut(key) {
        set.remove(gone);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// A Secret's controller uid and where the Secret is.
fn controller_of(secret: &PartialObjectMeta<Secret>) -> Option<(String, SecretRef)> {
    let owner = secret
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))?;
    let at = (secret.namespace().unwrap_or_default(), secret.name_any());
    Some((owner.uid.clone(), at))
}

/// The binding a Secret in another namespace than the binding's is labelled for.
pub fn labelled_for<K: kube::Resource>(secret: &K) -> Option<(BindingRef, SecretRef)> {
    let labels = secret.labels();
    let binding = (
        labels.get(BINDING_NAMESPACE_LABEL)?.clone(),
        labels.get(BINDING_LABEL)?.clone(),
    );
    let at = (secret.namespace().unwrap_or_default(), secret.name_any());
    (binding.0 != at.0).then_some((binding, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn secret(name: &str, owner: &str, controller: bool) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                owner_references: Some(vec![OwnerReference {
                    uid: owner.into(),
                    controller: Some(controller),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_noted_under_their_controller_and_dropped_when_deleted() {
        let owners = Owners::default();
        owners.note(&secret("a-airflow", "u1", true));
        owners.note(&secret("a-airflow-2", "u1", true));
        owners.note(&secret("b-airflow", "u2", true));
        owners.note(&secret("not-controlled", "u1", false));
        let a = |n: &str| ("ns".to_string(), n.to_string());
        let of = |uid: &str| {
            owners
                .candidates(uid, "ns", "x")
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(of("u1"), [a("a-airflow"), a("a-airflow-2")]);
        owners.deleted(&secret("a-airflow-2", "u1", true));
        assert_eq!(of("u1"), [a("a-airflow")]);
        owners.deleted(&secret("a-airflow", "u1", true));
        assert!(of("u1").is_empty());
        assert!(
            !owners.0.lock().unwrap().by_uid.contains_key("u1"),
            "empty sets leave"
        );
        assert_eq!(of("u2"), [a("b-airflow")]);
        owners.forget("u2", "ns", "x");
        assert!(of("u2").is_empty());
    }

    fn labelled(
        at: &str,
        name: &str,
        binding_ns: &str,
        binding: &str,
    ) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(at.into()),
                labels: Some(
                    [
                        (BINDING_LABEL.to_string(), binding.to_string()),
                        (BINDING_NAMESPACE_LABEL.to_string(), binding_ns.to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn secrets_in_another_namespace_are_noted_under_the_binding_they_are_labelled_for() {
        let owners = Owners::default();
        owners.note(&labelled("shared", "a.agents-conn-x", "a", "agents"));
        owners.note(&labelled("shared", "b.agents-conn-x", "b", "agents"));
        // A label naming the Secret's own namespace is no claim: only owner references count there.
        owners.note(&labelled("a", "agents-conn-y", "a", "agents"));
        let at = |ns: &str, n: &str| (ns.to_string(), n.to_string());
        let of = |ns: &str| {
            owners
                .candidates("uid", ns, "agents")
                .into_iter()
                .collect::<Vec<_>>()
        };
        assert_eq!(of("a"), [at("shared", "a.agents-conn-x")]);
        assert_eq!(of("b"), [at("shared", "b.agents-conn-x")]);
        owners.deleted(&labelled("shared", "a.agents-conn-x", "a", "agents"));
        assert!(of("a").is_empty());
        owners.forget("uid", "b", "agents");
        assert!(of("b").is_empty());
    }
}
