//! What the managed Secret already holds. Each managed Secret carries a digest of the reads its
//! data was converted from (per entry: its secret and version, or that its value is not in the
//! data); a refresh — or the first one after a restart — that finds the same versions takes
//! those values from the Secret instead of reading them from Secrets Manager again.
//!
//! The digest is safe by construction: an entry counts as held only if its value is in the data
//! *and* the digest says it was converted from the version Secrets Manager shows now. A value
//! kept from an older version after a failed read is recorded as "not from this version", so it
//! never passes for current; a different operator version or conversion input changes every
//! digest, so an upgrade reads everything once.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::api::{EntryKind, EntryState, EntryStatus, Injection};
use crate::entries::{Fetched, ResolvedEntry};
use crate::plan::content::{env_name_of, secret_key_for};

/// Annotation of each managed Secret: the digest of the reads behind its data.
pub const SOURCE_DIGEST_ANNOTATION: &str = "airflow-secrets.io/source-digest";

/// Changes whenever the conversion may change: the operator's version, and a counter for
/// changes within one version.
const EPOCH: &str = concat!(env!("CARGO_PKG_VERSION"), "/1");

/// What the conversion of an entry depends on besides the secret's version.
#[derive(Debug, Clone, Copy)]
pub struct Conversion<'a> {
    pub injection: Injection,
    pub extra_conn_words: &'a BTreeMap<String, Vec<String>>,
}

impl<'a> Conversion<'a> {
    /// A binding's conversion inputs.
    pub fn of(spec: &'a crate::api::AirflowSecretBindingSpec) -> Self {
        Conversion {
            injection: spec.target.injection,
            extra_conn_words: spec.extra_conn_words(),
        }
    }
}

/// Digest of a read: per entry its kind, name, secret and version when `in_data` says its value
/// (converted from that version) is in the Secret's data, a marker otherwise.
pub fn source_digest(
    entries: &[ResolvedEntry],
    in_data: impl Fn(usize, &ResolvedEntry) -> bool,
    conversion: Conversion<'_>,
) -> String {
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    field(&mut h, EPOCH);
    field(
        &mut h,
        &serde_json::to_string(&(conversion.injection, conversion.extra_conn_words))
            .expect("plain data serializes"),
    );
    for (i, e) in entries.iter().enumerate() {
        field(&mut h, &format!("{:?}", e.kind));
        field(&mut h, &e.name);
        field(&mut h, &format!("{:?}", e.config));
        field(&mut h, &e.secret_id);
        let version = match &e.version_id {
            Some(v) if in_data(i, e) => v.as_str(),
            _ => "\0not-in-data",
        };
        field(&mut h, version);
    }
    hex::encode(h.finalize())
}

/// The digest to write with planned content: an entry's value is in the data exactly when its
/// status line says Synced (a kept last good value is not from the version read now).
pub fn digest_of_content(
    entries: &[ResolvedEntry],
    statuses: &[EntryStatus],
    conversion: Conversion<'_>,
) -> String {
    source_digest(
        entries,
        |i, _| {
            statuses
                .get(i)
                .is_some_and(|s| s.state == EntryState::Synced)
        },
        conversion,
    )
}

/// Which of the located entries (values not read: [`Fetched::Held`]) the Secret holds: all
/// whose value is in `data`, if the digest of the current versions equals the Secret's; none
/// otherwise.
pub fn held(
    entries: &[ResolvedEntry],
    secret_digest: &str,
    data: &BTreeMap<String, String>,
    conversion: Conversion<'_>,
) -> Vec<bool> {
    let in_data = |_: usize, e: &ResolvedEntry| data.contains_key(&secret_key_for(&env_name_of(e)));
    if source_digest(entries, in_data, conversion) != secret_digest {
        return vec![false; entries.len()];
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| matches!(e.outcome, Fetched::Held) && in_data(i, e))
        .collect()
}

/// Per entry (kind, name), the version its value in the data was converted from.
pub type Versions = HashMap<(EntryKind, String), String>;

/// The versions behind planned content: those of the entries its status lines say are Synced.
pub fn versions_of_content(statuses: &[EntryStatus]) -> Versions {
    statuses
        .iter()
        .filter(|s| s.state == EntryState::Synced)
        .filter_map(|s| Some(((s.kind, s.name.clone()), s.version_id.clone()?)))
        .collect()
}

