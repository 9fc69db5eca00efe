//! Secrets Manager faults, on the real control plane: a binding reads the emulator through the
//! fault proxy of `support::faults`, which a test switches to throttling, HTTP 429, 5xx, slow or
//! hung answers for a while, or secrets are deleted upstream and restored. For every fault:
//! the managed Secret's data never changes (polled throughout), the Ready reason says what
//! happens within 10 s of the fault starting and of it ending, recovery needs no manual step,
//! the worker Deployment is not rolled out (same revision, same ReplicaSets), and the operator's
//! calls while degraded stay fewer than when healthy (no retry storm). Each test prints its rows
//! of the reliability table (`--nocapture`); docs/reliability.md collects them.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::faults::{Call, Fault, FaultProxy, gaps, peak_in};
use support::*;

const T: Duration = Duration::from_secs(60);
/// The Ready reason tells a fault, and its end, within this.
const SIGNAL: Duration = Duration::from_secs(10);
const WORKER: &str = "astro-agent-worker-default-worker";
const BINDING: &str = "agents";
const SECRET: &str = "agents-airflow";

/// One binding in env mode on an agent release, reading three secrets through the proxy, synced
/// and settled.
struct Rig {
    client: kube::Client,
    ns: String,
    prefix: String,
    sm: aws_sdk_secretsmanager::Client,
    proxy: FaultProxy,
    op: Operator,
    /// The managed Secret's data once synced: what every sample must show.
    data: BTreeMap<String, String>,
    replicasets: usize,
    revision: u64,
    /// Calls per second while healthy and settled (two listings per 1 s refresh).
    healthy_rate: f64,
}

impl Rig {
    async fn start(test: &str) -> Rig {
        let client = client().await;
        install_crds(&client).await;
        let ns = namespace(&client, test).await;
        helm_install_agent(
            &ns,
            "astro-agent",
            "resourceNamePrefix: astro-agent\nworkers:\n  - {name: default-worker}\n",
        );
        let sm = secrets_manager().await;
        let prefix = format!("faults-{ns}");
        put_secret(
            &sm,
            &format!("{prefix}/connections/db"),
            "postgresql://u:p@db:5432/app",
        )
        .await;
        put_secret(
            &sm,
            &format!("{prefix}/connections/api"),
            "http://api.example:8080",
        )
        .await;
        put_secret(&sm, &format!("{prefix}/variables/token"), "t0ken").await;
        let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
        let op = Operator::start(&ns);
        apply_binding(
            &client,
            &ns,
            json!({
                "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
                "metadata": {"name": BINDING},
                "spec": {
                    "source": {"endpoint": proxy.endpoint()},
                    "discovery": {
                        "connectionsPrefix": format!("{prefix}/connections"),
                        "variablesPrefix": format!("{prefix}/variables")
                    },
                    "target": {"workloads": {"helmRelease": "astro-agent"}},
                    "refreshInterval": "1s"
                }
            }),
        )
        .await;
        eventually("Ready", T, || async {
            let (s, r) = ready_reason(&client, &ns, BINDING).await?;
            (s == "True" && r == "Synced").then_some(())
        })
        .await;
        let ready = Instant::now();
        op.quiet().await;
        let healthy_rate =
            proxy.calls_between(ready, Instant::now()).len() as f64 / ready.elapsed().as_secs_f64();
        let data = secret_text(&client, &ns, SECRET).await.expect("Secret");
        assert_eq!(data.len(), 3, "three entries synced: {data:?}");
        let replicasets = replicasets(&client, &ns, WORKER).await.len();
        assert!(replicasets >= 2, "the injection rolled the worker out once");
        let revision = revision(&client, &ns).await;
        Rig {
            client,
            ns,
            prefix,
            sm,
            proxy,
            op,
            data,
            replicasets,
            revision,
            healthy_rate,
        }
    }

