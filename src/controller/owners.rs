//! Which managed Secrets each binding controls, without scanning every cached Secret: the
//! Secret watch notes each Secret it reports under its controller's uid and drops it when it
//! reports its deletion; a lookup checks the noted names against the cache (a deletion missed
//! while the watch was down leaves a name the cache no longer has: it is skipped). At 10,000
//! bindings a scan per reconcile was most of the operator's CPU.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

/// (namespace, name) of a Secret.
type SecretRef = (String, String);

/// Controller uid → the Secrets the watch reported under it (candidates, see the module).
#[derive(Debug, Default)]
pub struct Owners(Mutex<HashMap<String, BTreeSet<SecretRef>>>);

impl Owners {
    /// Notes a Secret the watch reported as applied or listed.
    pub fn note(&self, secret: &PartialObjectMeta<Secret>) {
        if let Some((uid, at)) = controller_of(secret) {
            self.lock().entry(uid).or_default().insert(at);
        }
    }

    /// Drops a Secret the watch reported as deleted.
    pub fn deleted(&self, secret: &PartialObjectMeta<Secret>) {
        if let Some((uid, at)) = controller_of(secret) {
            self.prune(&uid, &[at]);
        }
    }

    /// Drops everything noted under a binding that is gone.
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// The Secrets noted under `uid`.
    pub fn candidates(&self, uid: &str) -> Vec<SecretRef> {
        self.lock()
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many Secrets are noted, under all bindings.
    pub fn len(&self) -> usize {
        self.lock().values().map(BTreeSet::len).sum()
    }

    /// Whether nothing is noted.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn prune(&self, uid: &str, gone: &[SecretRef]) {
        if gone.is_empty() {
            return;
        }
        let mut owners = self.lock();
        if let Some(set) = owners.get_mut(uid) {
            for g in gone {
                set.remove(g);
            }
            if set.is_empty() {
                owners.remove(uid);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<SecretRef>>> {
        self.0.lock().expect("owners")
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
        assert_eq!(owners.candidates("u1"), [a("a-airflow"), a("a-airflow-2")]);
        owners.deleted(&secret("a-airflow-2", "u1", true));
        assert_eq!(owners.candidates("u1"), [a("a-airflow")]);
        owners.deleted(&secret("a-airflow", "u1", true));
        assert!(owners.candidates("u1").is_empty());
        assert!(
            owners.0.lock().unwrap().get("u1").is_none(),
            "empty sets leave"
        );
        assert_eq!(owners.candidates("u2"), [a("b-airflow")]);
        owners.forget("u2");
        assert!(owners.candidates("u2").is_empty());
    }
}
