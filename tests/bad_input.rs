//! Bindings the API server accepts but this operator version cannot read (issue 14, "bad
//! input"), on the real control plane. During a rolling upgrade (or after a rollback) the
//! installed CRD may be a newer version's: here the current CRD is widened as a newer version
//! might widen it — a new `spec.mode` and `spec.target.injection` value, `spec.target` made
//! optional, a new field `spec.somethingNew`, a new entry state in status — and bindings using
//! each of these sit next to ordinary ones, before the operator starts (its first list) and
//! while it runs (its watch).
//!
//! Asserted: the operator starts and never exits; every binding it can read is reconciled as
//! usual (a new field is ignored, a newer status is replaced); each one it cannot read gets
//! Ready False, reason `UnsupportedSpec`, a message naming the object and the field; a binding
//! that turns unreadable keeps its Secret and its entries on the workloads; fixed, it is
//! reconciled again; deleted, it is released. Last, under the first release's CRD (which checks
//! `refreshInterval` with a pattern only), a binding whose interval overflows is reconciled
//! with the default interval.
//!
//! This suite changes the cluster-wide CRD for a while: it runs alone in its test binary and puts
//! the current CRD back whatever happens.

mod support;

use std::process::Command;
use std::time::Duration;

use airflow_secrets_operator::api::AirflowSecretBinding;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use support::*;

const T: Duration = Duration::from_secs(60);

const AGENT_VALUES: &str = r#"
resourceNamePrefix: astro-agent
workers:
  - {name: default-worker}
"#;
const WORKER: &str = "astro-agent-worker-default-worker";

/// Puts the current CRD back when the test ends, passed or not: the suites after this one run
/// against it.
struct RestoreCurrentCrd;

impl Drop for RestoreCurrentCrd {
    fn drop(&mut self) {
        let crds = repo_root().join("crds");
        let _ = Command::new(ground_var("ASO_KUBECTL"))
            .args(["apply", "--server-side", "--force-conflicts", "-f"])
            .arg(crds)
            .output();
    }
}

/// The current CRD, widened as a newer version might widen it.
fn newer_crd() -> CustomResourceDefinition {
    let text =
        std::fs::read_to_string(repo_root().join("crds/airflowsecretbindings.yaml")).unwrap();
    let mut crd: Value = serde_yaml::from_str(&text).unwrap();
    let schema = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let spec = &mut schema["spec"];
    let add = |v: &mut Value, value: &str| v["enum"].as_array_mut().unwrap().push(json!(value));
    add(&mut spec["properties"]["mode"], "SomethingNew");
    add(
        &mut spec["properties"]["target"]["properties"]["injection"],
        "SomethingNew",
    );
    spec["required"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f != "target");
    spec["properties"]["somethingNew"] =
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    add(
        &mut schema["status"]["properties"]["entries"]["items"]["properties"]["state"],
        "Stale",
    );
    serde_json::from_value(crd).unwrap()
}

fn bindings(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<AirflowSecretBinding>(&()),
    )
}

/// Server-side apply of any binding, read back untyped (the typed API cannot read some).
async fn apply(client: &Client, ns: &str, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": name}, "spec": spec,
    });
    bindings(client, ns)
        .patch(
            name,
            &PatchParams::apply("aso-tests").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply binding {name}: {e}"));
}

