//! `render`: a dry run of binding files against Secrets Manager (or the emulator). It shows which
//! env names would land on which workloads, with value hashes only, and the findings Airflow
//! would act on; nothing is written anywhere.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::{AirflowSecretBinding, EntryState, EntryStatus, Injection, Mode};
use crate::plan::{backend, content, labelled, select};
use crate::secretsmanager::{DiscoveryPatterns, ResolveError, SecretsManager};

/// A file that could not be read as bindings: names the file, the line and the field.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FileError {
    pub file: String,
    pub message: String,
}

/// Reads every `AirflowSecretBinding` of a (multi-document) YAML file.
pub fn read_bindings(file: &str, text: &str) -> Result<Vec<AirflowSecretBinding>, FileError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: serde_yaml::Value =
            serde_path_to_error::deserialize(doc).map_err(|e| FileError {
                file: file.into(),
                message: yaml_message(i, e.inner(), &e.path().to_string()),
            })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        if kind != "AirflowSecretBinding" {
            return Err(FileError {
                file: file.into(),
                message: format!(
                    "document {}: kind is {kind:?}, expected AirflowSecretBinding",
                    i + 1
                ),
            });
        }
        let binding: AirflowSecretBinding =
            serde_path_to_error::deserialize(value).map_err(|e| FileError {
                file: file.into(),
                message: format!("document {}: field {}: {}", i + 1, e.path(), e.inner()),
            })?;
        out.push(binding);
    }
    if out.is_empty() {
        return Err(FileError {
            file: file.into(),
            message: "no AirflowSecretBinding in the file".into(),
        });
    }
    Ok(out)
}

fn yaml_message(doc: usize, e: &serde_yaml::Error, path: &str) -> String {
    let at = e
        .location()
        .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
        .unwrap_or_default();
    let field = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("field {path}: ")
    };
    format!("document {}: {at}{field}{e}", doc + 1)
}

/// Reads the Deployments of a YAML stream (e.g. `helm template` of the agent chart).
pub fn read_deployments(file: &str, text: &str) -> Result<Vec<Deployment>, FileError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(doc).map_err(|e: serde_yaml::Error| FileError {
                file: file.into(),
                message: yaml_message(i, &e, ""),
            })?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("Deployment") {
            out.push(serde_yaml::from_value(value).map_err(|e| FileError {
                file: file.into(),
                message: format!("document {}: not a valid Deployment: {e}", i + 1),
            })?);
        }
    }
    Ok(out)
}

/// One entry as `render` reports it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedEntry {
    #[serde(flatten)]
    pub status: EntryStatus,
    /// `sha256:<first 12 hex>` of the value that would be injected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hash: Option<String>,
}

/// What one binding would do.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    pub namespace: Option<String>,
    pub name: String,
    pub secret_name: String,
    pub content_hash: String,
    pub entries: Vec<RenderedEntry>,
    /// Deployment → (containers, env names), when workloads were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workloads: Option<BTreeMap<String, WorkloadPlan>>,
}

#[derive(Debug, Serialize)]
pub struct WorkloadPlan {
    pub containers: Vec<String>,
    pub env: Vec<String>,
}

impl Rendered {
    /// Entries that are not injected (the exit code is non-zero when there are any).
    pub fn errors(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.status.state != EntryState::Synced)
            .count()
    }
}

fn short_hash(v: &str) -> String {
    format!(
        "sha256:{}",
        &hex::encode(Sha256::digest(v.as_bytes()))[..12]
    )
}

