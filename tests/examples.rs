//! Every binding in examples/bindings is applied to the real control plane, reconciled by the
//! operator (with the chart's RBAC) against the emulator, and does what its comments say.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use airflow_secrets_operator::api::{AirflowSecretBinding, EntryState};
use kube::api::Api;
use support::*;

const T: Duration = Duration::from_secs(60);

fn example(name: &str) -> serde_json::Value {
    let path = repo_root().join("examples/bindings").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn every_example_binding_reconciles_as_documented() {
    let files: Vec<String> = std::fs::read_dir(repo_root().join("examples/bindings"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let mut checked = vec![
        "backend.yaml",
        "discovery.yaml",
        "explicit.yaml",
        "multi-worker.yaml",
    ];
    checked.sort();
    let mut found = files.clone();
    found.sort();
    assert_eq!(found, checked, "every example has its checks below");

    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "examples").await;
    helm_install_agent(
        &ns,
        "astro-agent",
        "resourceNamePrefix: astro-agent\nworkers:\n  - {name: default-worker}\n  - {name: gpu}\nloggingSidecar: {enabled: true}\n",
    );
    create_plain_deployment(&client, &ns, "plain-worker").await;

    let sm = secrets_manager().await;
    for (name, value) in [
        ("examples/warehouse", "postgres://u:old@warehouse/wh"),
        ("examples/warehouse", "postgres://u:new@warehouse/wh"),
        ("examples/environment", "prod"),
        ("examples/smtp-password", "smtp-pw"),
        (
            "airflow/connections/db_main",
            r#"{"conn_type": "postgres", "host": "db", "account": "acc"}"#,
        ),
        ("airflow/connections/aws_default", r#"{"conn_type": "aws"}"#),
        ("airflow/connections/other", "http://other"),
        ("airflow/variables/flag", "on"),
        ("airflow/gpu/connections/cuda_db", "postgres://gpu/db"),
    ] {
        put_secret(&sm, name, value).await;
    }
    let _op = Operator::start(&ns);
    for f in &files {
        apply_binding(&client, &ns, example(f)).await;
    }
    let bindings: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);
    let ready = |name: &'static str| {
        let bindings = bindings.clone();
        async move {
            let s = bindings.get(name).await.ok()?.status?;
            let ok = s
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ok.then_some(s)
        }
    };
    let envs = |status: &airflow_secrets_operator::api::AirflowSecretBindingStatus| -> BTreeMap<String, EntryState> {
        status.entries.iter().map(|e| (e.env_name.clone().unwrap_or_default(), e.state)).collect()
    };

    // explicit.yaml: both versions of the warehouse secret, a variable and a config option.
    let s = eventually("explicit Ready", T, || ready("explicit")).await;
    let secret = eventually("explicit Secret", T, || {
        secret_text(&client, &ns, "explicit-airflow")
    })
    .await;
    assert_eq!(
        secret["AIRFLOW_CONN_WAREHOUSE"],
        "postgres://u:new@warehouse/wh"
    );
    assert_eq!(
        secret["AIRFLOW_CONN_WAREHOUSE_PREVIOUS"],
        "postgres://u:old@warehouse/wh"
    );
    assert_eq!(secret["AIRFLOW__SMTP__SMTP_PASSWORD"], "smtp-pw");
    assert_eq!(s.synced_entries, Some(4));

    // discovery.yaml: only ids matching ^(db|aws)_, and the extra login alias applied.
    let s = eventually("discovery Ready", T, || ready("discovery")).await;
    let e = envs(&s);
    assert!(
        e.contains_key("AIRFLOW_CONN_DB_MAIN") && e.contains_key("AIRFLOW_CONN_AWS_DEFAULT"),
        "{e:?}"
    );
    assert!(
        !e.contains_key("AIRFLOW_CONN_OTHER"),
        "the lookup pattern excludes it: {e:?}"
    );
    assert!(e.contains_key("AIRFLOW_VAR_FLAG"));
    let secret = secret_text(&client, &ns, "discovery-airflow")
        .await
        .unwrap();
    let db: serde_json::Value = serde_json::from_str(&secret["AIRFLOW_CONN_DB_MAIN"]).unwrap();
    assert_eq!(db["login"], "acc", "extraConnWords login: [account]");

    // backend.yaml: Airflow's backend configured on plain-worker, no values copied.
    eventually("backend Ready", T, || ready("backend")).await;
    let secret = secret_text(&client, &ns, "backend-airflow").await.unwrap();
    assert_eq!(secret.len(), 4);
    let kwargs: serde_json::Value =
        serde_json::from_str(&secret["AIRFLOW__SECRETS__BACKEND_KWARGS"]).unwrap();
    assert_eq!(kwargs["connections_lookup_pattern"], "^db_");

    // multi-worker.yaml: only the gpu worker's main container.
    let s = eventually("gpu-worker Ready", T, || ready("gpu-worker")).await;
    assert_eq!(s.workloads.len(), 1);
    assert_eq!(s.workloads[0].name, "astro-agent-worker-gpu");
    assert_eq!(s.workloads[0].containers, ["worker"]);
    assert!(
        secret_text(&client, &ns, "gpu-worker-airflow")
            .await
            .unwrap()
            .contains_key("AIRFLOW_CONN_CUDA_DB")
    );
    delete_namespace(&client, &ns).await;
}
