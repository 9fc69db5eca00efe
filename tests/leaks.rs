//! No secret value leaves through the operator's own channels: canary values never appear in its
//! log at every level — `trace` included, for the operator and for every dependency — nor in
//! Events, status or metrics, nor in the messages that name a malformed secret's problem, nor in
//! the output of the `render` command (every format, stdout and stderr). The change-event
//! consumer runs alongside and is fed an event about a rotated secret (carrying the value, as a
//! CloudTrail event of a careless trail could) and malformed messages carrying it.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(60);

/// The forms a value could take on its way out: as is, base64 (Secret data), URL-encoded.
fn forms(canary: &str) -> Vec<String> {
    use base64_forms::*;
    vec![canary.to_string(), b64(canary), canary.replace('-', "%2D")]
}

mod base64_forms {
    pub fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
        }
        out
    }
}

#[tokio::test]
async fn canaries_stay_out_of_logs_events_status_metrics_messages_and_render() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "leaks").await;
    helm_install_agent(
        &ns,
        "astro-agent",
        "resourceNamePrefix: astro-agent\nworkers:\n  - {name: default-worker}\n",
    );
    let sm = secrets_manager().await;
    let p = format!("leaks-{ns}");
    let canary = format!("CANARYq{}x", std::process::id());
    put_secret(
        &sm,
        &format!("{p}/connections/db"),
        &format!("postgresql://u:{canary}@db:5432/app"),
    )
    .await;
    put_secret(&sm, &format!("{p}/variables/token"), &canary).await;
    // Malformed secrets that carry the canary where a parser's message could quote it: each
    // entry's status names its problem, and must not name the value.
    let malformed = [
        (
            "bad_json",
            format!(r#"{{"conn_type":"postgres","password":"{canary}""#),
        ),
        (
            "bad_port",
            format!(r#"{{"conn_type":"postgres","port":"{canary}"}}"#),
        ),
        (
            "bad_type",
            format!(r#"{{"conn_type":"postgres","password":12345,"host":"{canary}"}}"#),
        ),
        // Key names that are plain identifiers (letters, digits, `_`, `-`, ≤ 64) are named in
        // the warning about keys Airflow drops, by design; any other key is only counted.
        (
            "bad_key",
            format!(r#"{{"{canary}.{canary}":"x","conn_type":"y"}}"#),
        ),
        ("bad_uri", format!("a://{canary}://b://c")),
    ];
    for (id, value) in &malformed {
        put_secret(&sm, &format!("{p}/connections/{id}"), value).await;
    }
    // The change-event consumer runs too: its reads, checks and malformed messages are logged.
    let sqs = sqs().await;
    let queue = sqs
        .create_queue()
        .queue_name(format!("leaks-{}", ns.rsplit('-').next().unwrap()))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("a queue URL")
        .to_string();
    let op = Operator::start_with(
        &ns,
        &["--sqs-queue-url", &queue],
        &[
            ("RUST_LOG", "trace"),
            ("AWS_ENDPOINT_URL_SQS", &ground_var("ASO_MOTO_ENDPOINT")),
        ],
    );
    apply_binding(
        &client,
        &ns,
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": "agents"},
            "spec": {
                "discovery": {"connectionsPrefix": format!("{p}/connections"), "variablesPrefix": format!("{p}/variables")},
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "2s"
            }
        }),
    )
    .await;
    eventually("Ready", T, || async {
        let (s, _) = ready_reason(&client, &ns, "agents").await?;
        (s == "True").then_some(())
    })
    .await;
    // A rotation, so that reads, writes and rollouts of a changed value are logged too.
    let rotated = format!("{canary}r");
    put_secret(&sm, &format!("{p}/variables/token"), &rotated).await;
    eventually("rotated", T, || async {
        let d = secret_text(&client, &ns, "agents-airflow").await?;
        (d["AIRFLOW_VAR_TOKEN"] == rotated).then_some(())
    })
    .await;
    // An event about the rotated secret (refreshes it), and messages that carry the canary
    // where a parser's message could quote it.
    let event = json!({
        "version": "0", "id": format!("ev-{ns}"), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.secretsmanager", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {
            "eventSource": "secretsmanager.amazonaws.com", "eventName": "PutSecretValue",
            "eventType": "AwsApiCall", "awsRegion": "us-east-1",
            "requestParameters": {"secretId": format!("{p}/variables/token"), "secretString": canary}
        }
    });
    for body in [
        event.to_string(),
        format!("not json {canary}"),
        json!({"detail-type": canary, "detail": {"secretId": canary}}).to_string(),
    ] {
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage");
    }
    eventually("the consumer took the messages", T, || async {
        let taken = op.metric(r#"airflow_secrets_events_total{outcome="received"}"#);
        (taken >= 3.0).then_some(())
    })
    .await;
    let (_, metrics) = op.get("/metrics");
    let status = binding_status(&client, &ns, "agents")
        .await
        .expect("status");
    let not_synced: Vec<(String, String)> = status
        .entries
        .iter()
        .filter(|e| e.state != airflow_secrets_operator::api::EntryState::Synced)
        .map(|e| (e.name.clone(), e.message.clone().unwrap_or_default()))
        .collect();
    assert!(
        not_synced
            .iter()
            .any(|(n, m)| n == "bad_json" && m.contains("not valid JSON")),
        "the malformed JSON's problem is named in status: {not_synced:?}"
    );
    assert!(
        not_synced.len() >= 3,
        "most malformed secrets are reported: {not_synced:?}"
    );
    let status = serde_json::to_string(&status).unwrap();
    let render = render_outputs(&p);
    let events = run(
        &ground_var("ASO_KUBECTL"),
        &["-n", &ns, "get", "events", "-o", "json"],
    );
    let logs = op.stop();
    assert!(
        logs.len() > 10_000,
        "the log is at trace level ({} bytes)",
        logs.len()
    );
    let mut channels = vec![
        ("log".to_string(), logs),
        ("metrics".to_string(), metrics),
        ("status".to_string(), status),
        ("events".to_string(), events),
    ];
    channels.extend(render);
    for (what, text) in &channels {
        for form in forms(&canary) {
            let Some(at) = text.find(&form) else {
                continue;
            };
            // The start of the line says who wrote it (a log line's level and target).
            let line = text[..at].rfind('\n').map_or(0, |i| i + 1);
            panic!(
                "a value reached the {what} ({form}): {}… …{}…",
                &text[line..(line + 1500).min(at)],
                &text[at.saturating_sub(200)..(at + 50).min(text.len())]
            );
        }
    }
    delete_namespace(&client, &ns).await;
}

async fn sqs() -> aws_sdk_sqs::Client {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url(ground_var("ASO_MOTO_ENDPOINT"))
            .build(),
    )
}

