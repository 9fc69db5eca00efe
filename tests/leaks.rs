//! No secret value leaves through the operator's own channels: canary values never appear in its
//! log at every level — `trace` included, for the operator and for every dependency — nor in
//! Events, status or metrics.

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
async fn canaries_stay_out_of_logs_events_status_and_metrics_at_trace_level() {
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
    let op = Operator::start_with(&ns, &[], &[("RUST_LOG", "trace")]);
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
    let (_, metrics) = op.get("/metrics");
    let status = serde_json::to_string(&binding_status(&client, &ns, "agents").await).unwrap();
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
    for (what, text) in [
        ("log", &logs),
        ("metrics", &metrics),
        ("status", &status),
        ("events", &events),
    ] {
        for form in forms(&canary) {
            let at = text.find(&form);
            assert!(
                at.is_none(),
                "a value reached the {what} ({form}): …{}…",
                &text[at.unwrap().saturating_sub(200)..(at.unwrap() + 50).min(text.len())]
            );
        }
    }
    delete_namespace(&client, &ns).await;
}