/// Which located entries the Secret holds, entry by entry, from what this process wrote: those
/// whose value is in `data` and was converted from the version Secrets Manager shows now.
pub fn held_by_versions(
    entries: &[ResolvedEntry],
    versions: &Versions,
    data: &BTreeMap<String, String>,
) -> Vec<bool> {
    entries
        .iter()
        .map(|e| {
            matches!(e.outcome, Fetched::Held)
                && e.version_id.is_some()
                && versions.get(&(e.kind, e.name.clone())) == e.version_id.as_ref()
                && data.contains_key(&secret_key_for(&env_name_of(e)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EntryKind;

    fn entry(name: &str, version: &str) -> ResolvedEntry {
        ResolvedEntry {
            kind: EntryKind::Connection,
            name: name.into(),
            config: None,
            secret_id: format!("airflow/connections/{name}"),
            version_id: Some(version.into()),
            outcome: Fetched::Held,
            team: None,
        }
    }

    fn status(e: &ResolvedEntry, state: EntryState) -> EntryStatus {
        EntryStatus {
            kind: e.kind,
            name: e.name.clone(),
            env_name: Some(env_name_of(e)),
            secret_id: e.secret_id.clone(),
            version_id: e.version_id.clone(),
            state,
            message: None,
        }
    }

    const WORDS: &BTreeMap<String, Vec<String>> = &BTreeMap::new();
    const ENV: Conversion<'static> = Conversion {
        injection: Injection::Env,
        extra_conn_words: WORDS,
    };

    fn data(keys: &[&str]) -> BTreeMap<String, String> {
        keys.iter().map(|k| (k.to_string(), "v".into())).collect()
    }

    #[test]
    fn same_versions_are_held_and_a_new_version_is_read() {
        let written = vec![entry("a", "v1"), entry("b", "v1")];
        let statuses: Vec<_> = written
            .iter()
            .map(|e| status(e, EntryState::Synced))
            .collect();
        let digest = digest_of_content(&written, &statuses, ENV);
        let d = data(&["AIRFLOW_CONN_A", "AIRFLOW_CONN_B"]);
        assert_eq!(held(&written, &digest, &d, ENV), vec![true, true]);
        // One secret rotated: nothing is taken from the Secret (its digest no longer matches).
        let now = vec![entry("a", "v1"), entry("b", "v2")];
        assert_eq!(held(&now, &digest, &d, ENV), vec![false, false]);
    }

    #[test]
    fn a_kept_last_good_value_never_passes_for_the_current_version() {
        let written = vec![entry("a", "v2")];
        // The read of v2 failed; the Secret keeps v1's value under the key.
        let statuses = vec![status(&written[0], EntryState::Error)];
        let digest = digest_of_content(&written, &statuses, ENV);
        assert_eq!(
            held(&written, &digest, &data(&["AIRFLOW_CONN_A"]), ENV),
            vec![false]
        );
    }

    #[test]
    fn entries_not_in_the_data_are_read_again_the_rest_held() {
        let written = vec![entry("a", "v1"), entry("bad", "v1")];
        let statuses = vec![
            status(&written[0], EntryState::Synced),
            status(&written[1], EntryState::Invalid),
        ];
        let digest = digest_of_content(&written, &statuses, ENV);
        assert_eq!(
            held(&written, &digest, &data(&["AIRFLOW_CONN_A"]), ENV),
            vec![true, false]
        );
    }

    #[test]
    fn conversion_inputs_are_part_of_the_digest() {
        let written = vec![entry("a", "v1")];
        let statuses = vec![status(&written[0], EntryState::Synced)];
        let digest = digest_of_content(&written, &statuses, ENV);
        let words = BTreeMap::from([("login".to_string(), vec!["user_name".to_string()])]);
        let other = Conversion {
            injection: Injection::Env,
            extra_conn_words: &words,
        };
        assert_eq!(
            held(&written, &digest, &data(&["AIRFLOW_CONN_A"]), other),
            vec![false]
        );
        let env_from = Conversion {
            injection: Injection::EnvFrom,
            extra_conn_words: WORDS,
        };
        assert_ne!(digest, digest_of_content(&written, &statuses, env_from));
    }

    #[test]
    fn by_versions_only_the_changed_entry_is_read() {
        let written = [entry("a", "v1"), entry("b", "v1")];
        let statuses: Vec<_> = written
            .iter()
            .map(|e| status(e, EntryState::Synced))
            .collect();
        let versions = versions_of_content(&statuses);
        let d = data(&["AIRFLOW_CONN_A", "AIRFLOW_CONN_B"]);
        let now = vec![entry("a", "v1"), entry("b", "v2")];
        assert_eq!(held_by_versions(&now, &versions, &d), vec![true, false]);
        let kept = vec![status(&written[0], EntryState::Error)];
        assert!(
            versions_of_content(&kept).is_empty(),
            "a kept value is no version's"
        );
    }

    #[test]
    fn values_already_read_are_not_marked_held() {
        let mut written = vec![entry("a", "v1")];
        let statuses = vec![status(&written[0], EntryState::Synced)];
        let digest = digest_of_content(&written, &statuses, ENV);
        written[0].outcome = Fetched::Value("postgres://h".into());
        assert_eq!(
            held(&written, &digest, &data(&["AIRFLOW_CONN_A"]), ENV),
            vec![false]
        );
    }
}
