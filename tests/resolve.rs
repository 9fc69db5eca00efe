//! The Secrets Manager reader against the emulator: explicit and discovered entries, per-id
//! errors, version stages, paging, and version-aware caching (what a refresh costs in API calls).

mod support;

use airflow_secrets_operator::api::{AirflowSecretBindingSpec, EntryKind, EntryState};
use airflow_secrets_operator::entries::{Fetched, ResolvedEntry};
use airflow_secrets_operator::secretsmanager::{DiscoveryPatterns, Reader, SecretsManager};
use airflow_secrets_operator::source::Grant;
use serde_json::json;
use support::*;

/// Nothing is held: every located value is read.
fn read_all(e: &[ResolvedEntry]) -> Vec<bool> {
    vec![false; e.len()]
}

/// The spec's inline source, unrestricted.
fn open(s: &AirflowSecretBindingSpec) -> Grant {
    Grant::inline(&s.source)
}

fn spec(v: serde_json::Value) -> AirflowSecretBindingSpec {
    serde_json::from_value(v).expect("spec")
}

fn calls(sm: &SecretsManager) -> [u64; 3] {
    airflow_secrets_operator::secretsmanager::call_totals(&sm.calls).map(|(_, n)| n)
}

#[tokio::test]
async fn explicit_entries_stages_and_per_id_errors() {
    let aws = secrets_manager().await;
    let p = format!("resolve-explicit-{}", std::process::id());
    aws.create_secret()
        .name(format!("{p}/db"))
        .secret_string("postgres://old")
        .send()
        .await
        .unwrap();
    aws.put_secret_value()
        .secret_id(format!("{p}/db"))
        .secret_string("postgres://new")
        .send()
        .await
        .unwrap();
    aws.create_secret()
        .name(format!("{p}/env"))
        .secret_string("prod")
        .send()
        .await
        .unwrap();

    let sm = SecretsManager::from_env().await;
    let s = spec(json!({
        "connections": [
            {"connId": "db", "secretId": format!("{p}/db")},
            {"connId": "db_previous", "secretId": format!("{p}/db"), "versionStage": "AWSPREVIOUS"},
            {"connId": "gone", "secretId": format!("{p}/missing")}
        ],
        "variables": [{"key": "env", "secretId": format!("{p}/env")}],
        "target": {"injection": "SecretOnly"}
    }));
    let got = sm
        .resolve(&open(&s), &s, &DiscoveryPatterns::default())
        .await
        .expect("resolve");
    let by = |name: &str| {
        got.iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(by("db").outcome, Fetched::Value("postgres://new".into()));
    assert_eq!(
        by("db_previous").outcome,
        Fetched::Value("postgres://old".into())
    );
    assert_ne!(by("db").version_id, by("db_previous").version_id);
    assert!(
        matches!(&by("gone").outcome, Fetched::Problem(EntryState::NotFound, m) if m.contains("ResourceNotFound"))
    );
    assert_eq!(by("env").kind, EntryKind::Variable);
    assert_eq!(by("env").outcome, Fetched::Value("prod".into()));
    // db, gone and env in one BatchGetSecretValue; the AWSPREVIOUS stage needs GetSecretValue.
    assert_eq!(calls(&sm), [0, 1, 1]);
}

#[tokio::test]
async fn discovery_pages_batches_and_fetches_only_changed_versions() {
    let aws = secrets_manager().await;
    let p = format!("resolve-discovery-{}", std::process::id());
    // 130 connections (two ListSecrets pages of 100), 25 of which match the lookup pattern
    // (two BatchGetSecretValue calls of at most 20), plus a variable and an unrelated secret.
    for i in 0..130 {
        let id = if i < 25 {
            format!("prod_{i:03}")
        } else {
            format!("dev_{i:03}")
        };
        aws.create_secret()
            .name(format!("{p}/connections/{id}"))
            .secret_string(format!("postgres://h{i}"))
            .send()
            .await
            .unwrap();
    }
    aws.create_secret()
        .name(format!("{p}/variables/flag"))
        .secret_string("on")
        .send()
        .await
        .unwrap();
    aws.create_secret()
        .name(format!("{p}/other/x"))
        .secret_string("x")
        .send()
        .await
        .unwrap();

    let sm = SecretsManager::from_env().await;
    let s = spec(json!({
        "discovery": {
            "connectionsPrefix": format!("{p}/connections/"),
            "variablesPrefix": format!("{p}/variables"),
            "connectionsLookupPattern": "^PROD_"
        },
        "target": {"injection": "SecretOnly"}
    }));
    let (patterns, problems) = DiscoveryPatterns::compile(&s);
    assert!(problems.is_empty());
    // As the controller reads for a binding (listings made anew on each refresh here).
    let reader = Reader {
        key: ("ns".into(), "binding".into()),
        max_age: std::time::Duration::ZERO,
        direct: false,
        reads_values: false,
    };

    let first = sm
        .resolve_for(&reader, &open(&s), &s, &patterns, &read_all)
        .await
        .expect("resolve");
    let conns: Vec<&str> = first
        .iter()
        .filter(|e| e.kind == EntryKind::Connection)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(conns.len(), 25, "{conns:?}");
    assert!(conns.iter().all(|c| c.starts_with("prod_")));
    assert!(first.iter().any(|e| e.kind == EntryKind::Variable
        && e.name == "flag"
        && e.outcome == Fetched::Value("on".into())));
    let c = calls(&sm);
    assert!(
        c[0] >= 3,
        "two pages of connections and one of variables: {c:?}"
    );
    assert_eq!(c[1], 2, "26 values in chunks of 20: {c:?}");

    // Nothing changed: listing only, no value read.
    let second = sm
        .resolve_for(&reader, &open(&s), &s, &patterns, &read_all)
        .await
        .expect("resolve");
    assert_eq!(second, first);
    let c2 = calls(&sm);
    assert_eq!(
        c2[1], c[1],
        "no BatchGetSecretValue when no version changed: {c2:?}"
    );
    assert_eq!(
        c2[0] - c[0],
        c[0],
        "a refresh lists as much as the first pass"
    );

    // One rotated secret: exactly one more batch call, and the new value.
    aws.put_secret_value()
        .secret_id(format!("{p}/connections/prod_007"))
        .secret_string("postgres://rotated")
        .send()
        .await
        .unwrap();
    let third = sm
        .resolve_for(&reader, &open(&s), &s, &patterns, &read_all)
        .await
        .expect("resolve");
    assert_eq!(calls(&sm)[1], c[1] + 1);
    let rotated = third.iter().find(|e| e.name == "prod_007").unwrap();
    assert_eq!(rotated.outcome, Fetched::Value("postgres://rotated".into()));
    assert_eq!(
        third
            .iter()
            .filter(|e| e.outcome != first.iter().find(|f| f.name == e.name).unwrap().outcome)
            .count(),
        1
    );

    // Held values are not read; the rest are.
    let c3 = calls(&sm);
    let all_but_prod_001 = |e: &[ResolvedEntry]| -> Vec<bool> {
        e.iter()
            .map(|e| e.name != "prod_001" && matches!(e.outcome, Fetched::Held))
            .collect()
    };
    let held = sm
        .resolve_for(&reader, &open(&s), &s, &patterns, &all_but_prod_001)
        .await
        .expect("resolve");
    assert_eq!(calls(&sm)[1], c3[1], "prod_001's value is still cached");
    assert_eq!(
        held.iter()
            .filter(|e| !matches!(e.outcome, Fetched::Held))
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["prod_001"]
    );
    // The cache keeps only what the reader still reads: held values leave it.
    assert_eq!(sm.cache_sizes().2, 1);

    // A forced sync reads every discovered value directly (a listing may lag).
    let forced = Reader {
        direct: true,
        ..reader.clone()
    };
    let again = sm
        .resolve_for(&forced, &open(&s), &s, &patterns, &read_all)
        .await
        .expect("resolve");
    assert_eq!(
        calls(&sm)[1],
        c3[1] + 2,
        "26 values, direct, in chunks of 20"
    );
    assert_eq!(
        again.iter().find(|e| e.name == "prod_007").unwrap().outcome,
        Fetched::Value("postgres://rotated".into())
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_the_whole_resolution() {
    let sm = SecretsManager::from_env().await;
    let s = spec(json!({
        "source": {"endpoint": "http://127.0.0.1:9"},
        "connections": [{"connId": "db", "secretId": "x"}],
        "target": {"injection": "SecretOnly"}
    }));
    let err = sm
        .resolve(&open(&s), &s, &DiscoveryPatterns::default())
        .await
        .expect_err("no endpoint there");
    assert!(err.to_string().contains("BatchGetSecretValue"), "{err}");
}

async fn resolve_all(
    sm: &SecretsManager,
    specs: &[AirflowSecretBindingSpec],
) -> Vec<Vec<airflow_secrets_operator::entries::ResolvedEntry>> {
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let r = reader(&format!("b{i}"), WINDOW_MS);
        out.push(
            sm.resolve_for(&r, &open(s), s, &DiscoveryPatterns::default(), &read_all)
                .await
                .expect("resolve"),
        );
    }
    out
}

/// The bindings' refresh window in these tests.
const WINDOW_MS: u64 = 2000;

fn reader(name: &str, max_age_ms: u64) -> Reader {
    Reader {
        key: ("ns".into(), name.into()),
        max_age: std::time::Duration::from_millis(max_age_ms),
        direct: false,
        reads_values: false,
    }
}

/// 30 secrets `<prefix>/conns/cNN` and a one-connection binding spec for each.
async fn thirty_one_connection_bindings(
    test: &str,
) -> (
    aws_sdk_secretsmanager::Client,
    String,
    Vec<AirflowSecretBindingSpec>,
) {
    let aws = secrets_manager().await;
    let p = format!("{test}-{}", std::process::id());
    for i in 0..30 {
        put_secret(
            &aws,
            &format!("{p}/conns/c{i:02}"),
            &format!("postgres://h/{i}"),
        )
        .await;
    }
    let specs = (0..30)
        .map(|i| {
            spec(json!({
                "connections": [{"connId": format!("c{i:02}"), "secretId": format!("{p}/conns/c{i:02}")}],
                "target": {"injection": "SecretOnly"}
            }))
        })
        .collect();
    (aws, p, specs)
}

/// 30 bindings with one explicit connection each, their secrets under one prefix: after the
/// first sync, an idle refresh of all of them is one listing of that prefix and reads no value;
/// one rotation is one listing and exactly one value read.
#[tokio::test]
async fn explicit_names_are_checked_by_a_shared_listing_and_read_once_per_version() {
    let (aws, p, specs) = thirty_one_connection_bindings("view-explicit").await;
    let sm = SecretsManager::from_env().await;
    let first = resolve_all(&sm, &specs).await;
    assert!(
        first
            .iter()
            .all(|e| matches!(e[0].outcome, Fetched::Value(_)))
    );
    assert_eq!(calls(&sm)[1], 30, "the first sync reads each value once");
    // A first sync checks only its own, new name: on a loaded machine the 30 one after the
    // other may outlast the window, and the next pass re-checks the early names (one listing).
    let warm = resolve_all(&sm, &specs).await;
    assert_eq!(warm, first);
    let c1 = calls(&sm);
    assert_eq!(c1[1], 30, "no value read again: {c1:?}");

    // Within the refresh window: served from the view.
    let again = resolve_all(&sm, &specs).await;
    assert_eq!(again, first);
    assert_eq!(calls(&sm), c1, "nothing is due yet");

    // An idle refresh of all 30: one listing of their prefix, no value.
    tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS + 100)).await;
    let idle = resolve_all(&sm, &specs).await;
    assert_eq!(idle, first);
    let c2 = calls(&sm);
    assert_eq!(
        c2[0] - c1[0],
        1,
        "one ListSecrets for 30 explicit names: {c2:?}"
    );
    assert_eq!(
        c2[1], c1[1],
        "no value read when no version changed: {c2:?}"
    );

    // One rotation: one listing and exactly one value read; only that entry changes.
    aws.put_secret_value()
        .secret_id(format!("{p}/conns/c07"))
        .secret_string("postgres://rotated")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS + 100)).await;
    let rotated = resolve_all(&sm, &specs).await;
    let c3 = calls(&sm);
    assert_eq!(c3[0] - c2[0], 1, "{c3:?}");
    assert_eq!(c3[1] - c2[1], 1, "exactly one value read: {c3:?}");
    let changed: Vec<usize> = (0..30).filter(|i| rotated[*i] != first[*i]).collect();
    assert_eq!(changed, [7]);
    assert_eq!(
        rotated[7][0].outcome,
        Fetched::Value("postgres://rotated".into())
    );

    // Deleted bindings leave no value behind.
    for i in 0..30 {
        sm.forget(&("ns".into(), format!("b{i}")));
    }
    assert_eq!(
        sm.cache_sizes().2,
        0,
        "values of deleted bindings are dropped"
    );
}

