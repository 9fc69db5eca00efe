//! A binding's status, computed without I/O, and kept small whatever the binding's size.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::api::{AirflowSecretBindingStatus, EntryState, EntryStatus, WorkloadStatus};

/// Condition type and reasons, as constants users can grep and alert on.
pub mod reason {
    pub const READY: &str = "Ready";
    pub const SYNCED: &str = "Synced";
    pub const SYNCED_WITH_ERRORS: &str = "SyncedWithEntryErrors";
    pub const SECRETS_MANAGER_UNAVAILABLE: &str = "SecretsManagerUnavailable";
    pub const SECRET_NOT_OWNED: &str = "SecretNotOwned";
    pub const WORKLOAD_CONFLICT: &str = "WorkloadConflict";
    pub const BACKEND_SHADOWING: &str = "BackendShadowing";
    pub const SOURCE_EMPTIED: &str = "SourceEmptied";
    pub const TOO_LARGE: &str = "TooLarge";
    pub const WRITE_FAILED: &str = "WriteFailed";
    pub const PROGRESSING: &str = "Progressing";
    /// `spec.target.backendNamespace` names a namespace the binding may not write to (not
    /// annotated for the binding's namespace, missing, or not watched by the operator).
    pub const BACKEND_NAMESPACE_REFUSED: &str = "BackendNamespaceRefused";
}

/// Every entry state, in the order status and metrics show them.
pub const ALL_STATES: [EntryState; 7] = [
    EntryState::Synced,
    EntryState::NotFound,
    EntryState::Invalid,
    EntryState::Unrepresentable,
    EntryState::Conflict,
    EntryState::AccessDenied,
    EntryState::Error,
];

/// Every entry is listed up to this many entries.
pub const LIST_ALL_UP_TO: usize = 32;
/// Beyond that, entries that need attention are listed up to about this many bytes.
pub const ENTRY_BYTES: usize = 12 * 1024;
/// Longest message kept per entry.
const MESSAGE_CHARS: usize = 512;

/// The Ready condition and further True conditions (warnings) of one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
    /// (type, reason, message) of conditions that are True.
    pub warnings: Vec<(&'static str, &'static str, String)>,
}

/// Everything a status is made of. The entries are borrowed: status lists a few of them, and a
/// copy of all (10,000 at the largest) would be made only to be dropped.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub secret_name: String,
    pub extra_secret_names: Vec<String>,
    pub content_hash: Option<String>,
    pub last_sync_time: Option<String>,
    pub entries: &'a [EntryStatus],
    pub workloads: Vec<WorkloadStatus>,
    pub verdict: Verdict,
}

/// Builds the status; conditions keep their transition time while their status stays.
pub fn build(
    input: StatusInput<'_>,
    previous: &AirflowSecretBindingStatus,
    now: &Time,
) -> AirflowSecretBindingStatus {
    let StatusInput {
        generation,
        secret_name,
        extra_secret_names,
        content_hash,
        last_sync_time,
        entries,
        workloads,
        verdict,
    } = input;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: truncate(&message, 4096),
            last_transition_time: since,
            observed_generation: generation,
        }
    };
    let mut conditions = vec![condition(
        reason::READY,
        verdict.ready,
        verdict.reason,
        verdict.message,
    )];
    for (type_, why, message) in verdict.warnings {
        conditions.push(condition(type_, true, why, message));
    }
    // Every state is always present, so that a merge patch replaces each count.
    let mut counts: BTreeMap<String, i64> =
        ALL_STATES.iter().map(|s| (format!("{s:?}"), 0)).collect();
    for e in entries {
        *counts.entry(format!("{:?}", e.state)).or_default() += 1;
    }
    AirflowSecretBindingStatus {
        conditions,
        observed_generation: generation,
        last_sync_time: last_sync_time.or_else(|| previous.last_sync_time.clone()),
        content_hash,
        secret_name: Some(secret_name),
        extra_secret_names,
        synced_entries: Some(counts.get("Synced").copied().unwrap_or(0)),
        total_entries: Some(entries.len() as i64),
        entry_counts: counts,
        entries: listed(entries),
        workloads,
    }
}

