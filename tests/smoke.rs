//! Proves that each part of the test ground is real: the API server stores and watches our CRD,
//! the controller-manager and scheduler turn a Deployment into a ReplicaSet with Running pods
//! (kwok), the emulator speaks the Secrets Manager API through the standard AWS SDK endpoint
//! override, and helm installs the agent stand-in chart.

mod support;

use std::time::Duration;

use airflow_secrets_operator::api::AirflowSecretBinding;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use support::*;

#[tokio::test]
async fn crd_is_served_and_watched_through_kube_rs() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "smoke-crd").await;
    let api: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);

    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let binding: AirflowSecretBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "airflow-secrets.io/v1alpha1",
        "kind": "AirflowSecretBinding",
        "metadata": {"name": "smoke"},
        "spec": {
            "connections": [{"connId": "smoke_db", "secretId": "airflow/connections/smoke_db"}],
            "target": {"injection": "SecretOnly"}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.next().await {
            let obj = ev.expect("watch error");
            if obj.name_any() == "smoke" {
                return obj;
            }
        }
        panic!("watch ended");
    })
    .await
    .expect("the watch did not deliver the binding");
    assert_eq!(seen.spec.connections[0].conn_id, "smoke_db");
    // Defaults from the schema were applied by the API server.
    assert_eq!(seen.spec.refresh_interval, "1h");
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deployment_gets_a_replicaset_and_running_pods() {
    let client = client().await;
    let ns = namespace(&client, "smoke-deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let rs = eventually(
        "a ReplicaSet owned by the Deployment",
        Duration::from_secs(30),
        || {
            let replicasets = replicasets.clone();
            async move {
                let list = replicasets.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find(|rs| {
                    rs.owner_references()
                        .iter()
                        .any(|o| o.kind == "Deployment" && o.name == "web")
                })
            }
        },
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let running = eventually("3 Running pods", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            (running.len() == 3).then_some(running)
        }
    })
    .await;
    for pod in &running {
        assert!(
            pod.owner_references()
                .iter()
                .any(|o| o.kind == "ReplicaSet" && o.name == rs.name_any())
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("kwok-node-0"),
            "scheduled onto the kwok node"
        );
    }
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn secrets_manager_emulator_round_trip_through_the_aws_sdk() {
    let sm = secrets_manager().await;
    let name = format!("smoke/{}", std::process::id());
    sm.create_secret()
        .name(&name)
        .secret_string("first")
        .send()
        .await
        .expect("CreateSecret");
    sm.put_secret_value()
        .secret_id(&name)
        .secret_string("second")
        .send()
        .await
        .expect("PutSecretValue");

    let got = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .expect("GetSecretValue");
    assert_eq!(got.secret_string(), Some("second"));

    let batch = sm
        .batch_get_secret_value()
        .secret_id_list(&name)
        .secret_id_list("smoke/does-not-exist")
        .send()
        .await
        .expect("BatchGetSecretValue");
    assert_eq!(batch.secret_values().len(), 1);
    assert_eq!(batch.secret_values()[0].secret_string(), Some("second"));
    assert_eq!(
        batch.errors().len(),
        1,
        "a missing id is a per-id error, not a failed call"
    );

    let listed = sm
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(&name)
                .build(),
        )
        .send()
        .await
        .expect("ListSecrets");
    let entry = listed
        .secret_list()
        .iter()
        .find(|s| s.name() == Some(name.as_str()))
        .expect("listed");
    let stages = entry
        .secret_versions_to_stages()
        .expect("ListSecrets carries version stages");
    assert_eq!(
        stages.len(),
        2,
        "two versions: AWSCURRENT and AWSPREVIOUS: {stages:?}"
    );
    assert!(
        stages
            .values()
            .any(|s| s.iter().any(|s| s == "AWSPREVIOUS"))
    );
}

#[tokio::test]
async fn agent_stand_in_chart_installs_with_helm() {
    let client = client().await;
    let ns = namespace(&client, "smoke-helm").await;
    helm_install_agent(
        &ns,
        "agent",
        r#"
resourceNamePrefix: astro-agent
commonEnv:
  - {name: AIRFLOW__SECRETS__BACKEND_KWARGS, value: '{"connections_prefix": "airflow/connections"}'}
workers:
  - {name: default-worker, env: [{name: WORKER_ONLY, value: "1"}]}
  - {name: gpu, replicas: 2}
"#,
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let mut names: Vec<String> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|d| d.name_any())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "astro-agent-dag-processor",
            "astro-agent-sentinel",
            "astro-agent-triggerer",
            "astro-agent-worker-default-worker",
            "astro-agent-worker-gpu"
        ]
    );
    let env_names = |d: &Deployment| -> Vec<String> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .as_ref()
            .map(|e| e.iter().map(|v| v.name.clone()).collect())
            .unwrap_or_default()
    };
    let worker = deployments
        .get("astro-agent-worker-default-worker")
        .await
        .unwrap();
    let env = env_names(&worker);
    for expected in [
        "AIRFLOW__SECRETS__BACKEND",
        "AIRFLOW__SECRETS__BACKEND_KWARGS",
        "WORKER_ONLY",
    ] {
        assert!(
            env.contains(&expected.to_string()),
            "worker env lacks {expected}: {env:?}"
        );
    }
    assert_eq!(
        worker
            .annotations()
            .get("meta.helm.sh/release-name")
            .map(String::as_str),
        Some("agent")
    );
    let sentinel = deployments.get("astro-agent-sentinel").await.unwrap();
    assert!(
        !env_names(&sentinel).contains(&"AIRFLOW__SECRETS__BACKEND_KWARGS".to_string()),
        "the sentinel gets no commonEnv"
    );
    // --wait returned: every Deployment is available.
    let gpu = deployments.get("astro-agent-worker-gpu").await.unwrap();
    assert_eq!(gpu.status.unwrap().ready_replicas, Some(2));
    delete_namespace(&client, &ns).await;
}
