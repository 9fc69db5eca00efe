//! The change-event consumer end to end (docs/events.md): the operator consumes an SQS queue
//! (moto's, at the emulator's endpoint) that receives realistic synthetic EventBridge events —
//! moto emits none for Secrets Manager calls. Bindings refresh hourly, so whatever lands within
//! seconds landed through an event.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::*;

const AGENT_VALUES: &str = r#"
resourceNamePrefix: astro-agent
workers:
  - {name: default-worker}
"#;
const WORKER: &str = "astro-agent-worker-default-worker";
const T: Duration = Duration::from_secs(60);
/// The issue's bound: a change lands within 5 s of its event.
const FAST: Duration = Duration::from_secs(5);

const DESCRIBE: &str =
    r#"airflow_secrets_secretsmanager_calls_total{operation="DescribeSecret",outcome="success"}"#;
const BATCH: &str = r#"airflow_secrets_secretsmanager_calls_total{operation="BatchGetSecretValue",outcome="success"}"#;
const GET: &str =
    r#"airflow_secrets_secretsmanager_calls_total{operation="GetSecretValue",outcome="success"}"#;

fn events(outcome: &str) -> String {
    format!(r#"airflow_secrets_events_total{{outcome="{outcome}"}}"#)
}

async fn sqs() -> aws_sdk_sqs::Client {
    let endpoint = ground_var("ASO_MOTO_ENDPOINT");
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url(endpoint)
            .build(),
    )
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("a queue URL")
        .to_string()
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, event: &serde_json::Value) {
    sqs.send_message()
        .queue_url(url)
        .message_body(event.to_string())
        .send()
        .await
        .expect("SendMessage");
}

