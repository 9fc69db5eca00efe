//! The controller end to end, on the real control plane with the emulator and the agent stand-in
//! chart installed by helm. Each test runs its own operator process, scoped to its namespace.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use airflow_secrets_operator::api::AirflowSecretBinding;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use support::*;

const AGENT_VALUES: &str = r#"
resourceNamePrefix: astro-agent
commonEnv:
  - {name: ASTRO_DEPLOYMENT_ID, value: test}
workers:
  - {name: default-worker, replicas: 2}
  - {name: gpu}
loggingSidecar: {enabled: true}
"#;

const T: Duration = Duration::from_secs(60);

const AGENT_DEPLOYMENTS: [&str; 4] = [
    "astro-agent-worker-default-worker",
    "astro-agent-worker-gpu",
    "astro-agent-dag-processor",
    "astro-agent-triggerer",
];

#[tokio::test]
async fn binding_becomes_secret_env_and_one_rollout() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-apply").await;
    helm_install_agent(&ns, "astro-agent", AGENT_VALUES);
    let sm = secrets_manager().await;
    let p = format!("ctl-apply-{ns}");
    put_secret(
        &sm,
        &format!("{p}/connections/warehouse"),
        "postgresql://u:p%40ss@db:5432/wh",
    )
    .await;
    put_secret(
        &sm,
        &format!("{p}/connections/rds"),
        r#"{"username":"app","password":"pw","engine":"postgres","host":"h","dbname":"x"}"#,
    )
    .await;
    put_secret(&sm, &format!("{p}/variables/env"), "prod").await;
    put_secret(&sm, &format!("{p}/explicit"), "CANARY-value-7f3a").await;
    let rs_before: BTreeMap<&str, usize> = {
        let mut m = BTreeMap::new();
        for d in AGENT_DEPLOYMENTS {
            m.insert(d, replicasets(&client, &ns, d).await.len());
        }
        m
    };
    let op = Operator::start(&ns);

    let t0 = Instant::now();
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "variables": [{"key": "explicit_var", "secretId": format!("{p}/explicit")}],
                "discovery": {"connectionsPrefix": format!("{p}/connections"), "variablesPrefix": format!("{p}/variables")},
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "2s"
            }
        }),
    )
    .await;

    let data = eventually("the managed Secret", T, || {
        secret_text(&client, &ns, "agents-airflow")
    })
    .await;
    let secret_latency = t0.elapsed();
    assert_eq!(
        data["AIRFLOW_CONN_WAREHOUSE"],
        "postgresql://u:p%40ss@db:5432/wh"
    );
    assert_eq!(data["AIRFLOW_VAR_ENV"], "prod");
    assert_eq!(data["AIRFLOW_VAR_EXPLICIT_VAR"], "CANARY-value-7f3a");
    let rds: serde_json::Value = serde_json::from_str(&data["AIRFLOW_CONN_RDS"]).unwrap();
    assert_eq!(rds["login"], "app");
    assert_eq!(
        rds["schema"],
        serde_json::Value::Null,
        "dbname is dropped as Airflow drops it"
    );

    // Every agent Deployment but the sentinel gets the env, in its first container only, and
    // rolls out exactly once to pods that run with it.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in AGENT_DEPLOYMENTS {
        let dep = eventually(&format!("{d} injected"), T, || async {
            let dep = deployments.get(d).await.ok()?;
            (env_refs(
                &dep,
                dep.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                    .name
                    .as_str(),
            )
            .len()
                == 4)
                .then_some(dep)
        })
        .await;
        let main = dep
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .name
            .clone();
        for (env, (secret, key)) in env_refs(&dep, &main) {
            assert_eq!(secret, "agents-airflow");
            assert!(
                data.contains_key(&key),
                "{d}: {env} refers to missing key {key}"
            );
        }
        assert!(
            env_refs(&dep, "log-sidecar").is_empty(),
            "{d}: the sidecar gets nothing"
        );
        let rs = eventually(
            &format!("{d}: one new ReplicaSet with Running pods"),
            T,
            || async {
                let list = replicasets(&client, &ns, d).await;
                (list.len() == rs_before[d] + 1).then_some(list)
            },
        )
        .await;
        if d == AGENT_DEPLOYMENTS[0] {
            println!(
                "apply -> Secret {secret_latency:?}, apply -> new ReplicaSet of {d} {:?}",
                t0.elapsed()
            );
        }
        let newest = rs
            .iter()
            .max_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0))
            .unwrap()
            .name_any();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        eventually(
            &format!("{d}: pods of the new ReplicaSet Running"),
            T,
            || async {
                let list = pods.list(&ListParams::default()).await.ok()?;
                let running = list
                    .items
                    .iter()
                    .filter(|p| p.owner_references().iter().any(|o| o.name == newest))
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .count();
                (running > 0).then_some(())
            },
        )
        .await;
    }
    let sentinel = deployments.get("astro-agent-sentinel").await.unwrap();
    assert!(
        env_refs(&sentinel, "sentinel").is_empty(),
        "the sentinel is excluded by default"
    );

    // Status: Ready, every entry Synced, the workloads listed; no value anywhere in it.
    let status = eventually("Ready status", T, || async {
        let s = binding_status(&client, &ns, "agents").await?;
        (s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            && s.workloads.len() == 4)
            .then_some(s)
    })
    .await;
    assert_eq!(status.synced_entries, Some(4));
    for d in AGENT_DEPLOYMENTS {
        let dep = deployments.get(d).await.unwrap();
        let ann = dep
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap_or_default();
        assert_eq!(
            ann.get("content-hash.airflow-secrets.io/agents"),
            status.content_hash.as_ref(),
            "{d}"
        );
    }
    let text = serde_json::to_string(&status).unwrap();
    assert!(
        !text.contains("CANARY") && !text.contains("p%40ss"),
        "{text}"
    );

    // Health, readiness and metrics.
    assert_eq!(op.get("/healthz").0, 200);
    assert_eq!(op.get("/readyz").0, 200);
    let synced =
        format!(r#"airflow_secrets_entries{{namespace="{ns}",binding="agents",state="Synced"}}"#);
    assert_eq!(op.metric(&synced), 4.0);
    let rollouts =
        format!(r#"airflow_secrets_rollouts_total{{namespace="{ns}",binding="agents"}}"#);
    assert_eq!(
        op.metric(&rollouts),
        4.0,
        "one rollout per agent Deployment"
    );
    let batch = r#"airflow_secrets_secretsmanager_calls_total{operation="BatchGetSecretValue",outcome="success"}"#;
    let list =
        r#"airflow_secrets_secretsmanager_calls_total{operation="ListSecrets",outcome="success"}"#;
    let (batch0, list0) = (op.metric(batch), op.metric(list));
    assert!(batch0 >= 1.0 && list0 >= 2.0, "{batch0} {list0}");

    // Nothing changed: several refreshes later, still exactly one new ReplicaSet each, and each
    // idle refresh costs three ListSecrets calls (the two discovery prefixes, and the explicit
    // entry's version checked by name); no value is read again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lists = op.metric(list) - list0;
    let batches = op.metric(batch) - batch0;
    assert!(
        lists >= 6.0,
        "the 2 s refresh ran at least twice: {lists} ListSecrets"
    );
    assert_eq!(batches, 0.0, "an idle refresh reads no value");
    println!("idle refreshes over 5 s: {lists} ListSecrets, {batches} BatchGetSecretValue");
    for d in AGENT_DEPLOYMENTS {
        assert_eq!(
            replicasets(&client, &ns, d).await.len(),
            rs_before[d] + 1,
            "{d}: no rollout without a change"
        );
    }

    // Rotate one secret: exactly one more rollout per Deployment.
    put_secret(
        &sm,
        &format!("{p}/connections/warehouse"),
        "postgresql://u:rotated@db:5432/wh",
    )
    .await;
    eventually("rotated value in the Secret", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d["AIRFLOW_CONN_WAREHOUSE"].contains("rotated")).then_some(())
    })
    .await;
    for d in AGENT_DEPLOYMENTS {
        eventually(&format!("{d}: second rollout"), T, || async {
            (replicasets(&client, &ns, d).await.len() == rs_before[d] + 2).then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for d in AGENT_DEPLOYMENTS {
        assert_eq!(
            replicasets(&client, &ns, d).await.len(),
            rs_before[d] + 2,
            "{d}: one rollout per change"
        );
    }

    // Restarting the operator causes no rollout.
    let logs = op.stop();
    assert!(
        !logs.contains("CANARY") && !logs.contains("rotated@"),
        "a value reached the log:\n{logs}"
    );
    let op = Operator::start(&ns);
    tokio::time::sleep(Duration::from_secs(6)).await;
    for d in AGENT_DEPLOYMENTS {
        assert_eq!(
            replicasets(&client, &ns, d).await.len(),
            rs_before[d] + 2,
            "{d}: restart rolled it"
        );
    }
    assert!(op.logs().contains("starting controller"));

    // Events were recorded for the binding, without values.
    let events = run(
        &ground_var("ASO_KUBECTL"),
        &["-n", &ns, "get", "events", "-o", "json"],
    );
    assert!(
        events.contains("RolloutTriggered") && events.contains("Created"),
        "{events}"
    );
    assert!(!events.contains("CANARY"));
    drop(op);
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn repairs_follows_helm_and_cleans_up() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-repair").await;
    helm_install_agent(&ns, "astro-agent", AGENT_VALUES);
    let sm = secrets_manager().await;
    let p = format!("ctl-repair-{ns}");
    put_secret(&sm, &format!("{p}/db"), "postgres://h/db").await;
    let op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "connections": [{"connId": "db", "secretId": format!("{p}/db")}],
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "1h"
            }
        }),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    eventually("the managed Secret", T, || {
        secret_text(&client, &ns, "agents-airflow")
    })
    .await;
    let injected = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get_opt(name).await.ok()??;
            env_refs(&d, "worker")
                .contains_key("AIRFLOW_CONN_DB")
                .then_some(d)
        }
    };
    eventually("worker injected", T, || injected("astro-agent-worker-gpu")).await;

    // A hand edit and a delete of the managed Secret are repaired.
    secrets
        .patch(
            "agents-airflow",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"AIRFLOW_CONN_DB": "hand-edited"}})),
        )
        .await
        .unwrap();
    eventually("hand edit repaired", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d["AIRFLOW_CONN_DB"] == "postgres://h/db").then_some(())
    })
    .await;
    secrets
        .delete("agents-airflow", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted Secret recreated", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d.get("AIRFLOW_CONN_DB").map(String::as_str) == Some("postgres://h/db")).then_some(())
    })
    .await;

    // refreshInterval is 1h: a rotation shows up only when asked for with the force-sync
    // annotation.
    put_secret(&sm, &format!("{p}/db"), "postgres://h/db-rotated").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = secret_text(&client, &ns, "agents-airflow").await.unwrap();
    assert_eq!(
        d["AIRFLOW_CONN_DB"], "postgres://h/db",
        "not re-read before the interval"
    );
    Api::<AirflowSecretBinding>::namespaced(client.clone(), &ns)
        .patch(
            "agents",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"airflow-secrets.io/force-sync": "1"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("forced refresh", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d["AIRFLOW_CONN_DB"] == "postgres://h/db-rotated").then_some(())
    })
    .await;

    // helm upgrade keeps the injection and a new worker gets it; --force is re-injected.
    let more = format!("{AGENT_VALUES}\n")
        .replace("  - {name: gpu}", "  - {name: gpu}\n  - {name: extra}");
    helm_agent("upgrade", &ns, "astro-agent", &more, &[]);
    let gpu = deployments.get("astro-agent-worker-gpu").await.unwrap();
    assert!(
        env_refs(&gpu, "worker").contains_key("AIRFLOW_CONN_DB"),
        "helm upgrade kept our env"
    );
    eventually("new worker injected", T, || {
        injected("astro-agent-worker-extra")
    })
    .await;
    // `helm upgrade --force` replaces the Deployments and fails if one changes meanwhile: wait
    // until the operator has written what the previous upgrade asked for.
    op.quiet().await;
    helm_agent("upgrade", &ns, "astro-agent", &more, &["--force"]);
    eventually("re-injected after helm upgrade --force", T, || {
        injected("astro-agent-worker-gpu")
    })
    .await;

    // Delete with policy Delete: env and annotation leave the workloads, the Secret goes.
    let bindings: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);
    bindings
        .delete("agents", &DeleteParams::default())
        .await
        .unwrap();
    eventually("binding gone", T, || async {
        bindings
            .get_opt("agents")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    for d in AGENT_DEPLOYMENTS
        .iter()
        .chain(["astro-agent-worker-extra"].iter())
    {
        let dep = deployments.get(d).await.unwrap();
        let main = dep
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .clone();
        assert!(
            env_refs(&dep, &main.name).is_empty(),
            "{d} still has our env"
        );
        assert!(
            main.env
                .iter()
                .flatten()
                .any(|e| e.name == "ASTRO_DEPLOYMENT_ID"),
            "{d} lost the chart's env"
        );
        let ann = dep
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert!(
            !ann.keys()
                .any(|k| k.starts_with("content-hash.airflow-secrets.io/")),
            "{d} still has our annotation"
        );
    }
    assert!(
        secret_text(&client, &ns, "agents-airflow").await.is_none(),
        "deletionPolicy Delete removes the Secret"
    );

    // Retain keeps the Secret, without owner.
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "kept"},
            "spec": {
                "connections": [{"connId": "db", "secretId": format!("{p}/db")}],
                "target": {"injection": "SecretOnly"},
                "deletionPolicy": "Retain"
            }
        }),
    )
    .await;
    eventually("the kept Secret", T, || {
        secret_text(&client, &ns, "kept-airflow")
    })
    .await;
    bindings
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    eventually("binding gone", T, || async {
        bindings.get_opt("kept").await.ok()?.is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = secrets
        .get("kept-airflow")
        .await
        .expect("Retain keeps the Secret");
    assert!(kept.owner_references().is_empty());
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn refuses_a_secret_it_does_not_own_and_reports_bad_patterns() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-refuse").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let foreign: Secret = serde_json::from_value(
        json!({"metadata": {"name": "taken"}, "stringData": {"k": "user data"}}),
    )
    .unwrap();
    secrets.create(&Default::default(), &foreign).await.unwrap();
    let sm = secrets_manager().await;
    let p = format!("ctl-refuse-{ns}");
    put_secret(&sm, &format!("{p}/connections/a"), "postgres://a").await;
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "thief"},
            "spec": {
                "discovery": {"connectionsPrefix": format!("{p}/connections")},
                "target": {"secretName": "taken", "injection": "SecretOnly"}
            }
        }),
    )
    .await;
    eventually("SecretNotOwned", T, || async {
        let (s, r) = ready_reason(&client, &ns, "thief").await?;
        (s == "False" && r == "SecretNotOwned").then_some(())
    })
    .await;
    let data = secret_text(&client, &ns, "taken").await.unwrap();
    assert_eq!(
        data,
        BTreeMap::from([("k".to_string(), "user data".to_string())]),
        "the foreign Secret is untouched"
    );
    // Once the foreign Secret is gone, the binding writes its own (it keeps trying, with backoff).
    secrets
        .delete("taken", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the binding recovers", T, || async {
        let (s, _) = ready_reason(&client, &ns, "thief").await?;
        let data = secret_text(&client, &ns, "taken").await?;
        (s == "True" && data.contains_key("AIRFLOW_CONN_A")).then_some(())
    })
    .await;

    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "unbalanced"},
            "spec": {
                "discovery": {"connectionsPrefix": format!("{p}/connections"), "connectionsLookupPattern": "^(tmp"},
                "target": {"injection": "SecretOnly"}
            }
        }),
    )
    .await;
    let status = eventually("Invalid pattern in status", T, || async {
        let s = binding_status(&client, &ns, "unbalanced").await?;
        s.entries
            .iter()
            .any(|e| e.name == "spec.discovery.connectionsLookupPattern")
            .then_some(s)
    })
    .await;
    let e = status
        .entries
        .iter()
        .find(|e| e.name == "spec.discovery.connectionsLookupPattern")
        .unwrap();
    assert_eq!(e.state, airflow_secrets_operator::api::EntryState::Invalid);
    assert!(
        e.message
            .as_ref()
            .unwrap()
            .contains("missing ), unterminated subpattern at position 1"),
        "Python's own message: {e:?}"
    );
    delete_namespace(&client, &ns).await;
}