/// Bindings that discover the same prefix share its listing, also when they ask at the same
/// moment (one listing in flight serves all).
#[tokio::test]
async fn discovery_listings_are_shared_and_single_flight() {
    let aws = secrets_manager().await;
    let p = format!("view-shared-{}", std::process::id());
    for i in 0..150 {
        put_secret(&aws, &format!("{p}/connections/c{i:03}"), "postgres://h").await;
    }
    let sm = SecretsManager::from_env().await;
    let s = spec(json!({
        "discovery": {"connectionsPrefix": format!("{p}/connections")},
        "target": {"injection": "SecretOnly"}
    }));
    let none = DiscoveryPatterns::default();
    let grant = open(&s);
    let readers: Vec<Reader> = (0..10).map(|i| reader(&format!("d{i}"), 60_000)).collect();
    let results = futures::future::join_all(
        readers
            .iter()
            .map(|r| sm.resolve_for(r, &grant, &s, &none, &read_all)),
    )
    .await;
    for r in &results {
        assert_eq!(r.as_ref().expect("resolve").len(), 150);
    }
    let c = calls(&sm);
    assert_eq!(
        c[0], 2,
        "150 secrets: two pages, listed once for 10 bindings: {c:?}"
    );
    assert_eq!(c[1], 8, "150 values read once, 20 per call: {c:?}");
}