/// `render` of a binding over the test's secrets, in every output format (`RUST_LOG=trace` set,
/// should it ever log): (what, stdout) and (what, stderr) of each run.
fn render_outputs(prefix: &str) -> Vec<(String, String)> {
    let dir = std::env::temp_dir().join(format!("aso-leaks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binding = dir.join("binding.yaml");
    std::fs::write(
        &binding,
        format!(
            "apiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {{name: agents, namespace: leaks}}\nspec:\n  discovery: {{connectionsPrefix: {prefix}/connections, variablesPrefix: {prefix}/variables}}\n  target:\n    workloads: {{helmRelease: astro-agent}}\n"
        ),
    )
    .unwrap();
    let mut out = Vec::new();
    for format in ["table", "json", "yaml"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_airflow-secrets-operator"))
            .args(["render", "-f", binding.to_str().unwrap(), "-o", format])
            .env("RUST_LOG", "trace")
            .output()
            .expect("run render");
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        // It read the values (a hash per synced entry) and names the malformed ones' problems.
        assert_eq!(
            o.status.code(),
            Some(1),
            "render exits 1 for entries Airflow would not read:\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains("sha256:") && stdout.contains("not valid JSON"),
            "render -o {format} shows hashes and problems:\n{stdout}"
        );
        assert!(
            stderr.contains("reading Secrets Manager"),
            "render's progress on stderr: {stderr}"
        );
        out.push((format!("render -o {format}"), stdout));
        out.push((format!("render -o {format} log"), stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}
