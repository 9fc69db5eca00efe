//! The deliveries that configure Airflow's secrets backend, on the real control plane and the
//! agent stand-in chart installed the way the agent chart requires (`secretBackend` set):
//! - `KubernetesBackend`: one Secret per connection and variable, labelled for Airflow's
//!   `KubernetesSecretsBackend`, which (real, Airflow 3.3.2) reads them; the chart's own backend
//!   entry is kept; the agents' ServiceAccounts may list Secrets; a rotation updates one Secret
//!   and rolls nothing;
//! - `mode: Backend`: the chart's SecretsManagerBackend class is kept, its kwargs come from the
//!   binding.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(60);
const CLASS: &str =
    "airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend";
const TARGETED: [&str; 3] = [
    "astro-agent-worker-default-worker",
    "astro-agent-dag-processor",
    "astro-agent-triggerer",
];

fn agents() -> String {
    format!(
        "resourceNamePrefix: astro-agent\nsecretBackend: {CLASS}\nworkers:\n  - {{name: default-worker}}\n"
    )
}

/// The labelled Secrets in the namespace: (label, id) → (Secret name, value).
async fn labelled(client: &Client, ns: &str) -> BTreeMap<(String, String), (String, String)> {
    let mut out = BTreeMap::new();
    for s in Api::<Secret>::namespaced(client.clone(), ns)
        .list(
            &ListParams::default().labels("app.kubernetes.io/managed-by=airflow-secrets-operator"),
        )
        .await
        .unwrap()
    {
        for label in [
            "airflow.apache.org/connection-id",
            "airflow.apache.org/variable-key",
        ] {
            if let Some(id) = s.labels().get(label) {
                let value = s.data.as_ref().unwrap()["value"].0.clone();
                out.insert(
                    (label.to_string(), id.clone()),
                    (s.name_any(), String::from_utf8(value).unwrap()),
                );
            }
        }
    }
    out
}

/// Lookups through Airflow 3.3.2's real KubernetesSecretsBackend in `ns` (its client built from
/// the test ground's kubeconfig): one result per lookup.
fn airflow_lookups(ns: &str, lookups: serde_json::Value) -> Vec<serde_json::Value> {
    let python = format!("{}/bin/python", ground_var("ASO_AIRFLOW33_VENV"));
    let script = repo_root().join("tests/golden/k8s_backend_oracle.py");
    let out = pipe(
        &python,
        &[script.to_str().unwrap(), &ground_var("KUBECONFIG"), ns],
        lookups.to_string().as_bytes(),
        "KubernetesSecretsBackend oracle",
    );
    let v: serde_json::Value = serde_json::from_slice(&out).expect("oracle JSON");
    v["results"].as_array().unwrap().clone()
}

/// Airflow's own config, loaded from the env of a Deployment's pod template (secretKeyRefs
/// resolved from the Secrets): ([secrets] backend, its kwargs, [workers] secrets_backend).
async fn airflow_config_of(client: &Client, ns: &str, dep: &Deployment) -> serde_json::Value {
    let c = &pod(dep).containers[0];
    let mut env = BTreeMap::new();
    for e in c.env.iter().flatten() {
        if let Some(v) = &e.value {
            env.insert(e.name.clone(), v.clone());
        } else if let Some(r) = e
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
        {
            let data = secret_text(client, ns, &r.name).await.unwrap();
            env.insert(e.name.clone(), data[&r.key].clone());
        }
    }
    let python = format!("{}/bin/python", ground_var("ASO_AIRFLOW33_VENV"));
    let code = "import json; from airflow.configuration import conf; print(json.dumps([conf.get('secrets', 'backend'), json.loads(conf.get('secrets', 'backend_kwargs')), conf.get('workers', 'secrets_backend'), json.loads(conf.get('workers', 'secrets_backend_kwargs'))]))";
    let home = std::env::temp_dir().join(format!("aso-airflow-home-{ns}"));
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .env_clear()
        .env("AIRFLOW_HOME", &home)
        .envs(&env)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

async fn rs_counts(client: &Client, ns: &str) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for d in TARGETED {
        m.insert(d, replicasets(client, ns, d).await.len());
    }
    m
}