/// Messages still in the queue, visible or in hand.
async fn in_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("GetQueueAttributes");
    a.attributes()
        .map(|m| m.values().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

/// A CloudTrail `AWS API Call` event as EventBridge delivers it (no `account`, as moto would).
fn api_call(id: &str, name: &str, detail: serde_json::Value) -> serde_json::Value {
    let mut d = json!({
        "eventVersion": "1.09", "eventSource": "secretsmanager.amazonaws.com",
        "eventName": name, "awsRegion": "us-east-1", "eventType": "AwsApiCall",
        "readOnly": false, "managementEvent": true,
    });
    d.as_object_mut()
        .unwrap()
        .extend(detail.as_object().unwrap().clone());
    json!({
        "version": "0", "id": id, "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager", "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [], "detail": d
    })
}

/// Puts a new value; returns (ARN, version id).
async fn put_value(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
) -> (String, String) {
    let r = sm
        .put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .expect("PutSecretValue");
    (
        r.arn().unwrap().to_string(),
        r.version_id().unwrap().to_string(),
    )
}

#[tokio::test]
async fn events_refresh_in_seconds_and_duplicates_cost_nothing() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ev-refresh").await;
    helm_install_agent(&ns, "astro-agent", AGENT_VALUES);
    let sm = secrets_manager().await;
    let sqs = sqs().await;
    let url = queue(&sqs, &format!("aso-{ns}")).await;
    let p = format!("ev-{ns}");
    let db = format!("{p}/db");
    put_secret(&sm, &db, "postgresql://u:v1@db/x").await;
    put_secret(&sm, &format!("{p}/unrelated"), "x").await;
    let op = Operator::start_with(
        &ns,
        &["--sqs-queue-url", &url],
        &[("AWS_ENDPOINT_URL_SQS", &ground_var("ASO_MOTO_ENDPOINT"))],
    );
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "connections": [{"connId": "db", "secretId": db}],
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "1h"
            }
        }),
    )
    .await;
    eventually("the first content", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d.get("AIRFLOW_CONN_DB")? == "postgresql://u:v1@db/x").then_some(())
    })
    .await;
    eventually("the first rollout", T, || async {
        (replicasets(&client, &ns, WORKER).await.len() == 2).then_some(())
    })
    .await;
    op.quiet().await;

    // 1. PutSecretValue, then its event (ARN in responseElements, the name as secretId):
    //    the Secret and a new ReplicaSet within 5 s.
    let (arn, v2) = put_value(&sm, &db, "postgresql://u:v2@db/x").await;
    let put_event = api_call(
        "put-1",
        "PutSecretValue",
        json!({"requestParameters": {"secretId": db, "clientRequestToken": "t"},
               "responseElements": {"arn": arn, "versionId": v2, "versionStages": ["AWSCURRENT"]}}),
    );
    let t0 = Instant::now();
    send(&sqs, &url, &put_event).await;
    eventually("the new value through the event", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d.get("AIRFLOW_CONN_DB")? == "postgresql://u:v2@db/x").then_some(())
    })
    .await;
    let to_secret = t0.elapsed();
    eventually("a new ReplicaSet", T, || async {
        (replicasets(&client, &ns, WORKER).await.len() == 3).then_some(())
    })
    .await;
    let to_rs = t0.elapsed();
    println!("event -> Secret {to_secret:?}, event -> new ReplicaSet {to_rs:?}");
    assert!(to_secret < FAST, "event -> Secret took {to_secret:?}");
    assert!(to_rs < FAST, "event -> new ReplicaSet took {to_rs:?}");
    eventually("the event deleted from the queue", T, || async {
        (in_queue(&sqs, &url).await == 0).then_some(())
    })
    .await;
    op.quiet().await;
    assert_eq!(op.metric(&events("relevant")), 1.0);
    assert!(op.metric("airflow_secrets_event_to_secret_seconds_count") >= 1.0);
    eventually("event -> rollout latency recorded", T, || async {
        (op.metric("airflow_secrets_event_to_rollout_seconds_count") >= 1.0).then_some(())
    })
    .await;

    // 2. The same event 5 times (at-least-once delivery): dropped, no check, no read, no
    //    rollout. Then 5 copies of another event about the version already seen, plus an older
    //    one (out of order): one check each at most, no read, no rollout.
    let (describes, reads, rs) = (
        op.metric(DESCRIBE),
        op.metric(BATCH) + op.metric(GET),
        replicasets(&client, &ns, WORKER).await.len(),
    );
    for _ in 0..5 {
        send(&sqs, &url, &put_event).await;
    }
    eventually("5 duplicates dropped", T, || async {
        (op.metric(&events("duplicate")) == 5.0).then_some(())
    })
    .await;
    assert_eq!(op.metric(DESCRIBE), describes, "duplicates are not checked");
    let label = json!({
        "version": "0", "id": "label-1", "detail-type": "Secret Label Updated",
        "source": "aws.secretsmanager", "time": "2026-01-01T00:00:01Z", "region": "us-east-1",
        "resources": [arn], "detail": {"name": db, "labelUpdated": "AWSCURRENT", "versionId": v2}
    });
    for _ in 0..5 {
        send(&sqs, &url, &label).await;
    }
    let mut stale = put_event.clone();
    stale["id"] = json!("put-0-older");
    stale["detail"]["responseElements"]["versionId"] = json!("an-older-version");
    send(&sqs, &url, &stale).await;
    eventually("every copy handled", T, || async {
        (op.metric(&events("duplicate")) == 9.0 && in_queue(&sqs, &url).await == 0).then_some(())
    })
    .await;
    op.quiet().await;
    assert!(
        op.metric(DESCRIBE) - describes <= 2.0,
        "one check per distinct event at most: {}",
        op.metric(DESCRIBE) - describes
    );
    assert_eq!(op.metric(BATCH) + op.metric(GET), reads, "no value read");
    assert_eq!(
        replicasets(&client, &ns, WORKER).await.len(),
        rs,
        "no extra rollout"
    );

    // 3. An unrelated secret's event: found irrelevant without a call, and deleted.
    let describes = op.metric(DESCRIBE);
    let irrelevant = op.metric(&events("irrelevant"));
    send(
        &sqs,
        &url,
        &api_call(
            "unrelated-1",
            "PutSecretValue",
            json!({"requestParameters": {"secretId": format!("{p}/unrelated")}}),
        ),
    )
    .await;
    // A failed call, too.
    send(
        &sqs,
        &url,
        &api_call(
            "failed-1",
            "PutSecretValue",
            json!({"errorCode": "AccessDenied", "requestParameters": {"secretId": db}}),
        ),
    )
    .await;
    eventually("irrelevant events deleted", T, || async {
        (op.metric(&events("irrelevant")) == irrelevant + 2.0 && in_queue(&sqs, &url).await == 0)
            .then_some(())
    })
    .await;
    assert_eq!(op.metric(DESCRIBE), describes);
    assert_eq!(replicasets(&client, &ns, WORKER).await.len(), rs);

    // 4. A rotation identified only by ARN (RotationSucceeded, requestParameters null)
    //    refreshes the binding that names the secret by name.
    put_value(&sm, &db, "postgresql://u:v3@db/x").await;
    let t0 = Instant::now();
    send(
        &sqs,
        &url,
        &json!({
            "version": "0", "id": "rotation-1", "detail-type": "AWS Service Event via CloudTrail",
            "source": "aws.secretsmanager", "time": "2026-01-01T00:00:02Z", "region": "us-east-1",
            "resources": [],
            "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                       "eventType": "AwsServiceEvent", "requestParameters": null,
                       "responseElements": null, "additionalEventData": {"SecretId": arn}}
        }),
    )
    .await;
    eventually("the rotated value through an ARN-only event", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d.get("AIRFLOW_CONN_DB")? == "postgresql://u:v3@db/x").then_some(())
    })
    .await;
    println!("rotation event -> Secret {:?}", t0.elapsed());
    assert!(t0.elapsed() < FAST);
    eventually("the rotation event deleted", T, || async {
        (in_queue(&sqs, &url).await == 0).then_some(())
    })
    .await;

    // No event payload beyond ids reaches the log, and no value at all.
    let log = op.stop();
    for value in ["u:v1@", "u:v2@", "u:v3@"] {
        assert!(!log.contains(value), "a value reached the log");
    }
    assert!(!log.contains("clientRequestToken"));
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn discovery_sees_created_deleted_and_restored_secrets_at_once() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ev-discovery").await;
    let sm = secrets_manager().await;
    let sqs = sqs().await;
    let url = queue(&sqs, &format!("aso-{ns}")).await;
    let p = format!("evd-{ns}/connections");
    for id in ["a", "b", "c"] {
        put_secret(&sm, &format!("{p}/{id}"), &format!("postgresql://{id}@h/x")).await;
    }
    let op = Operator::start_with(
        &ns,
        &["--sqs-queue-url", &url],
        &[("AWS_ENDPOINT_URL_SQS", &ground_var("ASO_MOTO_ENDPOINT"))],
    );
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "found"},
            "spec": {
                "discovery": {"connectionsPrefix": p},
                "target": {"injection": "SecretOnly"},
                "refreshInterval": "1h"
            }
        }),
    )
    .await;
    let keys = |d: &std::collections::BTreeMap<String, String>| {
        d.keys().cloned().collect::<Vec<_>>().join(",")
    };
    eventually("three connections", T, || async {
        let d = secret_text(&client, &ns, "found-airflow").await?;
        (keys(&d) == "AIRFLOW_CONN_A,AIRFLOW_CONN_B,AIRFLOW_CONN_C").then_some(())
    })
    .await;

    // Created: the hourly listing does not show it; its event does, within seconds.
    let created = sm
        .create_secret()
        .name(format!("{p}/d"))
        .secret_string("postgresql://d@h/x")
        .send()
        .await
        .unwrap();
    let t0 = Instant::now();
    send(
        &sqs,
        &url,
        &api_call(
            "create-d",
            "CreateSecret",
            json!({"requestParameters": {"name": format!("{p}/d")},
                   "responseElements": {"arn": created.arn(), "versionId": created.version_id()}}),
        ),
    )
    .await;
    eventually("the created secret", T, || async {
        let d = secret_text(&client, &ns, "found-airflow").await?;
        d.contains_key("AIRFLOW_CONN_D").then_some(())
    })
    .await;
    println!("CreateSecret event -> Secret {:?}", t0.elapsed());
    assert!(t0.elapsed() < FAST);

    // Deleted (with a recovery window), by ARN in the pre-2024 spelling: the entry leaves.
    let arn_b = sm
        .describe_secret()
        .secret_id(format!("{p}/b"))
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    sm.delete_secret()
        .secret_id(&arn_b)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    send(
        &sqs,
        &url,
        &api_call(
            "delete-b",
            "DeleteSecret",
            json!({"requestParameters": {"secretId": arn_b, "recoveryWindowInDays": 7},
                   "responseElements": {"aRN": arn_b}}),
        ),
    )
    .await;
    eventually("the deleted secret gone", T, || async {
        let d = secret_text(&client, &ns, "found-airflow").await?;
        (keys(&d) == "AIRFLOW_CONN_A,AIRFLOW_CONN_C,AIRFLOW_CONN_D").then_some(())
    })
    .await;

    // Restored: back again.
    sm.restore_secret().secret_id(&arn_b).send().await.unwrap();
    send(
        &sqs,
        &url,
        &api_call(
            "restore-b",
            "RestoreSecret",
            json!({"requestParameters": {"secretId": arn_b}, "responseElements": {"arn": arn_b}}),
        ),
    )
    .await;
    eventually("the restored secret back", T, || async {
        let d = secret_text(&client, &ns, "found-airflow").await?;
        (keys(&d) == "AIRFLOW_CONN_A,AIRFLOW_CONN_B,AIRFLOW_CONN_C,AIRFLOW_CONN_D").then_some(())
    })
    .await;
    eventually("every event deleted", T, || async {
        (in_queue(&sqs, &url).await == 0).then_some(())
    })
    .await;
    assert_eq!(op.metric(&events("relevant")), 3.0);
    drop(op);
    delete_namespace(&client, &ns).await;
}

