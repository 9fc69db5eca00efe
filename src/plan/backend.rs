//! Backend mode: the config options that point Airflow's own `SecretsManagerBackend` at the
//! binding's discovery, and the check for a backend that shadows the values we inject.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use crate::api::{EntryKind, EntryState, EntryStatus};
use crate::entries::{Fetched, ResolvedEntry};
use crate::source::Origin;

/// Airflow's Secrets Manager backend class.
pub const SM_BACKEND_CLASS: &str =
    "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend";

/// `backend_kwargs` of Airflow's `SecretsManagerBackend` equivalent to a binding's discovery and
/// origin (its source's region, endpoint and role, with the same session name and tags). A
/// prefix the binding does not give is sent as `null`, which makes Airflow skip that kind, so
/// that the binding means the same in both modes.
pub fn backend_kwargs(spec: &crate::api::AirflowSecretBindingSpec, origin: &Origin) -> Value {
    let d = spec.discovery.clone().unwrap_or_default();
    let mut kw = serde_json::Map::new();
    kw.insert("connections_prefix".into(), json!(d.connections_prefix));
    kw.insert("variables_prefix".into(), json!(d.variables_prefix));
    kw.insert("config_prefix".into(), json!(d.config_prefix));
    kw.insert("sep".into(), json!(d.sep));
    for (k, v) in [
        ("connections_lookup_pattern", &d.connections_lookup_pattern),
        ("variables_lookup_pattern", &d.variables_lookup_pattern),
        ("config_lookup_pattern", &d.config_lookup_pattern),
    ] {
        if let Some(v) = v {
            kw.insert(k.into(), json!(v));
        }
    }
    if !d.extra_conn_words.is_empty() {
        kw.insert("extra_conn_words".into(), json!(d.extra_conn_words));
    }
    let s = origin;
    if let Some(r) = &s.region {
        kw.insert("region_name".into(), json!(r));
    }
    if let Some(e) = &s.endpoint {
        kw.insert("endpoint_url".into(), json!(e));
    }
    if let Some(role) = &s.role_arn {
        kw.insert("role_arn".into(), json!(role));
        let mut assume = serde_json::Map::new();
        if let Some(id) = &s.external_id {
            assume.insert("ExternalId".into(), json!(id));
        }
        if let Some(n) = &s.session_name {
            assume.insert("RoleSessionName".into(), json!(n));
        }
        if !s.session_tags.is_empty() {
            let tags: Vec<Value> = s
                .session_tags
                .iter()
                .map(|(k, v)| json!({"Key": k, "Value": v}))
                .collect();
            assume.insert("Tags".into(), Value::Array(tags));
        }
        if !assume.is_empty() {
            kw.insert("assume_role_kwargs".into(), Value::Object(assume));
        }
    }
    Value::Object(kw)
}

/// Backend mode: the config options that point Airflow's own backend at Secrets Manager, for
/// `[secrets]` and for `[workers]` (which Airflow 3 workers read first), as resolved entries so
/// that they flow through the same mapping, Secret and injection as values do.
pub fn backend_entries(
    spec: &crate::api::AirflowSecretBindingSpec,
    origin: &Origin,
) -> Vec<ResolvedEntry> {
    backend_options(
        SM_BACKEND_CLASS,
        &backend_kwargs(spec, origin),
        "(backend mode: no value is read)",
    )
}

/// The config options that select a secrets backend class with kwargs, for `[secrets]` and for
/// `[workers]`, as config entries (`origin` stands where a secret id would).
pub fn backend_options(class: &str, kwargs: &Value, origin: &str) -> Vec<ResolvedEntry> {
    let kwargs = kwargs.to_string();
    [
        ("secrets", "backend", class.to_string()),
        ("secrets", "backend_kwargs", kwargs.clone()),
        ("workers", "secrets_backend", class.to_string()),
        ("workers", "secrets_backend_kwargs", kwargs),
    ]
    .into_iter()
    .map(|(section, key, value)| ResolvedEntry {
        kind: EntryKind::Config,
        name: format!("{section}.{key}"),
        config: Some((section.into(), key.into())),
        secret_id: origin.into(),
        version_id: None,
        outcome: Fetched::Value(value),
        team: None,
    })
    .collect()
}