#[tokio::test]
async fn labelled_secrets_backend_options_access_and_no_rollout_on_rotation() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "k8s-backend").await;
    helm_install_agent(&ns, "astro-agent", &agents());
    let sm = secrets_manager().await;
    let p = format!("k8s-backend-{ns}");
    put_secret(
        &sm,
        &format!("{p}/connections/my_db"),
        "postgresql://u:CANARY@db:5432/app",
    )
    .await;
    put_secret(&sm, &format!("{p}/connections/team/db"), "postgresql://h/x").await;
    put_secret(&sm, &format!("{p}/variables/Flag.1"), "on").await;
    let op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "discovery": {
                    "connectionsPrefix": format!("{p}/connections"),
                    "variablesPrefix": format!("{p}/variables")
                },
                "config": [{"section": "core", "key": "parallelism", "secretId": format!("{p}/variables/Flag.1")}],
                "target": {"workloads": {"helmRelease": "astro-agent"}, "injection": "KubernetesBackend"},
                "refreshInterval": "2s"
            }
        }),
    )
    .await;
    let (state, reason) = eventually("agents Ready", T, || async {
        let r = ready_reason(&client, &ns, "agents").await?;
        (r.0 == "True").then_some(r)
    })
    .await;
    assert_eq!(state, "True");
    assert_eq!(
        reason, "SyncedWithEntryErrors",
        "team/db cannot be a label value"
    );

    // One Secret per connection and variable, labelled and keyed as the backend reads them.
    let found = labelled(&client, &ns).await;
    let conn = (
        "airflow.apache.org/connection-id".to_string(),
        "my_db".to_string(),
    );
    let var = (
        "airflow.apache.org/variable-key".to_string(),
        "Flag.1".to_string(),
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[&conn].1, "postgresql://u:CANARY@db:5432/app");
    assert_eq!(found[&var].1, "on");
    let status = binding_status(&client, &ns, "agents").await.unwrap();
    let team = status.entries.iter().find(|e| e.name == "team/db").unwrap();
    assert!(
        team.message.as_ref().unwrap().contains("label value"),
        "{team:?}"
    );

    // The agents: the chart's own AIRFLOW__SECRETS__BACKEND (same class) is left as it is; the
    // kwargs, the [workers] options and the config entry come from the binding's Secret.
    for d in TARGETED {
        let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get(d)
            .await
            .unwrap();
        let c = pod(&dep).containers[0].clone();
        let plain: BTreeMap<String, Option<String>> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            plain["AIRFLOW__SECRETS__BACKEND"].as_deref(),
            Some(CLASS),
            "{d}: the chart's entry is kept"
        );
        let refs = env_refs(&dep, &c.name);
        for name in [
            "AIRFLOW__SECRETS__BACKEND_KWARGS",
            "AIRFLOW__WORKERS__SECRETS_BACKEND",
            "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
            "AIRFLOW__CORE__PARALLELISM",
        ] {
            assert!(refs.contains_key(name), "{d}: {name} in {refs:?}");
        }
        assert!(
            !refs.contains_key("AIRFLOW_CONN_MY_DB"),
            "values are not injected as env"
        );
        let data = secret_text(&client, &ns, "agents-airflow").await.unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&data["AIRFLOW__SECRETS__BACKEND_KWARGS"])
                .unwrap(),
            json!({"namespace": ns})
        );
        // The agent's ServiceAccount may list Secrets here, as the backend does.
        let sa = pod(&dep)
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let can = run(
            &ground_var("ASO_KUBECTL"),
            &[
                "auth",
                "can-i",
                "list",
                "secrets",
                "-n",
                &ns,
                "--as",
                &format!("system:serviceaccount:{ns}:{sa}"),
            ],
        );
        assert_eq!(can.trim(), "yes", "{d}: {sa} may list Secrets");
    }

    // Airflow's own config, from the agents' env, names the backend and this namespace.
    let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(TARGETED[0])
        .await
        .unwrap();
    assert_eq!(
        airflow_config_of(&client, &ns, &dep).await,
        json!([CLASS, {"namespace": ns}, CLASS, {"namespace": ns}])
    );
    // Airflow's real KubernetesSecretsBackend reads what the binding wrote.
    let lookups = json!([
        {"kind": "connection", "id": "my_db"},
        {"kind": "variable", "id": "Flag.1"},
        {"kind": "connection", "id": "team/db"}
    ]);
    let got = airflow_lookups(&ns, lookups.clone());
    for class in ["core", "sdk"] {
        let c = &got[0][class];
        assert_eq!(c["found"], true, "{got:?}");
        assert_eq!(
            (
                &c["conn_type"],
                &c["login"],
                &c["password"],
                &c["host"],
                &c["port"],
                &c["schema"]
            ),
            (
                &json!("postgres"),
                &json!("u"),
                &json!("CANARY"),
                &json!("db"),
                &json!(5432),
                &json!("app")
            ),
            "{class}"
        );
    }
    assert_eq!(got[1]["value"], "on");
    assert_eq!(
        got[2]["core"]["found"], false,
        "team/db is reported, not labelled"
    );

    // A rotation updates one Secret and rolls nothing.
    op.quiet().await;
    let before = rs_counts(&client, &ns).await;
    let name_before = found[&conn].0.clone();
    put_secret(
        &sm,
        &format!("{p}/connections/my_db"),
        "postgresql://u:ROTATED@db:5432/app",
    )
    .await;
    eventually("the rotated value in the labelled Secret", T, || async {
        let f = labelled(&client, &ns).await;
        (f.get(&conn)?.1.contains("ROTATED")).then_some(())
    })
    .await;
    assert_eq!(labelled(&client, &ns).await[&conn].0, name_before);
    // The backend reads from the API server's watch cache: the new value shows shortly.
    eventually("Airflow reads the rotated value", T, || async {
        let got = airflow_lookups(&ns, json!([{"kind": "connection", "id": "my_db"}]));
        (got[0]["sdk"]["password"] == "ROTATED").then_some(())
    })
    .await;
    assert_eq!(rs_counts(&client, &ns).await, before, "no rollout");

    // Switching to env delivery: the values move into env, the labelled Secrets and the
    // agents' Role + RoleBinding go.
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "discovery": {
                    "connectionsPrefix": format!("{p}/connections"),
                    "variablesPrefix": format!("{p}/variables")
                },
                "target": {"workloads": {"helmRelease": "astro-agent"}, "injection": "Env"},
                "refreshInterval": "2s"
            }
        }),
    )
    .await;
    let access = "agents-kubernetes-backend";
    eventually("the grant and the labelled Secrets removed", T, || async {
        let role = Api::<Role>::namespaced(client.clone(), &ns)
            .get_opt(access)
            .await
            .ok()?;
        let rb = Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .get_opt(access)
            .await
            .ok()?;
        (role.is_none() && rb.is_none() && labelled(&client, &ns).await.is_empty()).then_some(())
    })
    .await;
    eventually("the connection injected as env", T, || async {
        let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get(TARGETED[0])
            .await
            .ok()?;
        let c = pod(&dep).containers[0].clone();
        env_refs(&dep, &c.name)
            .contains_key("AIRFLOW_CONN_MY_DB")
            .then_some(())
    })
    .await;

    let logs = op.stop();
    assert!(!logs.contains("CANARY") && !logs.contains("ROTATED"));
    delete_namespace(&client, &ns).await;
}