/// KubernetesBackend delivery: an event updates the labelled Secret the agents' backend reads
/// within 5 s, and creates no ReplicaSet.
#[tokio::test]
async fn an_event_updates_the_labelled_secret_and_rolls_nothing() {
    const KB: &str = "airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend";
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "ev-k8s-backend").await;
    helm_install_agent(
        &ns,
        "astro-agent",
        &format!("{AGENT_VALUES}secretBackend: {KB}\n"),
    );
    let sm = secrets_manager().await;
    let sqs = sqs().await;
    let url = queue(&sqs, &format!("aso-{ns}")).await;
    let db = format!("ev-{ns}/db");
    put_secret(&sm, &db, "postgresql://u:v1@db/x").await;
    let op = Operator::start_with(
        &ns,
        &["--sqs-queue-url", &url],
        &[("AWS_ENDPOINT_URL_SQS", &ground_var("ASO_MOTO_ENDPOINT"))],
    );
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "connections": [{"connId": "db", "secretId": db}],
                "target": {"workloads": {"helmRelease": "astro-agent"}, "injection": "KubernetesBackend"},
                "refreshInterval": "1h"
            }
        }),
    )
    .await;
    let labelled = |client: Client, ns: String| async move {
        let list = Api::<Secret>::namespaced(client, &ns)
            .list(&ListParams::default().labels("airflow.apache.org/connection-id=db"))
            .await
            .ok()?;
        let s = list.items.into_iter().next()?;
        String::from_utf8(s.data?.get("value")?.0.clone()).ok()
    };
    eventually("the labelled Secret", T, || async {
        (labelled(client.clone(), ns.clone()).await? == "postgresql://u:v1@db/x").then_some(())
    })
    .await;
    op.quiet().await;
    let rs = replicasets(&client, &ns, WORKER).await.len();

    let (arn, v2) = put_value(&sm, &db, "postgresql://u:v2@db/x").await;
    let t0 = Instant::now();
    send(
        &sqs,
        &url,
        &api_call(
            "k8s-put-1",
            "PutSecretValue",
            json!({"requestParameters": {"secretId": db},
                   "responseElements": {"arn": arn, "versionId": v2}}),
        ),
    )
    .await;
    eventually("the rotated value in the labelled Secret", T, || async {
        (labelled(client.clone(), ns.clone()).await? == "postgresql://u:v2@db/x").then_some(())
    })
    .await;
    let took = t0.elapsed();
    println!("event -> labelled Secret {took:?}");
    assert!(took < FAST, "event -> labelled Secret took {took:?}");
    op.quiet().await;
    assert_eq!(
        replicasets(&client, &ns, WORKER).await.len(),
        rs,
        "no rollout"
    );
    drop(op);
    delete_namespace(&client, &ns).await;
}
