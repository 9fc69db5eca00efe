//! Property tests of what the controller reads from a binding as the API server serves it
//! (issue 14, "bad input"): `spec.refreshInterval` and the lenient decoding of the watch.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::binding::refresh_interval_of;
use super::lenient::{decode, unreadable};

/// Intervals as the CRD's pattern writes them, with values of any size.
fn interval() -> impl Strategy<Value = String> {
    let term = (
        "[0-9]{1,25}",
        proptest::option::of("\\.[0-9]{1,12}"),
        "(ms|s|m|h)",
    )
        .prop_map(|(n, f, u)| format!("{n}{}{u}", f.unwrap_or_default()));
    prop_oneof![
        3 => proptest::collection::vec(term, 1..4).prop_map(|t| t.concat()),
        1 => "[0-9a-z.+µ-]{0,12}",
        1 => any::<String>(),
    ]
}

/// Any JSON, with the shapes of a spec's values nearby.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,8}".prop_map(Value::from),
        proptest::sample::select(vec![
            "SecretOnly",
            "Env",
            "SomethingNew",
            "Backend",
            "Retain",
            "1h",
            "worker",
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        let key = proptest::sample::select(vec![
            "target",
            "mode",
            "injection",
            "variables",
            "connections",
            "discovery",
            "key",
            "secretId",
            "secretName",
            "deletionPolicy",
            "source",
            "components",
            "workloads",
            "refreshInterval",
            "conditions",
            "entries",
            "somethingNew",
        ])
        .prop_map(String::from);
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((key, inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_refresh_interval_reads_without_panic(text in interval()) {
        let d = refresh_interval_of(&text);
        prop_assert!(d >= Duration::from_secs(1));
        // Where kube's parser does not panic on it (small integer terms), both agree.
        let small = regex::Regex::new("^([0-9]{1,6}(ms|s|m|h)){1,3}$").unwrap();
        if small.is_match(&text) {
            let k = text.parse::<kube::core::Duration>().unwrap();
            prop_assert_eq!(d, Duration::from(k).max(Duration::from_secs(1)), "{}", text);
        }
    }

    #[test]
    fn any_spec_or_status_decodes(spec in json_value(), status in json_value()) {
        let object = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "b", "namespace": "ns", "generation": 1},
            "spec": spec, "status": status,
        });
        let b = decode(&object).unwrap();
        prop_assert_eq!(b.metadata.name.as_deref(), Some("b"));
        // Unreadable or not, the binding as read is the strict reading when there is one.
        if let Ok(strict) = serde_json::from_value::<crate::api::AirflowSecretBinding>(object) {
            prop_assert_eq!(unreadable(&b), None);
            prop_assert_eq!((b.metadata, b.spec, b.status), (strict.metadata, strict.spec, strict.status));
        }
    }
}

/// Why the controller reads intervals itself: kube's parser panics on a term that overflows,
/// which the CRD's pattern allows.
#[test]
fn an_interval_that_overflows_reads_as_the_default() {
    let huge = "99999999999999999999999h";
    let kube = std::panic::catch_unwind(|| huge.parse::<kube::core::Duration>());
    assert!(kube.is_err(), "kube's parser no longer panics: {kube:?}");
    assert_eq!(refresh_interval_of(huge), Duration::from_secs(3600));
    assert_eq!(refresh_interval_of("1h30m"), Duration::from_secs(5400));
    assert_eq!(refresh_interval_of("2.5s"), Duration::from_millis(2500));
    assert_eq!(refresh_interval_of("500ms"), Duration::from_secs(1));
    assert_eq!(
        refresh_interval_of("2562047h"),
        Duration::from_secs(2562047 * 3600)
    );
    assert_eq!(refresh_interval_of("2562048h"), Duration::from_secs(3600));
}
