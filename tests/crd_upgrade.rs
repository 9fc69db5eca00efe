//! The CRD upgrade path, on the real control plane. Helm installs `crds/` once and never upgrades
//! it, so a cluster keeps the CRD of its first install until someone applies the new one; the
//! README ("Upgrading") and docs/reference.md say how:
//! `kubectl apply --server-side --force-conflicts -f crds/`. Here the CRD goes back to what older
//! commits shipped (copies in tests/fixtures/crd-upgrade/), a binding is created under it, the
//! current CRD is applied that way, and the binding must still be served, unchanged, valid under
//! the new schema and reconciled by the current operator.
//!
//! This suite changes the cluster-wide CRD for a while: it runs alone in its test binary and puts
//! the current CRD back whatever happens.

mod support;

use std::process::Command;
use std::time::Duration;

use airflow_secrets_operator::api::AirflowSecretBinding;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use support::*;

const T: Duration = Duration::from_secs(60);

/// The commits whose CRD the cluster may still run: the first one, and the one just before the
/// current schema.
const OLD: [&str; 2] = ["47f9d9a", "0f994bb"];

fn crds_dir() -> String {
    repo_root().join("crds").to_str().unwrap().to_string()
}

/// Puts the current CRD back when the test ends, passed or not: the suites after this one run
/// against it.
struct RestoreCurrentCrd;

impl Drop for RestoreCurrentCrd {
    fn drop(&mut self) {
        let _ = Command::new(ground_var("ASO_KUBECTL"))
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &crds_dir(),
            ])
            .output();
    }
}

fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new(ground_var("ASO_KUBECTL"))
        .args(args)
        .output()
        .expect("run kubectl")
}

fn binding_json(ns: &str, name: &str) -> Value {
    let out = run(
        &ground_var("ASO_KUBECTL"),
        &["-n", ns, "get", "airflowsecretbinding", name, "-o", "json"],
    );
    serde_json::from_str(&out).unwrap()
}

/// Whether the API server serves the current schema in `ns`: `spec.team` (added by the current
/// version) passes strict field validation in a server-side dry run.
fn serves_current_schema(ns: &str) -> bool {
    let probe = json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "team": "probe",
            "variables": [{"key": "x", "secretId": "x"}],
            "target": {"injection": "SecretOnly"}
        }
    });
    create(&probe, true).status.success()
}

/// `kubectl create` (strict field validation) of `object`, optionally as a server-side dry run.
fn create(object: &Value, dry_run: bool) -> std::process::Output {
    use std::io::Write;
    let mut args = vec!["create", "--validate=strict", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    let mut child = Command::new(ground_var("ASO_KUBECTL"))
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(object.to_string().as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `default` of `spec.<field>` in the current CRD.
fn current_default(field: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("crds/airflowsecretbindings.yaml")).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        [field]["default"]
        .clone()
}

#[tokio::test]
async fn a_binding_created_under_an_old_crd_survives_the_documented_upgrade() {
    let client = client().await;
    install_crds(&client).await;
    let _restore = RestoreCurrentCrd;
    let sm = secrets_manager().await;
    for old in OLD {
        let ns = namespace(&client, &format!("crd-upgrade-{old}")).await;
        let p = format!("crd-upgrade-{ns}");
        put_secret(&sm, &format!("{p}/v"), "from-before-the-upgrade").await;
        put_secret(&sm, &format!("{p}/c"), "postgresql://u:p@db:5432/x").await;
        put_secret(&sm, &format!("{p}/vars/upgraded"), "discovered").await;

        // The cluster as a release of that commit left it: its CRD, written by an update (as
        // `helm install` creates it).
        let fixture = repo_root().join(format!(
            "tests/fixtures/crd-upgrade/airflowsecretbindings-{old}.yaml"
        ));
        let out = kubectl(&["replace", "-f", fixture.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        eventually(&format!("the CRD of {old} served"), T, || async {
            (!serves_current_schema(&ns)).then_some(())
        })
        .await;
        let binding = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "kept", "namespace": ns},
            "spec": {
                "variables": [{"key": "before", "secretId": format!("{p}/v")}],
                "connections": [{"connId": "warehouse", "secretId": format!("{p}/c")}],
                "config": [{"section": "smtp", "key": "smtp_password", "secretId": format!("{p}/v")}],
                "discovery": {"variablesPrefix": format!("{p}/vars"), "variablesLookupPattern": "^up"},
                "target": {"injection": "SecretOnly", "secretName": "kept-values"},
                "refreshInterval": "30s",
                "deletionPolicy": "Delete"
            }
        });
        let out = create(&binding, false);
        assert!(out.status.success(), "created under {old}: {out:?}");
        let before = binding_json(&ns, "kept");

        // A plain server-side apply is refused: the CRD's fields belong to whoever wrote it.
        let out = kubectl(&["apply", "--server-side", "-f", &crds_dir()]);
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("conflict"),
            "{out:?}"
        );
        // The documented way.
        let out = kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &crds_dir(),
        ]);
        assert!(out.status.success(), "{out:?}");
        eventually("the current CRD served", T, || async {
            serves_current_schema(&ns).then_some(())
        })
        .await;

        // Served, and not rewritten: same object, same version in storage.
        let after = binding_json(&ns, "kept");
        for field in ["uid", "resourceVersion", "generation"] {
            assert_eq!(
                after["metadata"][field], before["metadata"][field],
                "{old}: {field}"
            );
        }
        // Every field the user set is unchanged; what the new schema adds is only its defaults.
        let (b, a) = (
            before["spec"].as_object().unwrap(),
            after["spec"].as_object().unwrap(),
        );
        for (k, v) in b {
            assert_eq!(&a[k], v, "{old}: spec.{k} changed");
        }
        for (k, v) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
            assert_eq!(
                v,
                &current_default(k),
                "{old}: spec.{k} is new and not a default"
            );
        }
        // Valid under the new schema: the same spec passes a create (no ratcheting) …
        let mut copy = binding.clone();
        copy["metadata"]["name"] = json!("kept-copy");
        copy["spec"] = after["spec"].clone();
        let out = create(&copy, true);
        assert!(out.status.success(), "{old}: invalid now: {out:?}");
        // … the current types read it, and the current operator reconciles it.
        let api: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);
        api.get("kept").await.expect("the current types read it");
        let op = Operator::start(&ns);
        let data = eventually(&format!("{old}: the binding reconciled"), T, || async {
            let (s, _) = ready_reason(&client, &ns, "kept").await?;
            let data = secret_text(&client, &ns, "kept-values").await?;
            (s == "True").then_some(data)
        })
        .await;
        assert_eq!(data["AIRFLOW_VAR_BEFORE"], "from-before-the-upgrade");
        assert_eq!(data["AIRFLOW_VAR_UPGRADED"], "discovered");
        assert_eq!(data["AIRFLOW_CONN_WAREHOUSE"], "postgresql://u:p@db:5432/x");
        assert_eq!(
            data["AIRFLOW__SMTP__SMTP_PASSWORD"],
            "from-before-the-upgrade"
        );
        api.delete("kept", &DeleteParams::default()).await.unwrap();
        eventually("the binding deleted", T, || async {
            api.get_opt("kept").await.ok()?.is_none().then_some(())
        })
        .await;
        drop(op);
        delete_namespace(&client, &ns).await;
    }
}
