//! The reconcile core on the real control plane: exact Secret data, status that clears, content
//! split across Secrets, one rollout per change however many bindings, the emptied-source guard,
//! and the upgrade from the first version's per-binding field managers without a rollout.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use airflow_secrets_operator::api::AirflowSecretBinding;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(60);

const AGENTS: &str = r#"
resourceNamePrefix: astro-agent
commonEnv:
  - {name: ASTRO_DEPLOYMENT_ID, value: test}
workers:
  - {name: default-worker}
"#;

/// The Deployments a binding on the release targets by default.
const TARGETED: [&str; 3] = [
    "astro-agent-worker-default-worker",
    "astro-agent-dag-processor",
    "astro-agent-triggerer",
];

fn binding(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": name}, "spec": spec
    })
}

async fn rs_counts(client: &Client, ns: &str) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for d in TARGETED {
        m.insert(d, replicasets(client, ns, d).await.len());
    }
    m
}

/// Every Secret of the namespace: "secret/<name>" → resource version.
async fn secret_versions(client: &Client, ns: &str) -> BTreeMap<String, Option<String>> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| (format!("secret/{}", s.name_any()), s.resource_version()))
        .collect()
}

async fn ready(client: &Client, ns: &str, name: &str) -> Option<()> {
    let (s, _) = ready_reason(client, ns, name).await?;
    (s == "True").then_some(())
}

