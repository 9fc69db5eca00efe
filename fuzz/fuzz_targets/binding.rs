//! A binding as the API server may serve it (any JSON under a valid metadata) → what the watch
//! keeps (`controller::lenient::decode`), and `spec.refreshInterval` as the controller reads it.
//! Never panics; decoding never fails on anything but metadata.
#![no_main]

use airflow_secrets_operator::controller::binding::refresh_interval_of;
use airflow_secrets_operator::controller::lenient::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let interval = refresh_interval_of(text);
    assert!(interval >= std::time::Duration::from_secs(1));
    if let Ok(spec) = serde_json::from_str::<serde_json::Value>(text) {
        let object = serde_json::json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "fuzz", "namespace": "ns", "generation": 1},
            "spec": spec.clone(),
            "status": spec,
        });
        let b = decode(&object).expect("metadata is valid");
        assert_eq!(b.metadata.name.as_deref(), Some("fuzz"));
    }
});