/// How often a binding whose checks change nothing still moves `lastSyncTime`.
pub const SYNC_TIME_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// The status to store after a check: when nothing but `lastSyncTime` would change, the stored
/// time stays until it is [`SYNC_TIME_HEARTBEAT`] old, so that idle bindings do not write their
/// status on every refresh (thousands of bindings on a short interval would keep the API server
/// busy with nothing but timestamps).
pub fn quiet_sync_time(
    status: AirflowSecretBindingStatus,
    previous: &AirflowSecretBindingStatus,
    now: &Time,
) -> AirflowSecretBindingStatus {
    let Some(stored) = &previous.last_sync_time else {
        return status;
    };
    let young = stored
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .and_then(|t| now.0.duration_since(t).try_into().ok())
        .is_some_and(|age: std::time::Duration| age < SYNC_TIME_HEARTBEAT);
    let kept = AirflowSecretBindingStatus {
        last_sync_time: Some(stored.clone()),
        ..status.clone()
    };
    if young && kept == *previous {
        kept
    } else {
        status
    }
}

/// The previous status with a new verdict: what a binding shows while its content is held back
/// (entries and counts keep describing what the agents have).
pub fn with_verdict(
    previous: &AirflowSecretBindingStatus,
    verdict: Verdict,
    workloads: Vec<WorkloadStatus>,
    generation: Option<i64>,
    now: &Time,
) -> AirflowSecretBindingStatus {
    let input = StatusInput {
        generation,
        secret_name: previous.secret_name.clone().unwrap_or_default(),
        extra_secret_names: previous.extra_secret_names.clone(),
        content_hash: previous.content_hash.clone(),
        last_sync_time: None,
        entries: &[],
        workloads,
        verdict,
    };
    let fresh = build(input, previous, now);
    AirflowSecretBindingStatus {
        conditions: fresh.conditions,
        workloads: fresh.workloads,
        observed_generation: previous.observed_generation,
        ..previous.clone()
    }
}

/// The entries status lists: all of them for a small binding, else those that need attention
/// (within [`ENTRY_BYTES`]).
fn listed(entries: &[EntryStatus]) -> Vec<EntryStatus> {
    let shortened = |e: &EntryStatus| EntryStatus {
        message: e.message.as_ref().map(|m| truncate(m, MESSAGE_CHARS)),
        ..e.clone()
    };
    if entries.len() <= LIST_ALL_UP_TO {
        return entries.iter().map(shortened).collect();
    }
    let mut out = Vec::new();
    let mut bytes = 0;
    for e in entries
        .iter()
        .filter(|e| e.state != EntryState::Synced)
        .map(shortened)
    {
        let size = serde_json::to_string(&e).map(|s| s.len()).unwrap_or(0);
        if bytes + size > ENTRY_BYTES {
            break;
        }
        bytes += size;
        out.push(e);
    }
    out
}

fn truncate(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(chars).collect();
        t.push('…');
        t
    }
}