    /// Samples the managed Secret and the Ready condition until stopped.
    fn monitor(&self) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, ns, stopped) = (self.client.clone(), self.ns.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let secrets =
                kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns);
            while !stopped.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                // A failed read of the API server says nothing about the Secret: no sample.
                let Ok(secret) = secrets.get_opt(SECRET).await else {
                    continue;
                };
                let data = secret.map(|s| {
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect()
                });
                let ready = ready_reason(&client, &ns, BINDING).await;
                samples.push(Sample {
                    at: Instant::now(),
                    data,
                    ready,
                });
            }
            samples
        });
        Monitor { stop, task }
    }

    async fn ready_message(&self) -> String {
        binding_status(&self.client, &self.ns, BINDING)
            .await
            .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.message)
            .unwrap_or_default()
    }

    /// Waits (at most [`SIGNAL`]) for the Ready condition to show `status` and `reason`; the
    /// time it took. On timeout the panic shows the calls the proxy saw meanwhile.
    async fn signalled(&self, since: Instant, status: &str, reason: &str) -> Duration {
        loop {
            let now = ready_reason(&self.client, &self.ns, BINDING).await;
            if now
                .as_ref()
                .is_some_and(|(s, r)| s == status && r == reason)
            {
                return since.elapsed();
            }
            if since.elapsed() > SIGNAL {
                let calls: Vec<String> = self
                    .proxy
                    .calls()
                    .iter()
                    .map(|c| {
                        format!(
                            "{:+.1}s {} ({})",
                            c.at.duration_since(since).as_secs_f64()
                                - since.duration_since(c.at).as_secs_f64(),
                            c.operation,
                            c.fault.label()
                        )
                    })
                    .collect();
                panic!(
                    "Ready is {now:?}, not {status} {reason}, {SIGNAL:?} after the change; message: {}\ncalls (relative to it): {calls:#?}",
                    self.ready_message().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Rollouts of the worker since the rig settled (after the operator is quiet): revisions of
    /// the Deployment, which also count a return to an earlier pod template (that reuses its old
    /// ReplicaSet); new ReplicaSets are never more.
    async fn rollouts(&self) -> usize {
        self.op.quiet().await;
        let new_sets = replicasets(&self.client, &self.ns, WORKER).await.len() - self.replicasets;
        let rollouts = (revision(&self.client, &self.ns).await - self.revision) as usize;
        assert!(
            new_sets <= rollouts,
            "{new_sets} new ReplicaSets, {rollouts} revisions"
        );
        rollouts
    }
}

/// The worker Deployment's revision (`deployment.kubernetes.io/revision`).
async fn revision(client: &kube::Client, ns: &str) -> u64 {
    use kube::ResourceExt;
    kube::Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .get(WORKER)
        .await
        .expect("the worker Deployment")
        .annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .expect("a revision")
}

struct Sample {
    at: Instant,
    data: Option<BTreeMap<String, String>>,
    ready: Option<(String, String)>,
}

struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Monitor {
    async fn samples(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("monitor")
    }
}

/// Asserts that every sample showed the synced data; the number of samples.
fn never_changed(rig: &Rig, samples: &[Sample]) -> usize {
    assert!(
        samples.len() > 20,
        "the Secret was polled throughout ({} samples)",
        samples.len()
    );
    for s in samples {
        assert_eq!(
            s.data.as_ref(),
            Some(&rig.data),
            "the managed Secret changed during the fault (at {:?}, Ready {:?})",
            s.at,
            s.ready
        );
    }
    samples.len()
}

/// One row of the reliability table.
struct Row {
    scenario: String,
    outcome: String,
    data_lost: &'static str,
    rollouts: usize,
    calls: String,
    /// From the fault's start to the Ready reason that tells it (None: no alarm is due).
    signal: Option<Duration>,
    /// From the fault's end to Ready True again.
    recover: Option<Duration>,
}

fn print_table(rows: &[Row]) {
    println!(
        "\n| scenario | outcome | data lost | spurious rollouts | calls while degraded | Ready reason after fault start | time to recover |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.outcome,
            r.data_lost,
            r.rollouts,
            r.calls,
            seconds(r.signal),
            seconds(r.recover)
        );
    }
}

fn seconds(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "—".into())
}

fn ops(calls: &[Call]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls {
        *by.entry(c.operation.as_str()).or_default() += 1;
    }
    by.iter()
        .map(|(o, n)| format!("{n} {o}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A transient fault of the endpoint for `hold`, then back: the shared assertions, and the row.
async fn endpoint_fault(test: &str, fault: Fault, hold: Duration, message_says: &[&str]) -> Row {
    let rig = Rig::start(test).await;
    let monitor = rig.monitor();
    let start = Instant::now();
    rig.proxy.set(fault);
    let signal = rig
        .signalled(start, "False", "SecretsManagerUnavailable")
        .await;
    let message = rig.ready_message().await;
    println!("[{test}] Ready message: {message}");
    assert!(
        message_says.iter().all(|m| message.contains(m)),
        "the Ready message names the fault ({message_says:?}): {message}"
    );
    assert!(
        message.contains("keeps its last good content"),
        "the Ready message says the Secret is kept: {message}"
    );
    // The fault lasts `hold`: the Ready reason must keep saying so, and the operator keeps
    // trying at a bounded rate.
    while start.elapsed() < hold {
        let (s, r) = ready_reason(&rig.client, &rig.ns, BINDING)
            .await
            .expect("status");
        assert_eq!(
            (s.as_str(), r.as_str()),
            ("False", "SecretsManagerUnavailable"),
            "while the fault lasts"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rig.proxy.set(Fault::Pass);
    let end = Instant::now();
    let recover = rig.signalled(end, "True", "Synced").await;
    let rollouts = rig.rollouts().await;
    let samples = monitor.samples().await;
    never_changed(&rig, &samples);

    let degraded = rig.proxy.faulted();
    let first = degraded
        .first()
        .expect("the operator called while degraded");
    let rate = degraded.len() as f64 / hold.as_secs_f64();
    let peak = peak_in(&degraded, Duration::from_secs(1));
    let gap_ms: Vec<u128> = gaps(&degraded).iter().map(|g| g.as_millis()).collect();
    println!(
        "[{test}] {}: first degraded call {:.1} s after the fault started; {} calls while degraded ({}), {rate:.2}/s, at most {peak} in one second; gaps (ms) {gap_ms:?}",
        fault.label(),
        first.at.duration_since(start).as_secs_f64(),
        degraded.len(),
        ops(&degraded),
    );
    // A retry storm would call more often than a healthy refresh does; backing off calls less.
    let healthy = rig.healthy_rate * hold.as_secs_f64();
    println!(
        "[{test}] healthy: {:.2} calls/s, i.e. {healthy:.0} in {} s",
        rig.healthy_rate,
        hold.as_secs()
    );
    assert!(
        rig.healthy_rate >= 1.0,
        "the healthy refresh was measured: {:.2}/s",
        rig.healthy_rate
    );
    assert!(
        (degraded.len() as f64) < healthy,
        "fewer calls while degraded than while healthy: {} ≥ {healthy:.0} (a retry storm)",
        degraded.len()
    );
    // One reconcile lists two prefixes with up to three attempts each.
    assert!(
        peak <= 6,
        "no burst of calls: {peak} in one second while degraded"
    );
    assert_eq!(rollouts, 0, "no rollout from a transient fault");
    let row = Row {
        scenario: format!("{} for {} s", fault.label(), hold.as_secs()),
        outcome: "Secret kept; SecretsManagerUnavailable, then Synced by itself".into(),
        data_lost: "none",
        rollouts,
        calls: format!("{} ({})", degraded.len(), ops(&degraded)),
        signal: Some(signal),
        recover: Some(recover),
    };
    print_table(std::slice::from_ref(&row));
    delete_namespace(&rig.client, &rig.ns).await;
    row
}

#[tokio::test]
async fn throttling_burst_keeps_the_secret_and_backs_off() {
    endpoint_fault(
        "faults-throttle",
        Fault::Throttle,
        Duration::from_secs(20),
        &["ThrottlingException"],
    )
    .await;
}

#[tokio::test]
async fn too_many_requests_keeps_the_secret_and_backs_off() {
    endpoint_fault(
        "faults-429",
        Fault::TooManyRequests,
        Duration::from_secs(15),
        &["HTTP 429"],
    )
    .await;
}

#[tokio::test]
async fn server_errors_keep_the_secret_and_back_off() {
    endpoint_fault(
        "faults-5xx",
        Fault::ServerError(500),
        Duration::from_secs(20),
        &["InternalServiceError", "(HTTP 500)"],
    )
    .await;
}

#[tokio::test]
async fn hung_endpoint_longer_than_the_operation_timeout_keeps_the_secret() {
    endpoint_fault(
        "faults-hang",
        Fault::Hang,
        Duration::from_secs(40),
        &["timeout"],
    )
    .await;
}

#[tokio::test]
async fn secrets_deleted_upstream_then_restored_hold_the_secret() {
    let rig = Rig::start("faults-deleted").await;
    let monitor = rig.monitor();
    let deleted = [
        format!("{}/connections/db", rig.prefix),
        format!("{}/variables/token", rig.prefix),
    ];
    let start = Instant::now();
    // Scheduled for deletion (the recovery window), as a console or CLI delete does.
    for id in &deleted {
        rig.sm
            .delete_secret()
            .secret_id(id)
            .recovery_window_in_days(7)
            .send()
            .await
            .expect("DeleteSecret");
    }
    // Two of three entries gone at once: the emptied-source guard holds the last good content.
    let signal = rig.signalled(start, "False", "SourceEmptied").await;
    let hold = Duration::from_secs(10);
    while start.elapsed() < hold {
        let (s, r) = ready_reason(&rig.client, &rig.ns, BINDING)
            .await
            .expect("status");
        assert_eq!((s.as_str(), r.as_str()), ("False", "SourceEmptied"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for id in &deleted {
        rig.sm
            .restore_secret()
            .secret_id(id)
            .send()
            .await
            .expect("RestoreSecret");
    }
    let end = Instant::now();
    let recover = rig.signalled(end, "True", "Synced").await;
    let rollouts = rig.rollouts().await;
    let samples = monitor.samples().await;
    never_changed(&rig, &samples);
    let during = rig.proxy.calls_between(start, end);
    let values = during
        .iter()
        .filter(|c| c.operation != "ListSecrets")
        .count();
    println!(
        "[faults-deleted] {} calls while two of three secrets were deleted ({:.1} s): {}",
        during.len(),
        end.duration_since(start).as_secs_f64(),
        ops(&during)
    );
    assert_eq!(rollouts, 0, "no rollout from a deletion that is undone");
    assert_eq!(values, 0, "no value is read while the content is held");
    let held = Row {
        scenario: "2 of 3 secrets deleted (recovery window), restored after 10 s".into(),
        outcome: "Secret kept; SourceEmptied, then Synced by itself".into(),
        data_lost: "none",
        rollouts,
        calls: format!("{} ({}), as when healthy", during.len(), ops(&during)),
        signal: Some(signal),
        recover: Some(recover),
    };

    // One secret of three deleted is not an emptied source: its key leaves the Secret, as the
    // secret leaves Airflow's view (one rollout), and comes back when restored (one more).
    let one = format!("{}/connections/api", rig.prefix);
    let key = "AIRFLOW_CONN_API";
    let start = Instant::now();
    rig.sm
        .delete_secret()
        .secret_id(&one)
        .recovery_window_in_days(7)
        .send()
        .await
        .expect("DeleteSecret");
    let mut without = rig.data.clone();
    without.remove(key).expect("the key was synced");
    eventually(
        "the deleted secret's key leaves the Secret",
        SIGNAL,
        || async {
            let d = secret_text(&rig.client, &rig.ns, SECRET).await?;
            (d == without).then_some(())
        },
    )
    .await;
    let left = start.elapsed();
    rig.op.quiet().await;
    rig.sm
        .restore_secret()
        .secret_id(&one)
        .send()
        .await
        .expect("RestoreSecret");
    let end = Instant::now();
    eventually("the restored secret's key is back", SIGNAL, || async {
        let d = secret_text(&rig.client, &rig.ns, SECRET).await?;
        (d == rig.data).then_some(())
    })
    .await;
    let back = rig.signalled(end, "True", "Synced").await;
    let rollouts = rig.rollouts().await;
    assert_eq!(
        rollouts, 2,
        "one rollout without the key, one with it again"
    );
    let single = Row {
        scenario: "1 of 3 secrets deleted (recovery window), then restored".into(),
        outcome: "by design: its key leaves the Secret as the secret leaves Airflow's view \
                  (1 rollout) and returns when restored (1 rollout)"
            .into(),
        data_lost: "only the deleted secret's key, until restored",
        rollouts: 0,
        calls: "—".into(),
        signal: Some(left),
        recover: Some(back),
    };
    print_table(&[held, single]);
    delete_namespace(&rig.client, &rig.ns).await;
}

#[tokio::test]
async fn slow_answers_within_the_timeouts_raise_no_alarm() {
    let rig = Rig::start("faults-slow").await;
    let monitor = rig.monitor();
    let delay = Duration::from_secs(2);
    let start = Instant::now();
    rig.proxy.set(Fault::Slow(delay));
    let hold = Duration::from_secs(12);
    // Answers 2 s late are slow, not an outage: Ready stays True throughout.
    while start.elapsed() < hold {
        let (s, r) = ready_reason(&rig.client, &rig.ns, BINDING)
            .await
            .expect("status");
        assert_eq!((s.as_str(), r.as_str()), ("True", "Synced"), "while slow");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    rig.proxy.set(Fault::Pass);
    let slow = rig.proxy.faulted();
    let rollouts = rig.rollouts().await;
    let samples = monitor.samples().await;
    never_changed(&rig, &samples);
    assert!(
        slow.len() >= 4,
        "the operator kept refreshing through slow answers ({} calls)",
        slow.len()
    );
    assert_eq!(rollouts, 0);
    print_table(&[Row {
        scenario: format!(
            "answers {} s late for {} s",
            delay.as_secs(),
            hold.as_secs()
        ),
        outcome: "no alarm: Ready stays True (Synced)".into(),
        data_lost: "none",
        rollouts,
        calls: format!("{} ({}), all answered", slow.len(), ops(&slow)),
        signal: None,
        recover: None,
    }]);
    delete_namespace(&rig.client, &rig.ns).await;
}

/// The longer target (not in CI's budget): an outage of minutes still ends within seconds for
/// the binding, since its backoff stops growing while Secrets Manager fails.
#[tokio::test]
#[ignore = "3 minutes of outage: run with `cargo test --test faults -- --ignored --nocapture`"]
async fn outage_of_minutes_recovers_within_seconds() {
    endpoint_fault(
        "faults-long",
        Fault::ServerError(503),
        Duration::from_secs(180),
        &["InternalServiceError"],
    )
    .await;
}