/// Bindings synced at the same moment (as after `kubectl apply -f dir/`) share their value reads:
/// 30 bindings with one connection each need a handful of BatchGetSecretValue calls, not 30.
#[tokio::test]
async fn concurrent_first_syncs_share_value_reads() {
    let (_, _, specs) = thirty_one_connection_bindings("view-concurrent").await;
    let sm = SecretsManager::from_env().await;
    let readers: Vec<Reader> = (0..30).map(|i| reader(&format!("c{i}"), 60_000)).collect();
    let none = DiscoveryPatterns::default();
    let grants: Vec<Grant> = specs.iter().map(open).collect();
    let results = futures::future::join_all(
        readers
            .iter()
            .zip(specs.iter().zip(&grants))
            .map(|(r, (s, g))| sm.resolve_for(r, g, s, &none, &read_all)),
    )
    .await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r.as_ref().expect("resolve")[0].outcome,
            Fetched::Value(format!("postgres://h/{i}"))
        );
    }
    let c = calls(&sm);
    assert!(c[1] <= 5, "30 values in a handful of batch reads: {c:?}");
    println!("30 concurrent first syncs: {c:?} (ListSecrets, BatchGetSecretValue, GetSecretValue)");
}

/// 30 new bindings (holding no value yet) syncing at once: their names are read, not first
/// checked by a listing and then read (the read answers with the version), and together. The
/// versions they learnt serve the next pass, which reads and lists nothing.
#[tokio::test]
async fn new_bindings_read_their_values_at_once_together() {
    let (_, _, specs) = thirty_one_connection_bindings("view-first-read").await;
    let sm = SecretsManager::from_env().await;
    let new = |i: usize| Reader {
        reads_values: true,
        ..reader(&format!("n{i}"), 60_000)
    };
    let readers: Vec<Reader> = (0..30).map(new).collect();
    let none = DiscoveryPatterns::default();
    let grants: Vec<Grant> = specs.iter().map(open).collect();
    let first = futures::future::join_all(
        readers
            .iter()
            .zip(specs.iter().zip(&grants))
            .map(|(r, (s, g))| sm.resolve_for(r, g, s, &none, &read_all)),
    )
    .await;
    for (i, r) in first.iter().enumerate() {
        assert_eq!(
            r.as_ref().expect("resolve")[0].outcome,
            Fetched::Value(format!("postgres://h/{i}"))
        );
    }
    let c = calls(&sm);
    assert_eq!(c[0], 0, "no version check before a first read: {c:?}");
    assert!(c[1] <= 4, "30 first reads in a few batch reads: {c:?}");
    println!("30 new bindings at once: {c:?} (ListSecrets, BatchGetSecretValue, GetSecretValue)");

    // Their values held now (as the controller says once the Secrets are written).
    let held: Vec<Reader> = readers
        .into_iter()
        .map(|r| Reader {
            reads_values: false,
            ..r
        })
        .collect();
    let held_all = |e: &[ResolvedEntry]| vec![true; e.len()];
    let again = futures::future::join_all(
        held.iter()
            .zip(specs.iter().zip(&grants))
            .map(|(r, (s, g))| sm.resolve_for(r, g, s, &none, &held_all)),
    )
    .await;
    assert!(again.iter().all(Result::is_ok));
    assert_eq!(
        calls(&sm),
        c,
        "the versions the reads learnt serve the next pass"
    );
}