/// Every Secret and key a Deployment's pod template refers to exists (kwok would not notice).
async fn refs_resolve(client: &Client, ns: &str, deployment: &str) -> bool {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(deployment)
        .await
        .unwrap();
    let c = d
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
    for (_, (secret, key)) in env_refs(&d, &c) {
        match secret_text(client, ns, &secret).await {
            Some(data) if data.contains_key(&key) => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn removed_entries_leave_the_secret_and_status_clears() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-edges").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-edges-{ns}");
    put_secret(&sm, &format!("{p}/keep"), "postgres://keep").await;
    put_secret(&sm, &format!("{p}/drop"), "postgres://drop-CANARY").await;
    let _op = Operator::start(&ns);
    let spec = |conns: serde_json::Value, release: &str| {
        json!({
            "connections": conns,
            "target": {"workloads": {"helmRelease": release}, "injection": "EnvFrom"},
            "refreshInterval": "1h"
        })
    };
    let both = json!([
        {"connId": "keep_me", "secretId": format!("{p}/keep")},
        {"connId": "drop_me", "secretId": format!("{p}/drop")}
    ]);
    apply_binding(&client, &ns, binding("edges", spec(both, "astro-agent"))).await;
    eventually("Ready with 3 workloads", T, || async {
        let s = binding_status(&client, &ns, "edges").await?;
        (ready(&client, &ns, "edges").await.is_some() && s.workloads.len() == 3).then_some(())
    })
    .await;
    let one = json!([{"connId": "keep_me", "secretId": format!("{p}/keep")}]);
    apply_binding(
        &client,
        &ns,
        binding("edges", spec(one.clone(), "astro-agent")),
    )
    .await;
    let data = eventually("drop_me leaves the Secret", T, || async {
        let d = secret_text(&client, &ns, "edges-airflow").await?;
        (!d.contains_key("AIRFLOW_CONN_DROP_ME")).then_some(d)
    })
    .await;
    assert_eq!(
        data,
        BTreeMap::from([("AIRFLOW_CONN_KEEP_ME".into(), "postgres://keep".into())]),
        "the Secret's data is exactly the binding's content"
    );
    // A release with no Deployments: env leaves, and status says no workload.
    apply_binding(&client, &ns, binding("edges", spec(one, "no-such-release"))).await;
    let status = eventually("status.workloads cleared", T, || async {
        let s = binding_status(&client, &ns, "edges").await?;
        (s.workloads.is_empty() && s.observed_generation == Some(3)).then_some(s)
    })
    .await;
    assert_eq!(status.synced_entries, Some(1));
    assert_eq!(status.entries.len(), 1);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in TARGETED {
        eventually(&format!("{d} released"), T, || async {
            let dep = deployments.get(d).await.ok()?;
            let c = &dep.spec?.template.spec?.containers[0];
            c.env_from
                .as_ref()
                .is_none_or(|e| e.is_empty())
                .then_some(())
        })
        .await;
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn content_over_one_mebibyte_is_split_across_secrets() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-split").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-split-{ns}");
    for i in 0..20 {
        put_secret(
            &sm,
            &format!("{p}/variables/v{i:02}"),
            &format!("{i:02}{}", "x".repeat(60_000)),
        )
        .await;
    }
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        binding(
            "big",
            json!({
                "discovery": {"variablesPrefix": format!("{p}/variables")},
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "1h"
            }),
        ),
    )
    .await;
    let status = eventually("Ready", T, || async {
        ready(&client, &ns, "big").await?;
        binding_status(&client, &ns, "big").await
    })
    .await;
    assert_eq!(status.synced_entries, Some(20));
    assert_eq!(status.extra_secret_names, ["big-airflow-2"]);
    let first = secret_text(&client, &ns, "big-airflow").await.unwrap();
    let second = secret_text(&client, &ns, "big-airflow-2").await.unwrap();
    assert_eq!(first.len() + second.len(), 20);
    for d in TARGETED {
        eventually(&format!("{d} injected"), T, || async {
            let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get(d)
                .await
                .ok()?;
            (env_refs(
                &dep,
                dep.spec.as_ref()?.template.spec.as_ref()?.containers[0]
                    .name
                    .as_str(),
            )
            .len()
                == 20)
                .then_some(())
        })
        .await;
        assert!(
            refs_resolve(&client, &ns, d).await,
            "{d}: every env entry resolves"
        );
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn twenty_bindings_roll_each_deployment_once_and_a_shared_rotation_once() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-storm").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-storm-{ns}");
    for i in 0..20 {
        put_secret(&sm, &format!("{p}/c{i:02}"), &format!("postgres://h/{i}")).await;
    }
    put_secret(&sm, &format!("{p}/shared"), "postgres://shared/1").await;
    let before = rs_counts(&client, &ns).await;
    let op = Operator::start(&ns);
    // 20 bindings applied at once, as `kubectl apply -f dir/` would; 5 of them also read one
    // shared secret.
    let applies = (0..20).map(|i| {
        let client = client.clone();
        let ns = ns.clone();
        let p = p.clone();
        async move {
            let mut conns =
                vec![json!({"connId": format!("c{i:02}"), "secretId": format!("{p}/c{i:02}")})];
            if i < 5 {
                conns.push(
                    json!({"connId": format!("shared_{i}"), "secretId": format!("{p}/shared")}),
                );
            }
            let spec = json!({
                "connections": conns,
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "2s"
            });
            apply_binding(&client, &ns, binding(&format!("b{i:02}"), spec)).await;
        }
    });
    futures::future::join_all(applies).await;
    for i in 0..20 {
        let name = format!("b{i:02}");
        eventually(&format!("{name} Ready"), T, || ready(&client, &ns, &name)).await;
    }
    // The ReplicaSet follows the Deployment write; give the controller-manager a moment, then
    // count.
    eventually("a new ReplicaSet per targeted Deployment", T, || async {
        let c = rs_counts(&client, &ns).await;
        TARGETED.iter().all(|d| c[d] > before[d]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = rs_counts(&client, &ns).await;
    for d in TARGETED {
        assert_eq!(
            settled[d],
            before[d] + 1,
            "{d}: exactly one rollout for 20 bindings"
        );
        assert!(refs_resolve(&client, &ns, d).await);
    }
    // Idle: several refreshes, no write to any Secret or Deployment.
    let versions = |client: Client, ns: String| async move {
        let mut v = secret_versions(&client, &ns).await;
        for d in TARGETED {
            let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get(d)
                .await
                .unwrap();
            v.insert(
                format!("deployment/{d}/generation"),
                dep.metadata.generation.map(|g| g.to_string()),
            );
        }
        v
    };
    let writes = "airflow_secrets_workload_writes_total";
    let reconciles = || {
        op.metric_sum(
            "airflow_secrets_reconciles_total",
            &format!(r#"namespace="{ns}""#),
        )
    };
    let lists = || {
        op.metric(
            r#"airflow_secrets_secretsmanager_calls_total{operation="ListSecrets",outcome="success"}"#,
        )
    };
    let (v0, w0, r0, l0) = (
        versions(client.clone(), ns.clone()).await,
        op.metric(writes),
        reconciles(),
        lists(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        versions(client.clone(), ns.clone()).await,
        v0,
        "idle refreshes write nothing"
    );
    assert_eq!(op.metric(writes), w0, "no Deployment write while idle");
    // The shared view checks the secrets on the bindings' 2 s interval; the bindings are not
    // reconciled for it while nothing changed.
    let (r1, l1) = (reconciles(), lists());
    println!("idle 5 s: {} reconciles, {} ListSecrets", r1 - r0, l1 - l0);
    assert!(l1 - l0 >= 2.0, "the view kept checking: {l0} -> {l1}");
    assert_eq!(r1, r0, "no binding reconciled while nothing changed");
    // A status-only write (ours after every sync, here someone else's) wakes nothing; a label
    // change does.
    let b00 = |op: &Operator| {
        op.metric(&format!(
            r#"airflow_secrets_reconciles_total{{namespace="{ns}",binding="b00"}}"#
        ))
    };
    let bindings = Api::<AirflowSecretBinding>::namespaced(client.clone(), &ns);
    let before = b00(&op);
    let stale = json!({"status": {"lastSyncTime": "2000-01-01T00:00:00Z"}});
    bindings
        .patch_status("b00", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(b00(&op), before, "a status write reconciles nothing");
    let label = json!({"metadata": {"labels": {"team": "a"}}});
    bindings
        .patch("b00", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    eventually("b00 reconciled after a label change", T, || async {
        (b00(&op) > before).then_some(())
    })
    .await;

    // One rotation of the secret five bindings read: one rollout per Deployment.
    put_secret(&sm, &format!("{p}/shared"), "postgres://shared/2").await;
    for i in 0..5 {
        eventually(&format!("b{i:02} has the rotated value"), T, || async {
            let d = secret_text(&client, &ns, &format!("b{i:02}-airflow")).await?;
            (d[&format!("AIRFLOW_CONN_SHARED_{i}")] == "postgres://shared/2").then_some(())
        })
        .await;
    }
    eventually("the rotation's ReplicaSets", T, || async {
        let c = rs_counts(&client, &ns).await;
        TARGETED.iter().all(|d| c[d] > settled[d]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rotated = rs_counts(&client, &ns).await;
    for d in TARGETED {
        assert_eq!(
            rotated[d],
            settled[d] + 1,
            "{d}: one rollout for a rotation seen by 5 bindings"
        );
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn an_emptied_source_is_held_until_accepted() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-guard").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-guard-{ns}");
    for i in 0..4 {
        put_secret(
            &sm,
            &format!("{p}/connections/c{i}"),
            &format!("postgres://h/{i}"),
        )
        .await;
    }
    let _op = Operator::start(&ns);
    apply_binding(
        &client,
        &ns,
        binding(
            "guarded",
            json!({
                "discovery": {"connectionsPrefix": format!("{p}/connections")},
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "1s"
            }),
        ),
    )
    .await;
    eventually("Ready", T, || ready(&client, &ns, "guarded")).await;
    let settled = eventually("one rollout", T, || async {
        let c = rs_counts(&client, &ns).await;
        c.values().all(|n| *n == 2).then_some(c)
    })
    .await;
    // Three of four secrets vanish at once (in production: a wrong region or a lost permission).
    // Deleted together, so that no refresh (every second) lists the prefix between two of the
    // deletions and follows a single one, as it should.
    futures::future::join_all((1..4).map(|i| {
        sm.delete_secret()
            .secret_id(format!("{p}/connections/c{i}"))
            .force_delete_without_recovery(true)
            .send()
    }))
    .await
    .into_iter()
    .for_each(|r| {
        r.unwrap();
    });
    eventually("SourceEmptied", T, || async {
        let (s, r) = ready_reason(&client, &ns, "guarded").await?;
        (s == "False" && r == "SourceEmptied").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        secret_text(&client, &ns, "guarded-airflow")
            .await
            .unwrap()
            .len(),
        4,
        "held"
    );
    assert_eq!(
        rs_counts(&client, &ns).await,
        settled,
        "no rollout while held"
    );
    // The user accepts the deletions with a new force-sync value.
    Api::<AirflowSecretBinding>::namespaced(client.clone(), &ns)
        .patch(
            "guarded",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"airflow-secrets.io/force-sync": "accept"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("deletions followed", T, || async {
        let d = secret_text(&client, &ns, "guarded-airflow").await?;
        (d.len() == 1).then_some(())
    })
    .await;
    eventually("Ready again", T, || ready(&client, &ns, "guarded")).await;
    delete_namespace(&client, &ns).await;
}

/// What the first version of the operator left on a cluster: the managed Secret applied with
/// `stringData` under `airflow-secrets-operator/<binding>` (with a key of an entry removed since),
/// and env entries plus the per-binding annotation applied to each Deployment under the same
/// manager.
async fn install_first_version_state(
    client: &Client,
    ns: &str,
    b: &AirflowSecretBinding,
    data: &BTreeMap<String, String>,
    hash: &str,
) {
    let manager = "airflow-secrets-operator/agents";
    let mut string_data = data.clone();
    string_data.insert(
        "AIRFLOW_CONN_REMOVED".into(),
        "postgres://stale-CANARY".into(),
    );
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "agents-airflow",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {
                    "name": "agents-airflow",
                    "labels": {"app.kubernetes.io/managed-by": "airflow-secrets-operator", "airflow-secrets.io/binding": "agents"},
                    "annotations": {"airflow-secrets.io/content-hash": hash},
                    "ownerReferences": [b.controller_owner_ref(&()).unwrap()]
                },
                "type": "Opaque",
                "stringData": string_data
            })),
        )
        .await
        .unwrap();
    // The first version then applied the Secret without the removed key (stringData never
    // removes it from data).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for d in TARGETED {
        let dep = deployments.get(d).await.unwrap();
        let c = dep.spec.unwrap().template.spec.unwrap().containers[0]
            .name
            .clone();
        let env: Vec<serde_json::Value> = data
            .keys()
            .map(|k| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": "agents-airflow", "key": k}}}))
            .collect();
        deployments
            .patch(
                d,
                &PatchParams::apply(manager),
                &Patch::Apply(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": d},
                    "spec": {"template": {
                        "metadata": {"annotations": {"content-hash.airflow-secrets.io/agents": hash}},
                        "spec": {"containers": [{"name": c, "env": env}]}
                    }}
                })),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn upgrade_from_the_first_version_rolls_nothing_and_leaves_no_old_manager() {
    use airflow_secrets_operator::api::{EntryKind, Injection};
    use airflow_secrets_operator::entries::{Fetched, ResolvedEntry};
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-upgrade").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-upgrade-{ns}");
    put_secret(&sm, &format!("{p}/db"), "postgres://db").await;
    put_secret(&sm, &format!("{p}/env"), "prod").await;
    apply_binding(
        &client,
        &ns,
        binding(
            "agents",
            json!({
                "connections": [{"connId": "db", "secretId": format!("{p}/db")}],
                "variables": [{"key": "env", "secretId": format!("{p}/env")}],
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "2s"
            }),
        ),
    )
    .await;
    let b = Api::<AirflowSecretBinding>::namespaced(client.clone(), &ns)
        .get("agents")
        .await
        .unwrap();
    // The content hash is the same function in both versions.
    let entry = |kind, name: &str, value: &str| ResolvedEntry {
        kind,
        name: name.into(),
        config: None,
        secret_id: String::new(),
        version_id: None,
        outcome: Fetched::Value(value.into()),
        team: None,
    };
    let desired = airflow_secrets_operator::plan::content::desired_secret(
        &[
            entry(EntryKind::Connection, "db", "postgres://db"),
            entry(EntryKind::Variable, "env", "prod"),
        ],
        Injection::Env,
        &BTreeMap::new(),
    );
    install_first_version_state(&client, &ns, &b, &desired.data, &desired.content_hash).await;
    let before = eventually("first-version rollouts done", T, || async {
        let c = rs_counts(&client, &ns).await;
        c.values().all(|n| *n == 2).then_some(c)
    })
    .await;

    let _op = Operator::start(&ns);
    eventually("Ready", T, || ready(&client, &ns, "agents")).await;
    let managers = |client: Client, ns: String| async move {
        let mut all = Vec::new();
        let s = Api::<Secret>::namespaced(client.clone(), &ns)
            .get("agents-airflow")
            .await
            .unwrap();
        all.extend(
            s.metadata
                .managed_fields
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.manager),
        );
        for d in TARGETED {
            let dep = Api::<Deployment>::namespaced(client.clone(), &ns)
                .get(d)
                .await
                .unwrap();
            all.extend(
                dep.metadata
                    .managed_fields
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|m| m.manager),
            );
        }
        all
    };
    eventually(
        "no field left under the first version's managers",
        T,
        || async {
            let m = managers(client.clone(), ns.clone()).await;
            (!m.iter().any(|m| m.starts_with("airflow-secrets-operator/"))).then_some(())
        },
    )
    .await;
    let data = eventually("the stale key is gone", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (!d.contains_key("AIRFLOW_CONN_REMOVED")).then_some(d)
    })
    .await;
    assert_eq!(data, desired.data);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rs_counts(&client, &ns).await,
        before,
        "the upgrade rolled a Deployment"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in TARGETED {
        let dep = deployments.get(d).await.unwrap();
        let c = dep
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
        assert_eq!(env_refs(&dep, &c).len(), 2, "{d} keeps its env");
    }
    delete_namespace(&client, &ns).await;
}

/// An operator restart reads no value that the managed Secrets hold for the versions Secrets
/// Manager shows (only the entry that is not in a Secret is read again), writes no Secret or
/// Deployment, and rolls nothing; a rotation after the restart still lands.
#[tokio::test]
async fn a_restart_reads_only_what_the_secrets_do_not_hold_and_writes_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "rec-restart").await;
    helm_install_agent(&ns, "astro-agent", AGENTS);
    let sm = secrets_manager().await;
    let p = format!("rec-restart-{ns}/connections");
    for i in 0..10 {
        put_secret(&sm, &format!("{p}/c{i:02}"), &format!("postgres://h/{i}")).await;
    }
    // Airflow reads SecretString only: this entry is reported, never in a Secret.
    sm.create_secret()
        .name(format!("{p}/binary"))
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    let target = json!({"workloads": {"helmRelease": "astro-agent"}});
    let mut names = vec!["disco".to_string()];
    let op = Operator::start(&ns);
    for i in 0..10 {
        let spec = json!({
            "connections": [{"connId": format!("c{i:02}"), "secretId": format!("{p}/c{i:02}")}],
            "target": target, "refreshInterval": "3s"
        });
        apply_binding(&client, &ns, binding(&format!("b{i:02}"), spec)).await;
        names.push(format!("b{i:02}"));
    }
    let spec = json!({
        "discovery": {"connectionsPrefix": p, "sep": "/"},
        // The same connections as b00…b09: delivered as a Secret only, not to the agents.
        "target": {"injection": "SecretOnly", "secretName": "disco-airflow"},
        "refreshInterval": "3s"
    });
    apply_binding(&client, &ns, binding("disco", spec)).await;
    for n in &names {
        eventually(&format!("{n} Ready"), T, || ready(&client, &ns, n)).await;
    }
    op.quiet().await;
    let snapshot = |client: Client, ns: String| async move {
        let mut v = secret_versions(&client, &ns).await;
        for d in TARGETED {
            let n = replicasets(&client, &ns, d).await.len();
            v.insert(format!("replicasets/{d}"), Some(n.to_string()));
        }
        v
    };
    let before = snapshot(client.clone(), ns.clone()).await;
    drop(op);

    let op = Operator::start(&ns);
    for n in &names {
        // Reconciled (an idle check does not move lastSyncTime, so the metric tells).
        let series =
            format!(r#"airflow_secrets_reconciles_total{{namespace="{ns}",binding="{n}"}}"#);
        eventually(&format!("{n} reconciled after the restart"), T, || async {
            (op.metric(&series) >= 1.0).then_some(())
        })
        .await;
    }
    // Two more refreshes.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let batch = r#"airflow_secrets_secretsmanager_calls_total{operation="BatchGetSecretValue",outcome="success"}"#;
    let list =
        r#"airflow_secrets_secretsmanager_calls_total{operation="ListSecrets",outcome="success"}"#;
    let bytes = "airflow_secrets_secretsmanager_value_bytes_total";
    println!(
        "after the restart: {} BatchGetSecretValue, {} ListSecrets, {} value bytes",
        op.metric(batch),
        op.metric(list),
        op.metric(bytes)
    );
    assert_eq!(
        op.metric(batch),
        1.0,
        "one read: the binary-only secret, which no Secret holds"
    );
    assert_eq!(op.metric(bytes), 0.0, "no value moved");
    assert_eq!(
        snapshot(client.clone(), ns.clone()).await,
        before,
        "the restart wrote no Secret and rolled nothing"
    );
    for n in &names {
        assert!(ready(&client, &ns, n).await.is_some(), "{n} Ready");
    }

    // A rotation after the restart lands in both bindings that read the secret, and only its
    // value is read (once for both).
    let bytes_before = op.metric(bytes);
    put_secret(&sm, &format!("{p}/c03"), "postgres://h/rotated").await;
    for (secret, key) in [
        ("b03-airflow", "AIRFLOW_CONN_C03"),
        ("disco-airflow", "AIRFLOW_CONN_C03"),
    ] {
        eventually(&format!("{secret} rotated"), T, || async {
            let d = secret_text(&client, &ns, secret).await?;
            (d[key] == "postgres://h/rotated").then_some(())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        op.metric(bytes) - bytes_before,
        "postgres://h/rotated".len() as f64,
        "exactly one value read for the rotation"
    );
    let d = secret_text(&client, &ns, "disco-airflow").await.unwrap();
    assert_eq!(d["AIRFLOW_CONN_C04"], "postgres://h/4", "the rest is held");
    assert!(!d.contains_key("AIRFLOW_CONN_BINARY"));
    drop(op);
    delete_namespace(&client, &ns).await;
}