/// A second emulator on a port of its own, so that it can be stopped without disturbing the
/// other tests.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    async fn start(port: Option<u16>) -> Moto {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let child =
            std::process::Command::new(format!("{}/bin/moto_server", ground_var("ASO_MOTO_VENV")))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start moto");
        eventually("second emulator up", T, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Moto { child, port }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn client(&self) -> aws_sdk_secretsmanager::Client {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let conf = aws_sdk_secretsmanager::config::Builder::from(&config)
            .endpoint_url(self.endpoint())
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn secrets_manager_outage_keeps_the_secret_and_recovers() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-outage").await;
    let moto = Moto::start(None).await;
    put_secret(&moto.client().await, "outage/db", "postgres://h/db").await;
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "outage"},
            "spec": {
                "source": {"endpoint": moto.endpoint()},
                "connections": [{"connId": "db", "secretId": "outage/db"}],
                "target": {"injection": "SecretOnly"},
                "refreshInterval": "1s"
            }
        }),
    )
    .await;
    eventually("Ready", T, || async {
        let (s, _) = ready_reason(&client, &ns, "outage").await?;
        (s == "True").then_some(())
    })
    .await;
    let port = moto.port;
    drop(moto);
    eventually("degraded status", T, || async {
        let (s, r) = ready_reason(&client, &ns, "outage").await?;
        (s == "False" && r == "SecretsManagerUnavailable").then_some(())
    })
    .await;
    let kept = secret_text(&client, &ns, "outage-airflow")
        .await
        .expect("Secret kept");
    assert_eq!(
        kept["AIRFLOW_CONN_DB"], "postgres://h/db",
        "the last good value is kept"
    );

    // The emulator comes back (empty, as a restarted moto is): recovery needs no manual step.
    let moto = Moto::start(Some(port)).await;
    put_secret(&moto.client().await, "outage/db", "postgres://h/db2").await;
    eventually("recovered", T, || async {
        let (s, _) = ready_reason(&client, &ns, "outage").await?;
        let d = secret_text(&client, &ns, "outage-airflow").await?;
        // A refresh may find the restarted emulator still empty (the entry is then not found
        // for a moment): wait for the value itself.
        (s == "True" && d.get("AIRFLOW_CONN_DB").map(String::as_str) == Some("postgres://h/db2"))
            .then_some(())
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn two_bindings_claiming_one_env_name_conflict_without_flapping() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-conflict").await;
    helm_install_agent(&ns, "astro-agent", AGENT_VALUES);
    let sm = secrets_manager().await;
    let p = format!("ctl-conflict-{ns}");
    put_secret(&sm, &format!("{p}/a"), "postgres://a").await;
    put_secret(&sm, &format!("{p}/b"), "postgres://b").await;
    put_secret(&sm, &format!("{p}/other"), "v").await;
    let _op = Operator::start(&ns);
    let binding = |name: &str, secret: &str, extra: bool| {
        let mut vars = vec![];
        if extra {
            vars.push(json!({"key": "other", "secretId": format!("{p}/other")}));
        }
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name},
            "spec": {
                "connections": [{"connId": "db", "secretId": format!("{p}/{secret}")}],
                "variables": vars,
                "target": {"workloads": {"names": ["astro-agent-worker-gpu"]}},
                "refreshInterval": "1s"
            }
        })
    };
    apply_binding(&client, &ns, binding("first", "a", false)).await;
    eventually("first Ready", T, || async {
        let (s, _) = ready_reason(&client, &ns, "first").await?;
        (s == "True").then_some(())
    })
    .await;
    apply_binding(&client, &ns, binding("second", "b", true)).await;
    eventually("second in conflict", T, || async {
        let (s, r) = ready_reason(&client, &ns, "second").await?;
        (s == "False" && r == "WorkloadConflict").then_some(())
    })
    .await;
    let rs = replicasets(&client, &ns, "astro-agent-worker-gpu")
        .await
        .len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let dep = deployments.get("astro-agent-worker-gpu").await.unwrap();
    assert_eq!(
        env_refs(&dep, "worker")["AIRFLOW_CONN_DB"].0,
        "first-airflow",
        "the first binding keeps its entry"
    );
    assert_eq!(
        replicasets(&client, &ns, "astro-agent-worker-gpu")
            .await
            .len(),
        rs,
        "no flapping"
    );
    assert_eq!(ready_reason(&client, &ns, "first").await.unwrap().0, "True");
    let msg = binding_status(&client, &ns, "second")
        .await
        .unwrap()
        .conditions[0]
        .message
        .clone();
    assert!(msg.contains("astro-agent-worker-gpu"), "{msg}");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn backend_mode_and_shadowing_warning() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-backend").await;
    // The agents run Airflow's SecretsManagerBackend with default prefixes.
    helm_install_agent(
        &ns,
        "astro-agent",
        r#"
resourceNamePrefix: astro-agent
secretBackend: airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend
commonEnv:
  - {name: AIRFLOW__SECRETS__BACKEND_KWARGS, value: '{"connections_prefix": "airflow/connections", "variables_prefix": null}'}
workers:
  - {name: default-worker}
"#,
    );
    let sm = secrets_manager().await;
    let p = format!("ctl-backend-{ns}");
    put_secret(&sm, &format!("{p}/db"), "postgres://h").await;
    put_secret(&sm, &format!("{p}/var"), "v").await;
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "shadowed"},
            "spec": {
                "connections": [{"connId": "db", "secretId": format!("{p}/db")}],
                "variables": [{"key": "var", "secretId": format!("{p}/var")}],
                "target": {"workloads": {"helmRelease": "astro-agent"}}
            }
        }),
    )
    .await;
    let status = eventually("BackendShadowing condition", T, || async {
        let s = binding_status(&client, &ns, "shadowed").await?;
        s.conditions
            .iter()
            .find(|c| c.type_ == "BackendShadowing")
            .cloned()
    })
    .await;
    // Only the connection: the agents' backend does not look variables up (prefix null).
    assert!(status.message.contains("1 injected"), "{}", status.message);

    // Backend mode on the agents: the chart sets AIRFLOW__SECRETS__BACKEND as a plain value,
    // which an env entry from a Secret cannot replace: reported, not retried silently.
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "backend-on-agents"},
            "spec": {
                "mode": "Backend",
                "discovery": {"connectionsPrefix": "airflow/connections"},
                "target": {"workloads": {"helmRelease": "astro-agent"}}
            }
        }),
    )
    .await;
    eventually("WorkloadConflict for a chart-set variable", T, || async {
        let (s, r) = ready_reason(&client, &ns, "backend-on-agents").await?;
        (s == "False" && r == "WorkloadConflict").then_some(())
    })
    .await;

    // Backend mode on a Deployment of its own: the four config options land in the Secret.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    create_plain_deployment(&client, &ns, "plain-worker").await;
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "backend"},
            "spec": {
                "mode": "Backend",
                "source": {"region": "eu-west-1"},
                "discovery": {"connectionsPrefix": "airflow/connections", "connectionsLookupPattern": "^db_"},
                "target": {"workloads": {"names": ["plain-worker"]}}
            }
        }),
    )
    .await;
    let data = eventually("backend Secret", T, || {
        secret_text(&client, &ns, "backend-airflow")
    })
    .await;
    let class = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend";
    assert_eq!(data["AIRFLOW__SECRETS__BACKEND"], class);
    assert_eq!(data["AIRFLOW__WORKERS__SECRETS_BACKEND"], class);
    let kwargs: serde_json::Value =
        serde_json::from_str(&data["AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS"]).unwrap();
    assert_eq!(kwargs["connections_prefix"], "airflow/connections");
    assert_eq!(kwargs["variables_prefix"], serde_json::Value::Null);
    assert_eq!(kwargs["region_name"], "eu-west-1");
    eventually("backend env injected", T, || async {
        let d = deployments.get("plain-worker").await.ok()?;
        (env_refs(&d, "worker").len() == 4).then_some(())
    })
    .await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn with_leader_election_one_replica_reconciles_and_another_takes_over() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ctl-leader").await;
    let sm = secrets_manager().await;
    let p = format!("ctl-leader-{ns}");
    put_secret(&sm, &format!("{p}/v"), "x").await;
    // The Lease lives in the chart's release namespace, where its Role grants it.
    let lease = format!("leader-{ns}");
    let args = [
        "--leader-election",
        "--lease-namespace",
        "aso-system",
        "--lease-name",
        &lease,
        "--lease-duration-seconds",
        "4",
    ];
    let first = Operator::start_with(&ns, &args, &[("POD_NAME", "first")]);
    eventually("first leads", T, || async {
        first.logs().contains("became the leader").then_some(())
    })
    .await;
    let second = Operator::start_with(&ns, &args, &[("POD_NAME", "second")]);
    eventually("second waits and is ready", T, || async {
        (second.logs().contains("waiting to become the leader") && second.get("/readyz").0 == 200)
            .then_some(())
    })
    .await;
    let binding = |name: &str| {
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name},
            "spec": {"variables": [{"key": "v", "secretId": format!("{p}/v")}], "target": {"injection": "SecretOnly"}}
        })
    };
    apply_binding(&client, &ns, binding("one")).await;
    eventually("reconciled by the leader", T, || {
        secret_text(&client, &ns, "one-airflow")
    })
    .await;
    assert!(
        !second.logs().contains("became the leader"),
        "only one leader"
    );
    assert!(
        !second.logs().contains("Created managed Secret"),
        "the waiting replica reconciles nothing"
    );

    drop(first);
    eventually("second takes over", T, || async {
        second.logs().contains("became the leader").then_some(())
    })
    .await;
    apply_binding(&client, &ns, binding("two")).await;
    eventually("reconciled by the new leader", T, || {
        secret_text(&client, &ns, "two-airflow")
    })
    .await;
    let holder = run(
        &ground_var("ASO_KUBECTL"),
        &[
            "-n",
            "aso-system",
            "get",
            "lease",
            &lease,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
    );
    assert_eq!(holder, "second");
    delete_namespace(&client, &ns).await;
}