/// 30 explicit names whose prefix also holds 400 unrelated secrets: the first check lists the
/// prefix only as far as that is cheaper than checking by name (3 pages), then checks by name;
/// from then on only by name (3 calls for 30 names), never the whole prefix.
#[tokio::test]
async fn names_among_many_unrelated_secrets_are_checked_by_name() {
    let (aws, p, specs) = thirty_one_connection_bindings("view-sparse").await;
    for i in 0..400 {
        put_secret(&aws, &format!("{p}/conns/z{i:03}"), "unrelated").await;
    }
    let sm = SecretsManager::from_env().await;
    // As at the operator's start: every binding's names are known before the first check.
    for (i, s) in specs.iter().enumerate() {
        sm.register(&("ns".into(), format!("b{i}")), &open(s), s)
            .await;
    }
    let first = resolve_all(&sm, &specs).await;
    assert!(
        first
            .iter()
            .all(|e| matches!(e[0].outcome, Fetched::Value(_)))
    );
    let c1 = calls(&sm);
    assert_eq!(
        c1[0], 6,
        "3 pages of the prefix, then 3 listings by name: {c1:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(WINDOW_MS + 100)).await;
    let idle = resolve_all(&sm, &specs).await;
    assert_eq!(idle, first);
    let c2 = calls(&sm);
    assert_eq!(c2[0] - c1[0], 3, "by name only: {c2:?}");
    assert_eq!(c2[1], c1[1], "no value read: {c2:?}");
}