/// (status, reason, message) of the Ready condition.
async fn ready(client: &Client, ns: &str, name: &str) -> Option<(String, String, String)> {
    let b = bindings(client, ns).get_opt(name).await.ok()??;
    let c = b.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

async fn wait_ready(client: &Client, ns: &str, name: &str) {
    eventually(&format!("{name} Ready True"), T, || async {
        let (s, _, _) = ready(client, ns, name).await?;
        (s == "True").then_some(())
    })
    .await;
}

/// Waits until `name` is reported as unreadable, naming it and `field`; returns the message.
async fn wait_unsupported(client: &Client, ns: &str, name: &str, field: &str) -> String {
    let message = eventually(&format!("{name} UnsupportedSpec"), T, || async {
        let (s, reason, message) = ready(client, ns, name).await?;
        (s == "False" && reason == "UnsupportedSpec").then_some(message)
    })
    .await;
    assert!(
        message.contains(&format!("AirflowSecretBinding {ns}/{name} ")),
        "{message}"
    );
    assert!(message.contains(&format!("{field}: ")), "{message}");
    eprintln!("{name}: {message}");
    message
}

fn spec(secret: &str, key: &str, target: Value) -> Value {
    json!({
        "variables": [{"key": key, "secretId": secret}],
        "target": target,
        "refreshInterval": "2s",
    })
}

#[tokio::test]
async fn bindings_this_version_cannot_read_never_stop_the_others() {
    let client = client().await;
    install_crds(&client).await;
    let _restore = RestoreCurrentCrd;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = newer_crd();
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("aso-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let ns = namespace(&client, "bad-input").await;
    // Served once a binding using a new value passes a server-side dry run.
    eventually("the newer CRD served", T, || async {
        let probe: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "probe"},
            "spec": {"mode": "SomethingNew", "variables": [{"key": "x", "secretId": "x"}]},
        }))
        .unwrap();
        let dry = PostParams {
            dry_run: true,
            ..Default::default()
        };
        bindings(&client, &ns).create(&dry, &probe).await.ok()
    })
    .await;
    helm_install_agent(&ns, "astro-agent", AGENT_VALUES);
    let sm = secrets_manager().await;
    let p = format!("bad-input-{ns}");
    put_secret(&sm, &format!("{p}/v"), "value-v").await;
    put_secret(&sm, &format!("{p}/w"), "value-w").await;
    let v = format!("{p}/v");
    let w = format!("{p}/w");
    let only = json!({"injection": "SecretOnly"});
    let agents = json!({"workloads": {"helmRelease": "astro-agent"}});

    // Before the operator starts: its first list holds all of them. By name, an unreadable
    // binding comes first (a start that read one binding strictly would stop there).
    let mut odd = spec(&v, "a", agents.clone());
    odd["target"]["injection"] = json!("SomethingNew");
    apply(&client, &ns, "injection-newer", odd).await;
    let mut odd = spec(&v, "a", only.clone());
    odd["mode"] = json!("SomethingNew");
    apply(&client, &ns, "mode-newer", odd).await;
    let mut odd = spec(&v, "a", only.clone());
    odd.as_object_mut().unwrap().remove("target");
    apply(&client, &ns, "no-target", odd).await;
    apply(&client, &ns, "plain", spec(&v, "plain", only.clone())).await;
    apply(&client, &ns, "status-newer", spec(&v, "s", only.clone())).await;
    bindings(&client, &ns)
        .patch_status(
            "status-newer",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": 1,
                "entries": [{"kind": "Variable", "name": "s", "secretId": v, "state": "Stale"}],
            }})),
        )
        .await
        .unwrap();
    apply(&client, &ns, "turns-odd", spec(&w, "turns", agents.clone())).await;
    let mut newer = spec(&v, "u", only.clone());
    newer["somethingNew"] = json!({"anything": ["goes"]});
    apply(&client, &ns, "unknown-field", newer).await;

    let mut op = Operator::start(&ns);
    for (name, key) in [
        ("plain", "PLAIN"),
        ("status-newer", "S"),
        ("unknown-field", "U"),
    ] {
        wait_ready(&client, &ns, name).await;
        let data = secret_text(&client, &ns, &format!("{name}-airflow"))
            .await
            .unwrap();
        assert_eq!(data[&format!("AIRFLOW_VAR_{key}")], "value-v", "{name}");
    }
    wait_ready(&client, &ns, "turns-odd").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let carries =
        |d: &Deployment| env_refs(d, &pod(d).containers[0].name).contains_key("AIRFLOW_VAR_TURNS");
    eventually("the worker carries turns-odd's entry", T, || async {
        carries(&deployments.get(WORKER).await.ok()?).then_some(())
    })
    .await;
    wait_unsupported(&client, &ns, "injection-newer", "spec.target.injection").await;
    let m = wait_unsupported(&client, &ns, "mode-newer", "spec.mode").await;
    assert!(m.contains("SomethingNew"), "{m}");
    let m = wait_unsupported(&client, &ns, "no-target", "spec").await;
    assert!(m.contains("missing field `target`"), "{m}");
    // Nothing was made of them.
    for name in ["injection-newer", "mode-newer", "no-target"] {
        assert!(
            secret_text(&client, &ns, &format!("{name}-airflow"))
                .await
                .is_none()
        );
    }

    // While it runs: the watch goes on for new bindings, and a binding that turns unreadable
    // keeps what it delivered.
    apply(&client, &ns, "later", spec(&w, "later", only.clone())).await;
    wait_ready(&client, &ns, "later").await;
    let mut odd = spec(&w, "turns", agents.clone());
    odd["mode"] = json!("SomethingNew");
    apply(&client, &ns, "turns-odd", odd).await;
    wait_unsupported(&client, &ns, "turns-odd", "spec.mode").await;
    op.quiet().await;
    assert!(carries(&deployments.get(WORKER).await.unwrap()));
    assert_eq!(
        secret_text(&client, &ns, "turns-odd-airflow")
            .await
            .unwrap()["AIRFLOW_VAR_TURNS"],
        "value-w"
    );
    // Fixed, it is reconciled again.
    let mut fixed = spec(&v, "a", only.clone());
    fixed["mode"] = json!("Materialize");
    apply(&client, &ns, "mode-newer", fixed).await;
    wait_ready(&client, &ns, "mode-newer").await;
    // Deleted while unreadable, it is released: its entry leaves the worker, its Secret goes.
    bindings(&client, &ns)
        .delete("turns-odd", &DeleteParams::default())
        .await
        .unwrap();
    eventually("turns-odd released and gone", T, || async {
        let gone = bindings(&client, &ns)
            .get_opt("turns-odd")
            .await
            .ok()?
            .is_none();
        let released = !carries(&deployments.get(WORKER).await.ok()?);
        let secret_gone = secret_text(&client, &ns, "turns-odd-airflow")
            .await
            .is_none();
        (gone && released && secret_gone).then_some(())
    })
    .await;

    // Reported once: no status write answers its own watch event.
    let version = || async {
        let b = bindings(&client, &ns).get("injection-newer").await.unwrap();
        b.metadata.resource_version
    };
    let before = version().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        version().await,
        before,
        "injection-newer is written again and again"
    );

    // The first release's CRD, which a cluster may still run (helm never upgrades CRDs), checks
    // refreshInterval with its pattern only (no CEL rule): an interval that overflows is stored.
    let fixture = repo_root().join("tests/fixtures/crd-upgrade/airflowsecretbindings-47f9d9a.yaml");
    let out = Command::new(ground_var("ASO_KUBECTL"))
        .args(["replace", "-f"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut huge = spec(&v, "huge", only.clone());
    huge["refreshInterval"] = json!("99999999999999999999999h");
    eventually("an overflowing interval stored", T, || async {
        let object = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "huge-interval"}, "spec": huge,
        });
        bindings(&client, &ns)
            .patch(
                "huge-interval",
                &PatchParams::apply("aso-tests").force(),
                &Patch::Apply(object),
            )
            .await
            .ok()
    })
    .await;
    wait_ready(&client, &ns, "huge-interval").await;
    assert_eq!(
        secret_text(&client, &ns, "huge-interval-airflow")
            .await
            .unwrap()["AIRFLOW_VAR_HUGE"],
        "value-v"
    );

    assert!(
        op.exit_within(Duration::from_millis(200)).await.is_none(),
        "the operator exited:\n{}",
        op.logs()
    );
    let logs = op.stop();
    assert!(!logs.contains("panicked"), "{logs}");
    delete_namespace(&client, &ns).await;
}