/// Backend mode on the agent chart installed the way Astronomer's docs say (`secretBackend` set
/// to SecretsManagerBackend, its kwargs in `commonEnv`): the chart's class is left as it is; its
/// different kwargs are a conflict that says what to remove from the values; once removed, the
/// binding is Ready and Airflow's config from the agents' env is the binding's backend.
#[tokio::test]
async fn backend_mode_keeps_the_agent_charts_backend_class() {
    const SM: &str = "airflow.providers.amazon.aws.secrets.secrets_manager.SecretsManagerBackend";
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "backend-chart").await;
    let with_kwargs = format!(
        "resourceNamePrefix: astro-agent\nsecretBackend: {SM}\ncommonEnv:\n  - {{name: AIRFLOW__SECRETS__BACKEND_KWARGS, value: '{{\"connections_prefix\": \"old/connections\"}}'}}\nworkers:\n  - {{name: default-worker}}\n"
    );
    helm_install_agent(&ns, "astro-agent", &with_kwargs);
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "backend"},
            "spec": {
                "mode": "Backend",
                "source": {"region": "eu-west-1"},
                "discovery": {"connectionsPrefix": "airflow/connections", "variablesPrefix": "airflow/variables"},
                "target": {"workloads": {"helmRelease": "astro-agent"}}
            }
        }),
    )
    .await;
    let message = eventually("a conflict over the chart's kwargs", T, || async {
        let s = binding_status(&client, &ns, "backend").await?;
        let w = s.workloads.iter().find(|w| w.message.is_some())?;
        w.message.clone()
    })
    .await;
    assert!(
        message.contains("AIRFLOW__SECRETS__BACKEND_KWARGS") && message.contains("remove it"),
        "{message}"
    );
    assert!(
        !message.contains("AIRFLOW__SECRETS__BACKEND is set"),
        "the chart's class is the one needed: {message}"
    );

    let without_kwargs = format!(
        "resourceNamePrefix: astro-agent\nsecretBackend: {SM}\nworkers:\n  - {{name: default-worker}}\n"
    );
    helm_agent("upgrade", &ns, "astro-agent", &without_kwargs, &[]);
    eventually("Ready once the kwargs are the binding's", T, || async {
        let (s, _) = ready_reason(&client, &ns, "backend").await?;
        (s == "True").then_some(())
    })
    .await;
    let kwargs = json!({
        "connections_prefix": "airflow/connections", "variables_prefix": "airflow/variables",
        "config_prefix": null, "sep": "/", "region_name": "eu-west-1"
    });
    for d in TARGETED {
        let dep = eventually(&format!("{d} carries the kwargs"), T, || async {
            let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get(d)
                .await
                .ok()?;
            env_refs(&dep, &pod(&dep).containers[0].name)
                .contains_key("AIRFLOW__SECRETS__BACKEND_KWARGS")
                .then_some(dep)
        })
        .await;
        assert_eq!(
            airflow_config_of(&client, &ns, &dep).await,
            json!([SM, kwargs, SM, kwargs]),
            "{d}"
        );
    }
    delete_namespace(&client, &ns).await;
}

