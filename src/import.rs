//! `import-values`: read a Remote Execution agent `values.yaml` that configures Airflow's own
//! `SecretsManagerBackend` (`secretBackend` + `AIRFLOW__SECRETS__BACKEND_KWARGS` in `commonEnv`)
//! and write the equivalent `AirflowSecretBinding`.
//!
//! Airflow's defaults apply to kwargs the values do not give (`airflow/connections`,
//! `airflow/variables`, `airflow/config`, `/`); a kwarg set to `null` disables that kind.

use serde_json::{Value, json};

use crate::plan::backend::SM_BACKEND_CLASS;

/// An error that names the file, the place and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ImportError {
    pub file: String,
    pub message: String,
}

/// What the import found, besides the binding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Import {
    /// The binding manifest.
    pub binding: Value,
    /// Advice for the values.yaml (printed to stderr).
    pub notes: Vec<String>,
}

/// Options of the generated binding.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub release: String,
    pub name: String,
    pub namespace: Option<String>,
    /// `KubernetesBackend` (rotations without restarts; the agents keep a secrets backend, as
    /// the agent chart requires) or `Env`.
    pub injection: crate::api::Injection,
}

/// What to change in the values.yaml. The agent chart requires `secretBackend`; the binding
/// must not be shadowed by it.
fn backend_advice(file: &str, injection: crate::api::Injection) -> String {
    use crate::plan::labelled::K8S_BACKEND_CLASS;
    if injection == crate::api::Injection::KubernetesBackend {
        return format!(
            "in {file}, set `secretBackend: {K8S_BACKEND_CLASS}` and remove AIRFLOW__SECRETS__BACKEND_KWARGS (and any AIRFLOW__WORKERS__SECRETS_BACKEND*) from commonEnv / env: the binding sets the kwargs, the agents then read the Secrets it writes (no Secrets Manager call per lookup, no restart per rotation). The agent image needs apache-airflow-providers-cncf-kubernetes >= 10.25.0 (check: python -c 'import airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend'); without it, import with --injection env"
        );
    }
    format!(
        "Airflow consults a configured secrets backend before environment variables, and the agent chart requires `secretBackend`: once the binding is Ready, set `secretBackend: airflow.secrets.local_filesystem.LocalFilesystemBackend` (the chart's default, which finds nothing without file paths) in {file} and remove AIRFLOW__SECRETS__BACKEND_KWARGS, or the injected values stay shadowed"
    )
}