/// Airflow consults a configured secrets backend before environment variables. When a workload
/// already runs `SecretsManagerBackend` (plain `AIRFLOW__SECRETS__BACKEND` or
/// `AIRFLOW__WORKERS__SECRETS_BACKEND` env), every connection or variable we inject that the
/// backend would also look up can be silently shadowed by it. Returns a warning per such workload.
pub fn backend_shadowing(
    deployment: &Deployment,
    containers: &[String],
    injected: &[EntryStatus],
) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    for c in pod
        .containers
        .iter()
        .filter(|c| containers.contains(&c.name))
    {
        let env: BTreeMap<&str, &str> = c
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.as_str(), e.value.as_deref()?)))
            .collect();
        for (class_var, kwargs_var) in [
            (
                "AIRFLOW__WORKERS__SECRETS_BACKEND",
                "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
            ),
            (
                "AIRFLOW__SECRETS__BACKEND",
                "AIRFLOW__SECRETS__BACKEND_KWARGS",
            ),
        ] {
            if env.get(class_var).map(|v| v.trim()) != Some(SM_BACKEND_CLASS) {
                continue;
            }
            let kwargs: serde_json::Map<String, Value> = env
                .get(kwargs_var)
                .and_then(|k| serde_json::from_str(k).ok())
                .unwrap_or_default();
            let prefix = |key: &str, default: &str| match kwargs.get(key) {
                None => Some(default.to_string()),
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => None, // null (or anything else) disables the lookup
            };
            let pattern = |key: &str| {
                kwargs
                    .get(key)
                    .and_then(Value::as_str)
                    .map(crate::airflow::pattern::LookupPattern::new)
            };
            let mut shadowed = 0;
            for (kind, pkey, default, patkey) in [
                (
                    EntryKind::Connection,
                    "connections_prefix",
                    "airflow/connections",
                    "connections_lookup_pattern",
                ),
                (
                    EntryKind::Variable,
                    "variables_prefix",
                    "airflow/variables",
                    "variables_lookup_pattern",
                ),
            ] {
                if prefix(pkey, default).is_none() {
                    continue;
                }
                let pat = pattern(patkey);
                shadowed += injected
                    .iter()
                    .filter(|e| e.kind == kind && e.state == EntryState::Synced)
                    .filter(|e| match &pat {
                        None => true,
                        // Undecidable (backtrack limit): counted, the warning errs on caution.
                        Some(Ok(p)) => p.matches(&e.name).unwrap_or(true),
                        Some(Err(_)) => false, // Airflow fails every lookup with a broken pattern
                    })
                    .count();
            }
            if shadowed > 0 {
                return Some(format!(
                    "container {} runs Airflow's SecretsManagerBackend ({class_var}), which Airflow consults before environment variables: {shadowed} injected connection(s)/variable(s) are shadowed whenever Secrets Manager holds the same id under the backend's prefix; remove the backend, set its prefixes to null, or exclude these ids with a lookup pattern",
                    c.name
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AirflowSecretBindingSpec;
    use crate::api::Injection;
    use crate::plan::content::desired_secret;

    #[test]
    fn kwargs_mirror_discovery_and_source() {
        let spec: AirflowSecretBindingSpec = serde_json::from_value(json!({
            "source": {"region": "eu-west-1", "roleArn": "arn:aws:iam::123456789012:role/r", "externalId": "x"},
            "discovery": {"connectionsPrefix": "airflow/connections", "connectionsLookupPattern": "^db_", "sep": "/"},
            "mode": "Backend",
            "target": {"injection": "SecretOnly"}
        }))
        .unwrap();
        let origin = Origin::from(&spec.source);
        let kw = backend_kwargs(&spec, &origin);
        assert_eq!(kw["connections_prefix"], json!("airflow/connections"));
        assert_eq!(
            kw["variables_prefix"],
            Value::Null,
            "not given: Airflow must not look variables up"
        );
        assert_eq!(kw["connections_lookup_pattern"], json!("^db_"));
        assert_eq!(kw["region_name"], json!("eu-west-1"));
        assert_eq!(kw["assume_role_kwargs"]["ExternalId"], json!("x"));
        assert_eq!(
            kw["assume_role_kwargs"].get("RoleSessionName"),
            None,
            "not written unless given, as before sources existed"
        );
        let d = desired_secret(
            &backend_entries(&spec, &origin),
            Injection::Env,
            &BTreeMap::new(),
        );
        assert_eq!(d.data["AIRFLOW__SECRETS__BACKEND"], SM_BACKEND_CLASS);
        assert_eq!(
            d.data["AIRFLOW__WORKERS__SECRETS_BACKEND"],
            SM_BACKEND_CLASS
        );
        let parsed: Value =
            serde_json::from_str(&d.data["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"]).unwrap();
        assert_eq!(parsed, kw);
    }

    fn deployment_with_env(env: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "w"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "worker", "env": env}]}}}
        }))
        .unwrap()
    }

    fn synced(kind: EntryKind, name: &str) -> EntryStatus {
        EntryStatus {
            kind,
            name: name.into(),
            env_name: None,
            secret_id: String::new(),
            version_id: None,
            state: EntryState::Synced,
            message: None,
        }
    }

    #[test]
    fn shadowing_is_detected_only_where_the_backend_would_look() {
        let injected = [
            synced(EntryKind::Connection, "db_main"),
            synced(EntryKind::Variable, "env"),
        ];
        let c = ["worker".to_string()];
        let with = |kwargs: &str| {
            deployment_with_env(json!([
                {"name": "AIRFLOW__SECRETS__BACKEND", "value": SM_BACKEND_CLASS},
                {"name": "AIRFLOW__SECRETS__BACKEND_KWARGS", "value": kwargs}
            ]))
        };
        assert!(
            backend_shadowing(&with("{}"), &c, &injected)
                .unwrap()
                .contains("2 injected")
        );
        assert!(
            backend_shadowing(&with(r#"{"variables_prefix": null}"#), &c, &injected)
                .unwrap()
                .contains("1 injected")
        );
        assert!(
            backend_shadowing(
                &with(r#"{"connections_prefix": null, "variables_prefix": null}"#),
                &c,
                &injected
            )
            .is_none()
        );
        assert!(
            backend_shadowing(
                &with(r#"{"variables_prefix": null, "connections_lookup_pattern": "^tmp_"}"#),
                &c,
                &injected
            )
            .is_none()
        );
        let local = deployment_with_env(
            json!([{"name": "AIRFLOW__SECRETS__BACKEND", "value": "airflow.secrets.local_filesystem.LocalFilesystemBackend"}]),
        );
        assert!(backend_shadowing(&local, &c, &injected).is_none());
    }
}