/// Multi-team (Airflow ≥ 3.3): a binding with `team: mlops` discovers `<prefix>/mlops--<id>`
/// (not another team's, not the global names) and labels its Secrets
/// `airflow.apache.org/team=mlops`; a global binding next to it labels without a team.
/// Airflow's real KubernetesSecretsBackend then gives team mlops its own value, falls back to the global one for other teams, and gives
/// global lookups the global one; the id Airflow refuses in multi-team mode (`a--b`) is
/// reported Invalid and labelled nowhere.
#[tokio::test]
async fn a_team_binding_delivers_what_airflow_looks_up_for_that_team() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "k8s-team").await;
    helm_install_agent(&ns, "astro-agent", &agents());
    let sm = secrets_manager().await;
    let p = format!("k8s-team-{ns}");
    for (name, value) in [
        ("connections/mlops--my_db", "postgresql://team-ml/db"),
        ("connections/mlops--a--b", "postgresql://refused/db"),
        ("connections/other--my_db", "postgresql://team-other/db"),
        ("connections/my_db", "postgresql://global/db"),
        ("variables/mlops--flag", "ml-on"),
    ] {
        put_secret(&sm, &format!("{p}/{name}"), value).await;
    }
    let op = Operator::start(&ns);
    let binding = |name: &str, spec: serde_json::Value| {
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name}, "spec": spec
        })
    };
    let target =
        json!({"injection": "KubernetesBackend", "workloads": {"helmRelease": "astro-agent"}});
    apply_binding(
        &client,
        &ns,
        binding(
            "team-mlops",
            json!({
                "team": "mlops",
                "discovery": {
                    "connectionsPrefix": format!("{p}/connections"),
                    "variablesPrefix": format!("{p}/variables")
                },
                "target": target, "refreshInterval": "2s"
            }),
        ),
    )
    .await;
    apply_binding(
        &client,
        &ns,
        binding(
            "global",
            json!({
                "connections": [{"connId": "my_db", "secretId": format!("{p}/connections/my_db")}],
                "target": target, "refreshInterval": "2s"
            }),
        ),
    )
    .await;
    for b in ["team-mlops", "global"] {
        eventually(&format!("{b} synced"), T, || async {
            let s = binding_status(&client, &ns, b).await?;
            (s.total_entries.is_some() && s.observed_generation.is_some()).then_some(())
        })
        .await;
    }
    let status = binding_status(&client, &ns, "team-mlops").await.unwrap();
    let names: BTreeMap<String, (String, Option<String>)> = status
        .entries
        .iter()
        .filter(|e| !e.name.contains('.'))
        .map(|e| {
            (
                e.name.clone(),
                (format!("{:?}", e.state), e.env_name.clone()),
            )
        })
        .collect();
    assert_eq!(
        names.keys().collect::<Vec<_>>(),
        ["a--b", "flag", "my_db"],
        "team mlops names only (and the backend options): {names:?}"
    );
    assert_eq!(names["a--b"].0, "Invalid");
    assert_eq!(names["my_db"].0, "Synced");
    assert_eq!(
        names["my_db"].1.as_deref(),
        Some("AIRFLOW_CONN__MLOPS___MY_DB")
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    for (id, n) in [("my_db", 1), ("a--b", 0)] {
        let selector =
            format!("airflow.apache.org/connection-id={id},airflow.apache.org/team=mlops");
        let found = secrets
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0);
        assert_eq!(found, n, "{selector}");
    }

    let got = airflow_lookups(
        &ns,
        json!([
            {"kind": "connection", "id": "my_db", "team": "mlops"},
            {"kind": "connection", "id": "my_db", "team": "other"},
            {"kind": "connection", "id": "my_db"},
            {"kind": "variable", "id": "flag", "team": "mlops"},
            {"kind": "variable", "id": "flag"},
        ]),
    );
    let host = |i: usize| got[i]["sdk"]["host"].clone();
    assert_eq!(host(0), "team-ml", "{got:?}");
    assert_eq!(
        host(1),
        "global",
        "another team falls back to the global name"
    );
    assert_eq!(host(2), "global");
    assert_eq!(got[3]["value"], "ml-on");
    assert_eq!(
        got[4]["value"],
        serde_json::Value::Null,
        "team-scoped: no global lookup sees it"
    );
    drop(op);
    delete_namespace(&client, &ns).await;
}