/// Converts the text of a values.yaml. `file` is only used in messages.
pub fn import_values(file: &str, text: &str, opts: &ImportOptions) -> Result<Import, ImportError> {
    let err = |message: String| ImportError {
        file: file.to_string(),
        message,
    };
    let values: Value = serde_yaml::from_str::<serde_yaml::Value>(text)
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            err(format!("{at}not valid YAML: {e}"))
        })
        .and_then(|v| {
            serde_json::to_value(v).map_err(|e| err(format!("cannot read the values: {e}")))
        })?;
    let Value::Object(values) = values else {
        return Err(err("the top level must be a mapping of values".into()));
    };

    // Env entries by name: commonEnv, then every component's env (first wins, as the chart
    // renders commonEnv first).
    let mut env: Vec<(String, String, String)> = Vec::new(); // (name, value, where)
    let mut collect = |list: &Value, place: &str| -> Result<(), ImportError> {
        match list {
            Value::Null => Ok(()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let name = item
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| err(format!("{place}[{i}].name: expected a string")))?;
                    if let Some(v) = item.get("value") {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            other => other.to_string(),
                        };
                        env.push((name.to_string(), v, format!("{place}[{i}]")));
                    }
                }
                Ok(())
            }
            _ => Err(err(format!("{place}: expected a list of {{name, value}}"))),
        }
    };
    collect(values.get("commonEnv").unwrap_or(&Value::Null), "commonEnv")?;
    if let Some(workers) = values.get("workers") {
        let Value::Array(ws) = workers else {
            return Err(err("workers: expected a list".into()));
        };
        for (i, w) in ws.iter().enumerate() {
            collect(
                w.get("env").unwrap_or(&Value::Null),
                &format!("workers[{i}].env"),
            )?;
        }
    }
    for c in ["dagProcessor", "triggerer"] {
        if let Some(block) = values.get(c) {
            collect(
                block.get("env").unwrap_or(&Value::Null),
                &format!("{c}.env"),
            )?;
        }
    }
    let get_env = |name: &str| {
        env.iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, at)| (v.clone(), at.clone()))
    };

    let backend = values
        .get("secretBackend")
        .and_then(Value::as_str)
        .map(|s| (s.to_string(), "secretBackend".to_string()))
        .or_else(|| get_env("AIRFLOW__WORKERS__SECRETS_BACKEND"))
        .or_else(|| get_env("AIRFLOW__SECRETS__BACKEND"));
    let Some((backend, backend_at)) = backend else {
        return Err(err(
            "no secrets backend: neither secretBackend nor AIRFLOW__SECRETS__BACKEND is set".into(),
        ));
    };
    if backend.trim() != SM_BACKEND_CLASS {
        return Err(err(format!(
            "{backend_at}: the backend is {backend:?}, not Airflow's SecretsManagerBackend ({SM_BACKEND_CLASS}); nothing to import"
        )));
    }
    let (kwargs_text, kwargs_at) = get_env("AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS")
        .or_else(|| get_env("AIRFLOW__SECRETS__BACKEND_KWARGS"))
        .unwrap_or_else(|| ("{}".into(), "(no kwargs: Airflow's defaults)".into()));
    let kwargs: serde_json::Map<String, Value> = match serde_json::from_str(&kwargs_text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(err(format!(
                "{kwargs_at}: AIRFLOW__SECRETS__BACKEND_KWARGS must be a JSON object"
            )));
        }
        Err(e) => {
            return Err(err(format!(
                "{kwargs_at}: AIRFLOW__SECRETS__BACKEND_KWARGS is not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )));
        }
    };

    let mut discovery = serde_json::Map::new();
    for (kwarg, field, default) in [
        (
            "connections_prefix",
            "connectionsPrefix",
            "airflow/connections",
        ),
        ("variables_prefix", "variablesPrefix", "airflow/variables"),
        ("config_prefix", "configPrefix", "airflow/config"),
    ] {
        match kwargs.get(kwarg) {
            None => {
                discovery.insert(field.into(), json!(default));
            }
            Some(Value::String(s)) => {
                discovery.insert(field.into(), json!(s));
            }
            Some(Value::Null) => {}
            Some(other) => {
                return Err(err(format!(
                    "{kwargs_at}: {kwarg} must be a string or null, not {other}"
                )));
            }
        }
    }
    for (kwarg, field) in [
        ("sep", "sep"),
        ("connections_lookup_pattern", "connectionsLookupPattern"),
        ("variables_lookup_pattern", "variablesLookupPattern"),
        ("config_lookup_pattern", "configLookupPattern"),
    ] {
        match kwargs.get(kwarg) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                discovery.insert(field.into(), json!(s));
            }
            Some(other) => {
                return Err(err(format!(
                    "{kwargs_at}: {kwarg} must be a string, not {other}"
                )));
            }
        }
    }
    if let Some(words) = kwargs.get("extra_conn_words") {
        discovery.insert("extraConnWords".into(), words.clone());
    }
    // Lookup patterns apply to config only in Backend mode; config values are materialised only
    // from explicit entries, so a config prefix alone is dropped here.
    discovery.remove("configPrefix");
    discovery.remove("configLookupPattern");

    let mut source = serde_json::Map::new();
    let region = kwargs
        .get("region_name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| get_env("AWS_REGION").map(|v| v.0))
        .or_else(|| get_env("AWS_DEFAULT_REGION").map(|v| v.0));
    if let Some(r) = region {
        source.insert("region".into(), json!(r));
    }
    if let Some(role) = kwargs.get("role_arn").and_then(Value::as_str) {
        source.insert("roleArn".into(), json!(role));
        if let Some(assume) = kwargs.get("assume_role_kwargs") {
            if let Some(id) = assume.get("ExternalId").and_then(Value::as_str) {
                source.insert("externalId".into(), json!(id));
            }
            if let Some(n) = assume.get("RoleSessionName").and_then(Value::as_str) {
                source.insert("roleSessionName".into(), json!(n));
            }
        }
    }
    if let Some(e) = kwargs.get("endpoint_url").and_then(Value::as_str) {
        source.insert("endpoint".into(), json!(e));
    }

    let namespace = opts.namespace.clone().or_else(|| {
        values
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    });
    let mut metadata = json!({"name": opts.name});
    if let Some(ns) = &namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut spec = serde_json::Map::new();
    if !source.is_empty() {
        spec.insert("source".into(), Value::Object(source));
    }
    spec.insert("discovery".into(), Value::Object(discovery));
    let mut target = json!({"workloads": {"helmRelease": opts.release}});
    if opts.injection != crate::api::Injection::Env {
        target["injection"] = json!(opts.injection);
    }
    spec.insert("target".into(), target);

    let mut notes = vec![backend_advice(file, opts.injection)];
    if let Some(prefix) = values.get("resourceNamePrefix").and_then(Value::as_str) {
        notes.push(format!(
            "the agents' Deployments are named {prefix}-worker-<name>, {prefix}-dag-processor, {prefix}-triggerer; the binding selects them by the Helm release {:?} (pass --release if that is not the release name)",
            opts.release
        ));
    }
    for unknown in kwargs.keys().filter(|k| {
        ![
            "connections_prefix",
            "variables_prefix",
            "config_prefix",
            "sep",
            "connections_lookup_pattern",
            "variables_lookup_pattern",
            "config_lookup_pattern",
            "extra_conn_words",
            "region_name",
            "role_arn",
            "assume_role_kwargs",
            "endpoint_url",
        ]
        .contains(&k.as_str())
    }) {
        notes.push(format!(
            "{kwargs_at}: kwarg {unknown:?} has no equivalent in the binding and is ignored"
        ));
    }

    Ok(Import {
        binding: json!({
            "apiVersion": "airflow-secrets.io/v1alpha1",
            "kind": "AirflowSecretBinding",
            "metadata": metadata,
            "spec": spec,
        }),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ImportOptions {
        ImportOptions {
            release: "astro-agent".into(),
            name: "agents".into(),
            namespace: None,
            injection: crate::api::Injection::KubernetesBackend,
        }
    }

    #[test]
    fn astro_values_become_a_binding() {
        let values = r#"
resourceNamePrefix: astro-agent
namespace: airflow-agents
secretBackend: airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend
commonEnv:
  - name: ASTRO_DEPLOYMENT_ID
    value: abc
  - name: AIRFLOW__SECRETS__BACKEND_KWARGS
    value: '{"connections_prefix": "airflow/connections", "variables_prefix": null, "region_name": "eu-west-1", "role_arn": "arn:aws:iam::123456789012:role/airflow"}'
"#;
        let got = import_values("values.yaml", values, &opts()).unwrap();
        let b = &got.binding;
        assert_eq!(b["metadata"]["namespace"], "airflow-agents");
        assert_eq!(
            b["spec"]["discovery"]["connectionsPrefix"],
            "airflow/connections"
        );
        assert!(
            b["spec"]["discovery"].get("variablesPrefix").is_none(),
            "null disables variables"
        );
        assert_eq!(b["spec"]["source"]["region"], "eu-west-1");
        assert_eq!(
            b["spec"]["source"]["roleArn"],
            "arn:aws:iam::123456789012:role/airflow"
        );
        assert_eq!(b["spec"]["target"]["injection"], "KubernetesBackend");
        assert!(
            got.notes[0].contains(&format!(
                "set `secretBackend: {}`",
                crate::plan::labelled::K8S_BACKEND_CLASS
            )),
            "the chart requires a backend: the note names the one to keep: {}",
            got.notes[0]
        );
        let env = ImportOptions {
            injection: crate::api::Injection::Env,
            ..opts()
        };
        let got = import_values("values.yaml", values, &env).unwrap();
        assert!(got.binding["spec"]["target"].get("injection").is_none());
        assert!(
            got.notes[0].contains("LocalFilesystemBackend"),
            "{}",
            got.notes[0]
        );
        assert_eq!(
            b["spec"]["target"]["workloads"]["helmRelease"],
            "astro-agent"
        );
        let spec: crate::api::AirflowSecretBindingSpec =
            serde_json::from_value(b["spec"].clone()).unwrap();
        assert_eq!(spec.discovery.unwrap().sep, "/");
    }

    #[test]
    fn airflow_defaults_fill_missing_kwargs() {
        let values = "secretBackend: airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend\n";
        let b = import_values("v.yaml", values, &opts()).unwrap().binding;
        assert_eq!(
            b["spec"]["discovery"]["connectionsPrefix"],
            "airflow/connections"
        );
        assert_eq!(
            b["spec"]["discovery"]["variablesPrefix"],
            "airflow/variables"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let cases = [
            ("a: [", "line"),
            (
                "secretBackend: airflow.secrets.local_filesystem.LocalFilesystemBackend\n",
                "secretBackend",
            ),
            (
                "commonEnv: {a: 1}\nsecretBackend: x\n",
                "commonEnv: expected a list",
            ),
            ("commonEnv:\n  - {value: x}\n", "commonEnv[0].name"),
            (
                "secretBackend: airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend\ncommonEnv:\n  - {name: AIRFLOW__SECRETS__BACKEND_KWARGS, value: '{broken'}\n",
                "commonEnv[0]: AIRFLOW__SECRETS__BACKEND_KWARGS is not valid JSON",
            ),
            ("- a\n", "top level"),
            ("{}", "no secrets backend"),
        ];
        for (text, expected) in cases {
            let e = import_values("values.yaml", text, &opts())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("values.yaml: ") && e.contains(expected),
                "{text:?}: {e}"
            );
        }
    }
}