/// `--namespaces a,b` of three namespaces, with the chart's RBAC rendered for exactly those two
/// (a Role in each, nothing cluster-wide): the bindings, Deployments and Secrets of a and b are
/// reconciled, before and after the start, and c is never touched nor asked about.
#[tokio::test]
async fn a_list_of_namespaces_is_watched_with_roles_there_only() {
    let client = client().await;
    install_crds(&client).await;
    let ops = namespace(&client, "ctl-scope-ops").await;
    let (a, b, c) = (
        namespace(&client, "ctl-scope-a").await,
        namespace(&client, "ctl-scope-b").await,
        namespace(&client, "ctl-scope-c").await,
    );
    let release = format!("aso-{}", ops.rsplit('-').next().unwrap());
    let chart = repo_root().join("charts/airflow-secrets-operator");
    run(
        &ground_var("ASO_HELM"),
        &[
            "install",
            &release,
            chart.to_str().unwrap(),
            "--namespace",
            &ops,
            "--set",
            "image.repository=example.invalid/aso,userRoles.create=false,leaderElection.enabled=false,sources.allowInline=true",
            "--set",
            &format!("watchNamespaces={{{a},{b}}}"),
            "--timeout",
            "60s",
        ],
    );
    let kubeconfig = impersonating_kubeconfig(&ops, &format!("{release}-airflow-secrets-operator"));

    let sm = secrets_manager().await;
    let p = format!("ctl-scope-{ops}");
    put_secret(&sm, &format!("{p}/v"), "scoped-value").await;
    let binding = |name: &str| {
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name},
            "spec": {
                "variables": [{"key": "v", "secretId": format!("{p}/v")}],
                "target": {"workloads": {"names": ["worker"]}}
            }
        })
    };
    // c's binding first: were c watched, it would be listed together with the others.
    for ns in [&c, &a, &b] {
        create_plain_deployment(&client, ns, "worker").await;
        apply_binding(&client, ns, binding("agents")).await;
    }

    // A namespace outside the Roles is refused at start, naming it.
    let mut refused = Operator::start_in(&[&a, &c], &kubeconfig);
    let status = refused
        .exit_within(T)
        .await
        .expect("the operator exits when it may not list a watched namespace");
    assert!(!status.success());
    assert!(
        refused
            .logs()
            .contains(&format!("cannot list AirflowSecretBindings in {c}")),
        "{}",
        refused.logs()
    );

    let op = Operator::start_in(&[&b, &a], &kubeconfig);
    for ns in [&a, &b] {
        let data = eventually(&format!("the managed Secret in {ns}"), T, || {
            secret_text(&client, ns, "agents-airflow")
        })
        .await;
        assert_eq!(data["AIRFLOW_VAR_V"], "scoped-value");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        eventually(&format!("the worker in {ns} injected"), T, || async {
            let d = deployments.get("worker").await.ok()?;
            (env_refs(&d, "worker").len() == 1).then_some(())
        })
        .await;
        eventually(&format!("Ready in {ns}"), T, || async {
            let (s, _) = ready_reason(&client, ns, "agents").await?;
            (s == "True").then_some(())
        })
        .await;
    }
    // Both namespaces' watches deliver changes after the start.
    apply_binding(&client, &b, binding("late")).await;
    eventually("a binding created later in b", T, || {
        secret_text(&client, &b, "late-airflow")
    })
    .await;
    Api::<AirflowSecretBinding>::namespaced(client.clone(), &a)
        .delete("agents", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the binding in a released", T, || async {
        let d = Api::<Deployment>::namespaced(client.clone(), &a)
            .get("worker")
            .await
            .ok()?;
        let gone = secret_text(&client, &a, "agents-airflow").await.is_none();
        (gone && env_refs(&d, "worker").is_empty()).then_some(())
    })
    .await;
    op.quiet().await;

    // c: no finalizer, no status, no Secret, no env.
    let untouched = Api::<AirflowSecretBinding>::namespaced(client.clone(), &c)
        .get("agents")
        .await
        .unwrap();
    assert!(untouched.finalizers().is_empty(), "{untouched:?}");
    assert!(untouched.status.is_none(), "{untouched:?}");
    assert!(secret_text(&client, &c, "agents-airflow").await.is_none());
    let d = Api::<Deployment>::namespaced(client.clone(), &c)
        .get("worker")
        .await
        .unwrap();
    assert!(env_refs(&d, "worker").is_empty());
    let logs = op.stop();
    assert!(
        logs.contains(&format!("{a},{b}")),
        "the scope is logged, sorted"
    );
    assert!(
        !logs.to_lowercase().contains("forbidden"),
        "asked for something outside its Roles:\n{logs}"
    );

    run(
        &ground_var("ASO_HELM"),
        &["uninstall", &release, "--namespace", &ops, "--wait"],
    );
    let _ = std::fs::remove_file(&kubeconfig);
    for ns in [&ops, &a, &b, &c] {
        delete_namespace(&client, ns).await;
    }
}