/// Resolves and maps one binding, exactly as the controller would.
pub async fn render(
    binding: &AirflowSecretBinding,
    sm: &SecretsManager,
    deployments: Option<&[Deployment]>,
) -> Result<Rendered, ResolveError> {
    let (patterns, problems) = DiscoveryPatterns::compile(&binding.spec);
    // Read with the caller's own identity and the inline source, whatever the binding names.
    let grant = crate::source::Grant::inline(&binding.spec.source);
    let mut entries = if binding.spec.mode == Mode::Backend {
        backend::backend_entries(&binding.spec, &grant.origin)
    } else {
        sm.resolve(&grant, &binding.spec, &patterns).await?
    };
    let k8s_backend = binding.spec.target.injection == Injection::KubernetesBackend;
    let own_ns = binding.metadata.namespace.as_deref().unwrap_or("default");
    let target_ns = binding
        .spec
        .target
        .backend_namespace
        .as_deref()
        .unwrap_or(own_ns);
    if k8s_backend {
        entries.extend(labelled::backend_entries(target_ns));
    }
    let mut d = content::desired_secret(
        &entries,
        binding.spec.target.injection,
        binding.spec.extra_conn_words(),
    );
    // Values by content key, wherever they land (the labelled Secrets of KubernetesBackend).
    let mut values = d.data.clone();
    if k8s_backend {
        labelled::check_ids(
            &mut d.entries,
            &BTreeMap::new(),
            binding.spec.team.as_deref(),
        );
        let name = binding.metadata.name.as_deref().unwrap_or_default();
        let placement = labelled::Placement {
            binding: name,
            namespace: own_ns,
            target: target_ns,
        };
        let moved = labelled::take_labelled(&mut d, placement, binding.spec.team.as_deref());
        content::rehash(&mut d);
        values = d.data.clone();
        values.extend(moved.into_iter().map(|l| (l.content_key, l.value)));
    }
    if binding.spec.target.injection != Injection::SecretOnly {
        content::enforce_env_limits(&mut d);
    }
    let mut rendered: Vec<RenderedEntry> = problems
        .into_iter()
        .map(|status| RenderedEntry {
            status,
            value_hash: None,
        })
        .collect();
    for status in &d.entries {
        let value_hash = status
            .env_name
            .as_ref()
            .filter(|_| status.state == EntryState::Synced)
            .and_then(|env| values.get(&content::secret_key_for(env)))
            .map(|v| short_hash(v));
        rendered.push(RenderedEntry {
            status: status.clone(),
            value_hash,
        });
    }
    let workloads = deployments.map(|all| {
        let selector = binding.spec.target.workloads.clone().unwrap_or_default();
        let selected = if binding.spec.target.injection == Injection::SecretOnly {
            vec![]
        } else {
            select::select_workloads(
                all,
                &selector,
                &binding.spec.target.components,
                &binding.spec.target.containers,
            )
        };
        selected
            .into_iter()
            .map(|w| {
                let env = match binding.spec.target.injection {
                    Injection::EnvFrom => vec![format!(
                        "envFrom: Secret {}",
                        crate::controller::secret_name(binding)
                    )],
                    _ => d.env.iter().map(|e| e.env_name.clone()).collect(),
                };
                (
                    w.name,
                    WorkloadPlan {
                        containers: w.containers,
                        env,
                    },
                )
            })
            .collect()
    });
    Ok(Rendered {
        namespace: binding.metadata.namespace.clone(),
        name: binding.metadata.name.clone().unwrap_or_default(),
        secret_name: crate::controller::secret_name(binding),
        content_hash: d.content_hash,
        entries: rendered,
        workloads,
    })
}

/// The human-readable form.
pub fn table(r: &Rendered) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let ns = r.namespace.as_deref().unwrap_or("<namespace>");
    let _ = writeln!(
        out,
        "binding {ns}/{} -> Secret {} (content sha256:{})",
        r.name,
        r.secret_name,
        &r.content_hash[..12]
    );
    let rows: Vec<[String; 6]> = r
        .entries
        .iter()
        .map(|e| {
            [
                format!("{:?}", e.status.kind),
                e.status.name.clone(),
                e.status.env_name.clone().unwrap_or_default(),
                format!("{:?}", e.status.state),
                e.value_hash.clone().unwrap_or_default(),
                e.status.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["KIND", "NAME", "ENV", "STATE", "VALUE", "NOTE"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i < 5 {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            } else {
                line.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if let Some(w) = &r.workloads {
        if w.is_empty() {
            let _ = writeln!(out, "no workload selected");
        }
        for (name, plan) in w {
            let _ = writeln!(
                out,
                "Deployment {name} [{}]: {}",
                plan.containers.join(", "),
                plan.env.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_file_line_and_field() {
        let e = read_bindings("b.yaml", "apiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {name: x}\nspec:\n  target: {injection: Mount}\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("b.yaml: document 1: field spec.target.injection"),
            "{e}"
        );
        let e = read_bindings("b.yaml", "kind: AirflowSecretBinding\nspec: [\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
        let e = read_bindings("b.yaml", "kind: ConfigMap\n").unwrap_err();
        assert!(
            e.to_string().contains("expected AirflowSecretBinding"),
            "{e}"
        );
        let e = read_bindings(
            "b.yaml",
            "kind: AirflowSecretBinding\nmetadata: {name: x}\nspec:\n  connections:\n    - connId: a\n  target: {}\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("spec.connections[0]") && e.to_string().contains("secretId"),
            "{e}"
        );
    }
}