/// Whether `system:serviceaccount:<ns>:<sa>` may list Secrets in `at` (the API server's own
/// authorizer, through `kubectl auth can-i`).
fn sa_can_list_secrets(ns: &str, sa: &str, at: &str) -> bool {
    let out = std::process::Command::new(ground_var("ASO_KUBECTL"))
        .args([
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            at,
            "--as",
            &format!("system:serviceaccount:{ns}:{sa}"),
        ])
        .output()
        .expect("kubectl auth can-i");
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// The operator's Roles and RoleBindings in `ns`, by name.
async fn grants(client: &Client, ns: &str) -> (Vec<String>, Vec<String>) {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=airflow-secrets-operator");
    let roles = Api::<Role>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    (roles, bindings)
}

/// `spec.target.backendNamespace`: the labelled Secrets, and the agents' grant to list Secrets,
/// live in a namespace of their own, so that the agents cannot list the Secrets of theirs.
/// Refused until that namespace's annotation names the binding's namespace; then Airflow's real
/// KubernetesSecretsBackend, run as the agents' ServiceAccount, reads there; a rotation updates
/// one Secret and rolls nothing; a second binding from another namespace cannot label the same
/// id there; moving back to the binding's namespace and deleting the binding leave nothing
/// behind in either namespace.
#[tokio::test]
async fn a_dedicated_backend_namespace_holds_the_secrets_and_only_it_may_be_listed() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "k8s-bns").await;
    let store = namespace(&client, "k8s-bns-store").await;
    let other = namespace(&client, "k8s-bns-other").await;
    helm_install_agent(&ns, "astro-agent", &agents());
    let sm = secrets_manager().await;
    let p = format!("k8s-bns-{ns}");
    put_secret(
        &sm,
        &format!("{p}/connections/my_db"),
        "postgresql://u:CANARY@db:5432/app",
    )
    .await;
    put_secret(&sm, &format!("{p}/variables/Flag.1"), "on").await;
    let kubeconfig = ground_var("ASO_OPERATOR_KUBECONFIG");
    let op = Operator::start_in(&[&ns, &store, &other], std::path::Path::new(&kubeconfig));
    let spec_every = |backend: Option<&str>, interval: &str| {
        let mut target =
            json!({"workloads": {"helmRelease": "astro-agent"}, "injection": "KubernetesBackend"});
        if let Some(b) = backend {
            target["backendNamespace"] = json!(b);
        }
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "discovery": {
                    "connectionsPrefix": format!("{p}/connections"),
                    "variablesPrefix": format!("{p}/variables")
                },
                "target": target,
                "refreshInterval": interval
            }
        })
    };
    let spec = |backend: Option<&str>| spec_every(backend, "2s");
    // An interval of an hour: what wakes the binding below is the namespace's change.
    apply_binding(&client, &ns, spec_every(Some(&store), "1h")).await;

    // Refused while the namespace does not name the binding's: nothing is written there.
    let message = eventually("BackendNamespaceRefused", T, || async {
        let s = binding_status(&client, &ns, "agents").await?;
        let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
        (c.reason == "BackendNamespaceRefused").then(|| (c.status.clone(), c.message.clone()))
    })
    .await;
    assert_eq!(message.0, "False");
    for part in [
        store.as_str(),
        "airflow-secrets.io/backend-for",
        "spec.target.backendNamespace",
        ns.as_str(),
    ] {
        assert!(message.1.contains(part), "{part} in {}", message.1);
    }
    assert!(labelled(&client, &store).await.is_empty());
    assert!(labelled(&client, &ns).await.is_empty());
    assert_eq!(grants(&client, &store).await, (vec![], vec![]));

    // The namespace's administrator admits the binding's namespace: the binding is woken by
    // the annotation's change.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    let admit = |names: String| {
        let namespaces = namespaces.clone();
        let store = store.clone();
        async move {
            namespaces
                .patch(
                    &store,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"airflow-secrets.io/backend-for": names}}})),
                )
                .await
                .unwrap();
        }
    };
    // Past the wake-ups of the refusal itself (its Deployments report back 1.5 s later).
    tokio::time::sleep(Duration::from_secs(4)).await;
    admit(format!("unrelated, {ns},{other}")).await;
    eventually("agents Ready", T, || async {
        let r = ready_reason(&client, &ns, "agents").await?;
        (r.0 == "True").then_some(r)
    })
    .await;
    apply_binding(&client, &ns, spec(Some(&store))).await;
    let conn = (
        "airflow.apache.org/connection-id".to_string(),
        "my_db".to_string(),
    );
    let found = eventually("the labelled Secrets in the store namespace", T, || async {
        let f = labelled(&client, &store).await;
        (f.len() == 2).then_some(f)
    })
    .await;
    assert_eq!(found[&conn].1, "postgresql://u:CANARY@db:5432/app");
    assert!(
        labelled(&client, &ns).await.is_empty(),
        "none in the agents' namespace"
    );
    let s = Api::<Secret>::namespaced(client.clone(), &store)
        .get(&found[&conn].0)
        .await
        .unwrap();
    assert_eq!(s.labels()["airflow-secrets.io/binding"], "agents");
    assert_eq!(s.labels()["airflow-secrets.io/binding-namespace"], ns);
    assert!(
        s.owner_references().is_empty(),
        "no owner across namespaces"
    );

    // The agents' config names the store namespace; their ServiceAccount may list Secrets
    // there, and not in its own namespace.
    let dep = eventually("the kwargs on the worker", T, || async {
        let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get(TARGETED[0])
            .await
            .ok()?;
        let refs = env_refs(&dep, &pod(&dep).containers[0].name);
        let data = secret_text(&client, &ns, "agents-airflow").await?;
        let kwargs: serde_json::Value =
            serde_json::from_str(data.get("AIRFLOW__SECRETS__BACKEND_KWARGS")?).ok()?;
        let wired = [
            "AIRFLOW__SECRETS__BACKEND_KWARGS",
            "AIRFLOW__WORKERS__SECRETS_BACKEND",
            "AIRFLOW__WORKERS__SECRETS_BACKEND_KWARGS",
        ]
        .iter()
        .all(|n| refs.contains_key(*n));
        (wired && kwargs == json!({"namespace": store})).then_some(dep)
    })
    .await;
    assert_eq!(
        airflow_config_of(&client, &ns, &dep).await,
        json!([CLASS, {"namespace": store}, CLASS, {"namespace": store}])
    );
    let sa = pod(&dep)
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".into());
    let access = format!("{ns}.agents-backend-access");
    eventually("the agents may list Secrets in the store", T, || async {
        sa_can_list_secrets(&ns, &sa, &store).then_some(())
    })
    .await;
    assert!(
        !sa_can_list_secrets(&ns, &sa, &ns),
        "{sa} may not list the Secrets of its own namespace"
    );
    assert_eq!(
        grants(&client, &store).await,
        (vec![access.clone()], vec![access.clone()])
    );
    assert_eq!(grants(&client, &ns).await, (vec![], vec![]));

    // Airflow's real KubernetesSecretsBackend, as the agents' ServiceAccount, reads the store.
    let as_agent = impersonating_kubeconfig(&ns, &sa);
    let lookups_as_agent = |lookups: serde_json::Value| {
        let python = format!("{}/bin/python", ground_var("ASO_AIRFLOW33_VENV"));
        let script = repo_root().join("tests/golden/k8s_backend_oracle.py");
        let out = pipe(
            &python,
            &[script.to_str().unwrap(), as_agent.to_str().unwrap(), &store],
            lookups.to_string().as_bytes(),
            "KubernetesSecretsBackend oracle as the agent",
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("oracle JSON");
        v["results"].as_array().unwrap().clone()
    };
    let got = lookups_as_agent(json!([
        {"kind": "connection", "id": "my_db"},
        {"kind": "variable", "id": "Flag.1"}
    ]));
    for class in ["core", "sdk"] {
        assert_eq!(got[0][class]["password"], "CANARY", "{got:?}");
    }
    assert_eq!(got[1]["value"], "on", "{got:?}");

    // A rotation updates one Secret in the store and rolls nothing.
    op.quiet().await;
    let before = rs_counts(&client, &ns).await;
    put_secret(
        &sm,
        &format!("{p}/connections/my_db"),
        "postgresql://u:ROTATED@db:5432/app",
    )
    .await;
    eventually("the rotated value in the store", T, || async {
        let f = labelled(&client, &store).await;
        (f.get(&conn)?.1.contains("ROTATED")).then_some(())
    })
    .await;
    assert_eq!(labelled(&client, &store).await[&conn].0, found[&conn].0);
    eventually("Airflow reads the rotated value", T, || async {
        let got = lookups_as_agent(json!([{"kind": "connection", "id": "my_db"}]));
        (got[0]["sdk"]["password"] == "ROTATED").then_some(())
    })
    .await;
    assert_eq!(rs_counts(&client, &ns).await, before, "no rollout");

    // A binding of another admitted namespace cannot label the same id in the store.
    apply_binding(
        &client,
        &other,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "connections": [{"connId": "my_db", "secretId": format!("{p}/connections/my_db")}],
                "target": {"workloads": {"names": ["absent"]}, "injection": "KubernetesBackend", "backendNamespace": store},
                "refreshInterval": "2s"
            }
        }),
    )
    .await;
    let line = eventually("the other binding's conflict", T, || async {
        let s = binding_status(&client, &other, "agents").await?;
        let e = s.entries.iter().find(|e| e.name == "my_db")?;
        (format!("{:?}", e.state) == "Conflict").then(|| e.message.clone().unwrap_or_default())
    })
    .await;
    assert!(
        line.contains(&format!("binding {ns}/agents (created first)")),
        "{line}"
    );
    assert_eq!(labelled(&client, &store).await.len(), 2, "nothing added");
    Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(client.clone(), &other)
        .delete("agents", &Default::default())
        .await
        .unwrap();

    // Back to the agents' namespace: the Secrets and the grant move, none is left in the store.
    apply_binding(&client, &ns, spec(None)).await;
    eventually(
        "the Secrets and the grant back in the agents' namespace",
        T,
        || async {
            let here = labelled(&client, &ns).await;
            let there = labelled(&client, &store).await;
            let moved = here.len() == 2
                && there.is_empty()
                && grants(&client, &store).await == (vec![], vec![])
                && grants(&client, &ns).await.0 == ["agents-kubernetes-backend"];
            moved.then_some(())
        },
    )
    .await;
    assert!(sa_can_list_secrets(&ns, &sa, &ns));
    assert!(!sa_can_list_secrets(&ns, &sa, &store));
    eventually("the kwargs name the agents' namespace", T, || async {
        let data = secret_text(&client, &ns, "agents-airflow").await?;
        let kwargs: serde_json::Value =
            serde_json::from_str(data.get("AIRFLOW__SECRETS__BACKEND_KWARGS")?).ok()?;
        (kwargs == json!({"namespace": ns})).then_some(())
    })
    .await;

    // And to the store again; then the binding is deleted: nothing is left in either namespace.
    apply_binding(&client, &ns, spec(Some(&store))).await;
    eventually("in the store again", T, || async {
        let moved = labelled(&client, &store).await.len() == 2
            && labelled(&client, &ns).await.is_empty()
            && grants(&client, &ns).await == (vec![], vec![])
            && grants(&client, &store).await.0 == [access.clone()];
        moved.then_some(())
    })
    .await;
    Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(client.clone(), &ns)
        .delete("agents", &Default::default())
        .await
        .unwrap();
    eventually("the binding gone", T, || async {
        Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(client.clone(), &ns)
            .get_opt("agents")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let managed =
        ListParams::default().labels("app.kubernetes.io/managed-by=airflow-secrets-operator");
    for at in [&ns, &store] {
        assert!(
            Api::<Secret>::namespaced(client.clone(), at)
                .list(&managed)
                .await
                .unwrap()
                .items
                .is_empty(),
            "no managed Secret left in {at}"
        );
        assert_eq!(grants(&client, at).await, (vec![], vec![]), "{at}");
    }
    assert!(!sa_can_list_secrets(&ns, &sa, &store));

    let logs = op.stop();
    assert!(!logs.contains("CANARY") && !logs.contains("ROTATED"));
    let _ = std::fs::remove_file(&as_agent);
    for n in [&ns, &store, &other] {
        delete_namespace(&client, n).await;
    }
}