/// The status as a JSON merge patch that sets every field, clearing those that are empty, so
/// that the stored status always equals the one computed.
pub fn merge_patch(status: &AirflowSecretBindingStatus) -> Value {
    let mut v = serde_json::to_value(status).expect("status serialises");
    let obj = v.as_object_mut().expect("status is an object");
    for field in [
        "conditions",
        "observedGeneration",
        "lastSyncTime",
        "contentHash",
        "secretName",
        "extraSecretNames",
        "syncedEntries",
        "totalEntries",
        "entryCounts",
        "entries",
        "workloads",
    ] {
        obj.entry(field).or_insert(Value::Null);
    }
    serde_json::json!({ "status": v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EntryKind;

    fn entry(i: usize, state: EntryState) -> EntryStatus {
        EntryStatus {
            kind: EntryKind::Connection,
            name: format!("conn_{i:05}"),
            env_name: Some(format!("AIRFLOW_CONN_CONN_{i:05}")),
            secret_id: format!("airflow/connections/conn_{i:05}"),
            version_id: Some("a1b2c3d4-0000-0000-0000-000000000000".into()),
            state,
            message: (state != EntryState::Synced).then(|| "x".repeat(2000)),
        }
    }

    fn input(entries: &[EntryStatus]) -> StatusInput<'_> {
        StatusInput {
            generation: Some(1),
            secret_name: "s".into(),
            extra_secret_names: vec![],
            content_hash: Some("h".into()),
            last_sync_time: None,
            entries,
            workloads: vec![],
            verdict: Verdict {
                ready: true,
                reason: reason::SYNCED,
                message: "ok".into(),
                warnings: vec![],
            },
        }
    }

    #[test]
    fn status_stays_small_at_any_size() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for n in [10, 10_000] {
            let entries: Vec<EntryStatus> = (0..n)
                .map(|i| {
                    entry(
                        i,
                        if i % 7 == 0 {
                            EntryState::NotFound
                        } else {
                            EntryState::Synced
                        },
                    )
                })
                .collect();
            let s = build(
                input(&entries),
                &AirflowSecretBindingStatus::default(),
                &now,
            );
            let size = serde_json::to_string(&s).unwrap().len();
            assert!(size <= 16 * 1024, "{n} entries: {size} bytes");
            assert_eq!(s.total_entries, Some(n as i64));
            let not_found = (0..n).filter(|i| i % 7 == 0).count() as i64;
            assert_eq!(s.entry_counts["NotFound"], not_found);
            assert_eq!(s.synced_entries, Some(n as i64 - not_found));
            if n == 10 {
                assert_eq!(s.entries.len(), 10, "a small binding lists every entry");
            } else {
                assert!(s.entries.iter().all(|e| e.state != EntryState::Synced));
                assert!(!s.entries.is_empty());
            }
        }
    }

    #[test]
    fn the_patch_clears_what_is_gone() {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let s = build(input(&[]), &AirflowSecretBindingStatus::default(), &now);
        let p = merge_patch(&s);
        assert_eq!(p["status"]["workloads"], Value::Null);
        assert_eq!(p["status"]["entries"], Value::Null);
        assert_eq!(p["status"]["contentHash"], "h");
    }

    #[test]
    fn an_idle_check_moves_the_sync_time_only_now_and_then() {
        let at = |s: i64| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let with_time = |s: i64| {
            let mut i = input(&[]);
            i.last_sync_time = Some(at(s).0.to_string());
            i
        };
        let stored = build(
            with_time(1_000_000),
            &AirflowSecretBindingStatus::default(),
            &at(1_000_000),
        );
        // A check 20 s later that changes nothing else: the stored status stays as it is.
        let next = build(with_time(1_000_020), &stored, &at(1_000_020));
        assert_eq!(quiet_sync_time(next, &stored, &at(1_000_020)), stored);
        // Ten minutes later the time moves.
        let later = build(with_time(1_000_600), &stored, &at(1_000_600));
        let kept = quiet_sync_time(later.clone(), &stored, &at(1_000_600));
        assert_eq!(kept, later);
        assert_ne!(kept.last_sync_time, stored.last_sync_time);
        // Anything else changing moves it too.
        let mut changed = with_time(1_000_020);
        changed.content_hash = Some("other".into());
        let changed = build(changed, &stored, &at(1_000_020));
        assert_eq!(
            quiet_sync_time(changed.clone(), &stored, &at(1_000_020)).last_sync_time,
            changed.last_sync_time
        );
        assert_ne!(changed.last_sync_time, stored.last_sync_time);
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000).unwrap());
        let first = build(input(&[]), &AirflowSecretBindingStatus::default(), &t0);
        let again = build(input(&[]), &first, &t1);
        assert_eq!(again.conditions[0].last_transition_time, t0);
        let mut failing = input(&[]);
        failing.verdict.ready = false;
        let changed = build(failing, &again, &t1);
        assert_eq!(changed.conditions[0].last_transition_time, t1);
    }
}
