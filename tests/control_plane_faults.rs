//! Control-plane faults, on the real control plane (tests/ground): kube-apiserver and etcd
//! restarted mid-reconcile, the operator cut off from the API server while its binding changes
//! and the API server restarts (its watches resume from an expired resource version: 410 Gone,
//! re-listed), a binding deleted while its first sync is in flight, the operator SIGKILLed
//! mid-rollout and restarted, two replicas with leader election whose leader is SIGKILLed, and
//! the operator's chart uninstalled while bindings exist.
//!
//! For each: the managed Secret is sampled throughout and never emptied nor changed except by the
//! change the scenario makes; recovery needs no manual step; the worker Deployment rolls out
//! exactly once per real change (revisions and ReplicaSets counted: spurious rollouts 0); the
//! operator's failed calls while degraded are counted (retries back off). Each test prints its
//! row of the reliability table (`--nocapture`); docs/reliability.md collects them.
//!
//! These tests stop and start the ground's API server and etcd (tests/ground/component.sh), so
//! they run one at a time ([`SERIAL`]) in a test binary of their own: cargo runs test binaries
//! one after another, so no other test sees the outages.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::faults::{Fault, FaultProxy};
use support::*;

/// One scenario at a time: they restart the control plane all tests share.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const T: Duration = Duration::from_secs(60);
/// The Ready reason tells a fault's end within this.
const SIGNAL: Duration = Duration::from_secs(10);
const WORKER: &str = "astro-agent-worker-default-worker";
const BINDING: &str = "agents";
const SECRET: &str = "agents-airflow";
const LEASE_NS: &str = "aso-system";
/// What the operator logs in these tests: its own debug lines and the watcher's errors (which
/// kube logs at debug), to count failed calls and see the 410s.
const RUST_LOG: &str = "info,airflow_secrets_operator=debug,kube_runtime::watcher=debug";

// ---------------------------------------------------------------------------------------------
// The ground's components

fn component_sh(args: &[&str]) {
    let script = repo_root().join("tests/ground/component.sh");
    let state = ground_var("ASO_GROUND_DIR");
    let mut all = vec![state.as_str()];
    all.extend_from_slice(args);
    run(script.to_str().unwrap(), &all);
}

/// A component of the ground stopped by a test; started again when dropped if the test did not
/// (a failed scenario must not leave the control plane down for the next).
struct Stopped {
    name: &'static str,
    started: bool,
}

impl Stopped {
    /// SIGKILLs the component (a crash).
    async fn kill(name: &'static str) -> Stopped {
        tokio::task::spawn_blocking(move || component_sh(&["stop", name, "KILL"]))
            .await
            .unwrap();
        Stopped {
            name,
            started: false,
        }
    }

    /// Starts it again with its original command line (and `extra` arguments); returns once it
    /// is healthy.
    async fn start(mut self, extra: &[&str]) {
        let mut args = vec!["start".to_string(), self.name.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            component_sh(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .await
        .unwrap();
        self.started = true;
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.started {
            component_sh(&["start", self.name]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy between the operator and the API server that a test can cut (a partition).

struct Partition {
    port: u16,
    up: Arc<AtomicBool>,
    /// Connections accepted while cut (each one a call the operator attempted), by time.
    refused: Arc<Mutex<Vec<Instant>>>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: String) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let live = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (u, r, l) = (up.clone(), refused.clone(), live.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !u.load(Ordering::SeqCst) {
                    r.lock().unwrap().push(Instant::now());
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut live = l.lock().unwrap();
                live.retain(|h| !h.is_finished());
                live.push(handle.abort_handle());
            }
        });
        Partition {
            port,
            up,
            refused,
            live,
            task,
        }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn refused(&self) -> Vec<Instant> {
        self.refused.lock().unwrap().clone()
    }

    /// A copy of `kubeconfig` whose server is this proxy.
    fn kubeconfig(&self, kubeconfig: &str) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("a server in the kubeconfig")
            .to_string();
        let out = std::env::temp_dir().join(format!("aso-partition-{}.kubeconfig", self.port));
        std::fs::write(
            &out,
            text.replace(&server, &format!("https://127.0.0.1:{}", self.port)),
        )
        .unwrap();
        out
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let kubeconfig =
            std::env::temp_dir().join(format!("aso-partition-{}.kubeconfig", self.port));
        let _ = std::fs::remove_file(kubeconfig);
        self.task.abort();
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

fn api_server_address() -> String {
    let text = std::fs::read_to_string(ground_var("KUBECONFIG")).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the API server's address")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The rig: an agent release, three secrets, the operator, and (optionally) one synced binding.

struct Rig {
    client: kube::Client,
    ns: String,
    prefix: String,
    sm: aws_sdk_secretsmanager::Client,
    proxy: FaultProxy,
    /// The operator's kubeconfig (the chart's ServiceAccount; through a partition when asked).
    kubeconfig: PathBuf,
    partition: Option<Partition>,
    op: Option<Operator>,
    data: BTreeMap<String, String>,
    replicasets: usize,
    revision: u64,
}

#[derive(Default)]
struct Opts {
    /// The operator reaches the API server through a [`Partition`].
    partition: bool,
    /// Create and sync the binding.
    binding: bool,
}

impl Rig {
    async fn start(test: &str, opts: Opts) -> Rig {
        let client = client().await;
        install_crds(&client).await;
        let ns = namespace(&client, test).await;
        helm_install_agent(
            &ns,
            "astro-agent",
            "resourceNamePrefix: astro-agent\nworkers:\n  - {name: default-worker}\n",
        );
        let sm = secrets_manager().await;
        let prefix = format!("ctl-{ns}");
        for (name, value) in [
            ("connections/db", "postgresql://u:p@db:5432/app"),
            ("connections/api", "http://api.example:8080"),
            ("variables/token", "t0ken"),
        ] {
            put_secret(&sm, &format!("{prefix}/{name}"), value).await;
        }
        let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
        let operator_kubeconfig = ground_var("ASO_OPERATOR_KUBECONFIG");
        let partition = if opts.partition {
            Some(Partition::start(api_server_address()).await)
        } else {
            None
        };
        let kubeconfig = match &partition {
            Some(p) => p.kubeconfig(&operator_kubeconfig),
            None => PathBuf::from(operator_kubeconfig),
        };
        let mut rig = Rig {
            client,
            ns,
            prefix,
            sm,
            proxy,
            kubeconfig,
            partition,
            op: None,
            data: BTreeMap::new(),
            replicasets: 0,
            revision: 0,
        };
        rig.op = Some(rig.operator(&[], &[]));
        if opts.binding {
            rig.bind().await;
        }
        rig
    }

    fn operator(&self, args: &[&str], envs: &[(&str, &str)]) -> Operator {
        let mut all = vec![("RUST_LOG", RUST_LOG)];
        all.extend_from_slice(envs);
        Operator::start_in_with(&[&self.ns], &self.kubeconfig, args, &all)
    }

    fn op(&self) -> &Operator {
        self.op.as_ref().expect("the operator runs")
    }

    fn binding(&self, name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name},
            "spec": {
                "source": {"endpoint": self.proxy.endpoint()},
                "discovery": {
                    "connectionsPrefix": format!("{}/connections", self.prefix),
                    "variablesPrefix": format!("{}/variables", self.prefix)
                },
                "target": {"workloads": {"helmRelease": "astro-agent"}},
                "refreshInterval": "1s"
            }
        })
    }

    /// Applies the binding and waits until it is synced and the operator quiet; records what
    /// every later sample is compared with.
    async fn bind(&mut self) {
        apply_binding(&self.client, &self.ns, self.binding(BINDING)).await;
        self.synced(T).await;
        self.op().quiet().await;
        self.data = secret_text(&self.client, &self.ns, SECRET)
            .await
            .expect("Secret");
        assert_eq!(self.data.len(), 3, "three entries synced: {:?}", self.data);
        self.replicasets = replicasets(&self.client, &self.ns, WORKER).await.len();
        assert!(self.replicasets >= 2, "the injection rolled the worker out");
        self.revision = revision(&self.client, &self.ns).await;
    }

    /// Waits until the binding's Ready condition is True / Synced for its current generation.
    async fn synced(&self, timeout: Duration) -> Duration {
        let start = Instant::now();
        eventually("Ready True / Synced", timeout, || async {
            let b = Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(
                self.client.clone(),
                &self.ns,
            )
            .get(BINDING)
            .await
            .ok()?;
            let s = b.status?;
            let c = s.conditions.iter().find(|c| c.type_ == "Ready")?;
            (c.status == "True"
                && c.reason == "Synced"
                && s.observed_generation == b.metadata.generation)
                .then_some(())
        })
        .await;
        start.elapsed()
    }

    /// The data the Secret holds once `connections/db` is changed to `value`.
    fn data_with_db(&self, value: &str) -> BTreeMap<String, String> {
        let mut d = self.data.clone();
        let old = d.insert("AIRFLOW_CONN_DB".into(), value.into());
        assert!(old.is_some(), "AIRFLOW_CONN_DB was synced: {:?}", self.data);
        d
    }

    async fn change_db(&self, value: &str) {
        self.sm
            .put_secret_value()
            .secret_id(format!("{}/connections/db", self.prefix))
            .secret_string(value)
            .send()
            .await
            .expect("PutSecretValue");
    }

    /// Waits until the managed Secret holds `data` and the worker carries its content hash.
    async fn delivered(&self, data: &BTreeMap<String, String>, timeout: Duration) -> Duration {
        let start = Instant::now();
        eventually("the change delivered", timeout, || async {
            let secret = Api::<Secret>::namespaced(self.client.clone(), &self.ns)
                .get(SECRET)
                .await
                .ok()?;
            if &text_of(&secret) != data {
                return None;
            }
            let hash = secret
                .annotations()
                .get("airflow-secrets.io/content-hash")?
                .clone();
            let d = Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
                .get(WORKER)
                .await
                .ok()?;
            let carried = template_annotations(&d)
                .get(&format!("content-hash.airflow-secrets.io/{BINDING}"))
                .cloned();
            (carried.as_ref() == Some(&hash)).then_some(())
        })
        .await;
        start.elapsed()
    }

    /// Rollouts of the worker since the rig settled, once the controllers are done: waits until
    /// the revision reached `at_least`, then until it holds still (operator quiet, 3 s). Returns
    /// (revisions, new ReplicaSets).
    async fn rollouts(&self, at_least: u64) -> (u64, usize) {
        eventually(
            &format!("the worker at revision {}", self.revision + at_least),
            T,
            || async {
                (revision(&self.client, &self.ns).await >= self.revision + at_least).then_some(())
            },
        )
        .await;
        if let Some(op) = &self.op {
            op.quiet().await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let revisions = revision(&self.client, &self.ns).await - self.revision;
        let sets = replicasets(&self.client, &self.ns, WORKER).await.len() - self.replicasets;
        (revisions, sets)
    }

    fn monitor(&self) -> Monitor {
        Monitor::start(self.client.clone(), self.ns.clone())
    }
}

fn template_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

fn text_of(s: &Secret) -> BTreeMap<String, String> {
    s.data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

async fn revision(client: &kube::Client, ns: &str) -> u64 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(WORKER)
        .await
        .expect("the worker Deployment")
        .annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .expect("a revision")
}

/// When, and what the managed Secret held (None: missing).
type Sample = (Instant, Option<BTreeMap<String, String>>);

/// Samples the managed Secret every 200 ms (a failed read says nothing: no sample).
struct Monitor {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Monitor {
    fn start(client: kube::Client, ns: String) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let secrets = Api::<Secret>::namespaced(client, &ns);
            let mut samples = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let read = tokio::time::timeout(Duration::from_secs(2), secrets.get_opt(SECRET));
                if let Ok(Ok(s)) = read.await {
                    samples.push((Instant::now(), s.as_ref().map(text_of)));
                }
            }
            samples
        });
        Monitor { stop, task }
    }

    /// Stops and checks: every sample shows `before`, then from some point on `after` (never
    /// emptied, never a third state, never back). The number of samples.
    async fn check(
        self,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.task.await.expect("monitor");
        assert!(samples.len() > 20, "polled throughout: {}", samples.len());
        let mut changed = false;
        for (at, data) in &samples {
            let data = data.as_ref().unwrap_or_else(|| {
                panic!("the managed Secret was missing at {at:?}");
            });
            if data == after {
                changed = true;
            } else {
                assert!(
                    !changed && data == before,
                    "the managed Secret showed {data:?} at {at:?} (before: {before:?}, after: {after:?})"
                );
            }
        }
        samples.len()
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's log: failed calls while degraded

/// Failed calls the operator logged between two times: (failed reconciles, failed watch calls,
/// most in any one second).
fn failures_logged(log: &str, from: SystemTime, to: SystemTime) -> (usize, usize, usize) {
    let (mut reconciles, mut watches) = (0, 0);
    let mut seconds: BTreeMap<i64, usize> = BTreeMap::new();
    for line in log.lines() {
        let line = strip_ansi(line);
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        else {
            continue;
        };
        let at = SystemTime::from(at);
        if at < from || at > to {
            continue;
        }
        let watch = line.contains("kube_runtime::watcher") && line.contains("error");
        let reconcile = line.contains("reconcile error");
        if watch {
            watches += 1;
        }
        if reconcile {
            reconciles += 1;
        }
        if watch || reconcile {
            let s = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
            *seconds.entry(s).or_default() += 1;
        }
    }
    (
        reconciles,
        watches,
        seconds.values().copied().max().unwrap_or(0),
    )
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One row of the reliability table.
struct Row {
    scenario: String,
    outcome: String,
    rollouts: String,
    calls: String,
    signal: String,
    recover: String,
}

fn print_row(r: &Row) {
    println!(
        "\n| scenario | outcome | data lost | spurious rollouts | calls while degraded | Ready reason after fault start | time to recover |\n|---|---|---|---|---|---|---|\n| {} | {} | none | {} | {} | {} | {} |",
        r.scenario, r.outcome, r.rollouts, r.calls, r.signal, r.recover
    );
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A control-plane component crashes (SIGKILL) while a reconcile is in flight: the binding has
/// read a changed secret's new version and waits for its value (Secrets Manager answers 3 s
/// late), so that it writes while the component is down; it is started again after `hold`.
async fn restart_mid_reconcile(test: &str, component: &'static str, hold: Duration) -> Row {
    let rig = Rig::start(
        test,
        Opts {
            binding: true,
            ..Default::default()
        },
    )
    .await;
    let monitor = rig.monitor();
    let new = "postgresql://u:p@db-2:5432/app";
    let after = rig.data_with_db(new);
    rig.proxy.set(Fault::Slow(Duration::from_secs(3)));
    let changed = Instant::now();
    rig.change_db(new).await;
    // The new version is seen and its value read: the reconcile is in flight.
    eventually("the changed value being read", T, || async {
        rig.proxy
            .calls_between(changed, Instant::now())
            .iter()
            .any(|c| c.operation == "BatchGetSecretValue")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fault, wall_fault) = (Instant::now(), SystemTime::now());
    let stopped = Stopped::kill(component).await;
    tokio::time::sleep(hold).await;
    stopped.start(&[]).await;
    let (back, wall_back) = (Instant::now(), SystemTime::now());
    rig.proxy.set(Fault::Pass);
    let delivered = rig.delivered(&after, T).await;
    let ready = rig.synced(T).await;
    let recover = back.elapsed();
    let (revisions, sets) = rig.rollouts(1).await;
    let samples = monitor.check(&rig.data, &after).await;
    let log = rig.op().logs();
    let (reconciles, watches, peak) = failures_logged(&log, wall_fault, wall_back);
    let outage = back.duration_since(fault);
    println!(
        "[{test}] {component} down {:.1} s (start to healthy included); change delivered {:.1} s and Ready {:.1} s after it was back; {samples} samples; revisions +{revisions}, ReplicaSets +{sets}; logged while down: {reconciles} failed reconciles, {watches} failed watch calls, at most {peak} in one second",
        outage.as_secs_f64(),
        delivered.as_secs_f64(),
        ready.as_secs_f64()
    );
    assert_eq!(
        (revisions, sets),
        (1, 1),
        "one rollout for the one change, no spurious one"
    );
    assert!(
        recover <= SIGNAL,
        "recovered {recover:?} after the {component} was back"
    );
    // Backoff: the binding retries at 1, 2, 4 … s, each watch with its own backoff.
    assert!(
        peak <= 10,
        "no burst of retries: {peak} failures in one second"
    );
    assert!(
        (reconciles as f64) <= outage.as_secs_f64() + 2.0,
        "failed reconciles back off: {reconciles} in {outage:?}"
    );
    delete_namespace(&rig.client, &rig.ns).await;
    Row {
        scenario: format!(
            "{component} SIGKILLed mid-reconcile (a changed value being read), started again after {} s",
            hold.as_secs()
        ),
        outcome: "Secret kept, then the change delivered by itself: 1 rollout for it".into(),
        rollouts: "0".into(),
        calls: format!(
            "{reconciles} failed reconciles, {watches} failed watch calls in {:.0} s (≤ {peak}/s)",
            outage.as_secs_f64()
        ),
        signal: "— (status lives in the API that is down)".into(),
        recover: format!("{} (change delivered {})", secs(recover), secs(delivered)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_mid_reconcile() {
    let _serial = SERIAL.lock().await;
    let row =
        restart_mid_reconcile("ctl-apiserver", "kube-apiserver", Duration::from_secs(4)).await;
    print_row(&row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "longer target: `cargo test --test control_plane_faults -- --include-ignored --nocapture`"]
async fn etcd_restart_mid_reconcile() {
    let _serial = SERIAL.lock().await;
    let row = restart_mid_reconcile("ctl-etcd", "etcd", Duration::from_secs(5)).await;
    print_row(&row);
}

/// The operator is cut off from the API server (its connections dropped) while its binding's
/// spec changes and the API server restarts: when it reconnects, its watches resume from a
/// resource version the new API server's watch cache does not hold (410 Gone), re-list, and the
/// change missed meanwhile is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_watch_is_relisted_and_catches_up() {
    let _serial = SERIAL.lock().await;
    let test = "ctl-watch-410";
    let rig = Rig::start(
        test,
        Opts {
            partition: true,
            binding: true,
        },
    )
    .await;
    let partition = rig.partition.as_ref().unwrap();
    let monitor = rig.monitor();
    put_secret(&rig.sm, &format!("{}/extra/colour", rig.prefix), "blue").await;
    let mut after = rig.data.clone();
    after.insert("AIRFLOW_VAR_COLOUR".into(), "blue".into());
    let (cut, wall_cut) = (Instant::now(), SystemTime::now());
    partition.cut();
    // Missed by the operator: a new entry in the binding.
    let mut changed = rig.binding(BINDING);
    changed["spec"]["variables"] = json!([
        {"key": "colour", "secretId": format!("{}/extra/colour", rig.prefix)}
    ]);
    apply_binding(&rig.client, &rig.ns, changed).await;
    // A fresh watch cache: resource versions from before the restart have expired.
    Stopped::kill("kube-apiserver").await.start(&[]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (healed, wall_healed) = (Instant::now(), SystemTime::now());
    partition.heal();
    let delivered = rig.delivered(&after, T).await;
    let ready = rig.synced(T).await;
    let recover = healed.elapsed();
    let (revisions, sets) = rig.rollouts(1).await;
    let samples = monitor.check(&rig.data, &after).await;
    let log = rig.op().logs();
    let gone = log
        .lines()
        .filter(|l| l.contains("410") && l.contains("kube_runtime::watcher"))
        .count();
    let attempts = partition.refused().len();
    let (reconciles, watches, peak) = failures_logged(&log, wall_cut, wall_healed);
    let down = healed.duration_since(cut);
    println!(
        "[{test}] cut off {:.1} s: {attempts} connections refused, {reconciles} failed reconciles, {watches} failed watch calls logged (≤ {peak}/s); {gone} watch events 410 Gone after; change delivered {:.1} s, Ready {:.1} s after reconnecting; revisions +{revisions}, ReplicaSets +{sets}; {samples} samples",
        down.as_secs_f64(),
        delivered.as_secs_f64(),
        ready.as_secs_f64()
    );
    assert!(
        gone >= 1,
        "a watch resumed with an expired resource version (410 Gone)"
    );
    assert_eq!((revisions, sets), (1, 1), "one rollout for the one change");
    assert!(
        recover <= SIGNAL,
        "caught up {recover:?} after reconnecting"
    );
    // Each of the operator's watches (bindings, Deployments, Secrets, sources, namespaces; one
    // more for a reconcile's own request) retries after 0.4–0.8 s, then doubling: at most
    // 2 + log2(1 + down / 0.4 s) attempts each. A retry storm would be hundreds.
    let per_watch = 2.0 + (1.0 + down.as_secs_f64() / 0.4).log2().ceil();
    assert!(
        attempts as f64 <= 6.0 * per_watch,
        "reconnects back off: {attempts} in {down:?} (bound {})",
        6.0 * per_watch
    );
    print_row(&Row {
        scenario: format!(
            "operator cut off from the API server {:.0} s while its binding changed and the API server restarted: watches resume with an expired resource version",
            down.as_secs_f64()
        ),
        outcome: format!(
            "410 Gone ({gone} watches), re-listed; the missed change applied: 1 rollout for it"
        ),
        rollouts: "0".into(),
        calls: format!("{attempts} connection attempts ({watches} failed watch calls logged)"),
        signal: "— (cut off from status)".into(),
        recover: format!("{} (change delivered {})", secs(recover), secs(delivered)),
    });
    delete_namespace(&rig.client, &rig.ns).await;
}

/// A binding deleted while its first sync is in flight (Secrets Manager answers 3 s late): the
/// finalizer waits for the sync, releases what it wrote, and leaves nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_deleted_mid_sync_leaves_nothing() {
    let _serial = SERIAL.lock().await;
    let test = "ctl-delete-mid-sync";
    let rig = Rig::start(test, Opts::default()).await;
    let before = revision(&rig.client, &rig.ns).await;
    let sets = replicasets(&rig.client, &rig.ns, WORKER).await.len();
    rig.proxy.set(Fault::Slow(Duration::from_secs(3)));
    let created = Instant::now();
    apply_binding(&rig.client, &rig.ns, rig.binding(BINDING)).await;
    eventually("the first sync in flight", T, || async {
        (!rig.proxy.calls_between(created, Instant::now()).is_empty()).then_some(())
    })
    .await;
    let bindings = Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(
        rig.client.clone(),
        &rig.ns,
    );
    let deleted = Instant::now();
    bindings
        .delete(BINDING, &DeleteParams::default())
        .await
        .expect("delete the binding");
    eventually("the binding gone", T, || async {
        matches!(bindings.get_opt(BINDING).await, Ok(None)).then_some(())
    })
    .await;
    let gone = deleted.elapsed();
    rig.proxy.set(Fault::Pass);
    rig.op().quiet().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let secret = Api::<Secret>::namespaced(rig.client.clone(), &rig.ns)
        .get_opt(SECRET)
        .await
        .unwrap();
    let d = Api::<Deployment>::namespaced(rig.client.clone(), &rig.ns)
        .get(WORKER)
        .await
        .unwrap();
    let refs = env_refs(&d, "worker");
    let annotations = template_annotations(&d);
    let revisions = revision(&rig.client, &rig.ns).await - before;
    let new_sets = replicasets(&rig.client, &rig.ns, WORKER).await.len() - sets;
    let calls = rig.proxy.calls_between(deleted, Instant::now()).len();
    println!(
        "[{test}] deleted {:.1} s after creation, gone {:.1} s later; worker revisions +{revisions}, ReplicaSets +{new_sets}; {calls} Secrets Manager calls after the delete",
        deleted.duration_since(created).as_secs_f64(),
        gone.as_secs_f64()
    );
    assert!(secret.is_none(), "the managed Secret was deleted");
    assert!(
        refs.values().all(|(s, _)| s != SECRET),
        "no env of the binding left on the worker: {refs:?}"
    );
    assert!(
        !annotations
            .keys()
            .any(|k| k.starts_with("content-hash.airflow-secrets.io/")),
        "no content-hash annotation left: {annotations:?}"
    );
    // Delivered and released (2) is correct; a deletion that won the race rolls nothing (0).
    assert!(
        revisions == 0 || revisions == 2,
        "either nothing delivered, or delivered and released: {revisions} revisions"
    );
    assert!(gone <= Duration::from_secs(15), "released in {gone:?}");
    print_row(&Row {
        scenario: "binding deleted while its first sync is in flight (Secrets Manager 3 s late)"
            .into(),
        outcome: format!(
            "finalizer released it: no Secret, no env, no annotation left; worker revisions +{revisions} ({})",
            if revisions == 0 {
                "nothing was delivered"
            } else {
                "delivered, then released"
            }
        ),
        rollouts: "0".into(),
        calls: format!("{calls} Secrets Manager calls after the delete"),
        signal: "—".into(),
        recover: format!("gone {}", secs(gone)),
    });
    delete_namespace(&rig.client, &rig.ns).await;
}

/// The operator SIGKILLed right after it wrote a changed Secret, before or while the worker
/// rolls out, and started again: the worker ends with exactly one new ReplicaSet for the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_sigkilled_mid_rollout_rolls_out_once() {
    let _serial = SERIAL.lock().await;
    let test = "ctl-sigkill";
    let mut rig = Rig::start(
        test,
        Opts {
            binding: true,
            ..Default::default()
        },
    )
    .await;
    let monitor = rig.monitor();
    let new = "postgresql://u:p@db-3:5432/app";
    let after = rig.data_with_db(new);
    let secrets = Api::<Secret>::namespaced(rig.client.clone(), &rig.ns);
    rig.change_db(new).await;
    // Killed as soon as the Secret holds the change: the worker's write is debounced after it.
    loop {
        if let Ok(s) = secrets.get(SECRET).await
            && text_of(&s) == after
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.op.take().unwrap().stop();
    let killed = Instant::now();
    let revision_at_kill = revision(&rig.client, &rig.ns).await - rig.revision;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    rig.op = Some(rig.operator(&[], &[]));
    let delivered = rig.delivered(&after, T).await;
    let ready = rig.synced(T).await;
    let (revisions, sets) = rig.rollouts(1).await;
    let samples = monitor.check(&rig.data, &after).await;
    let calls = rig.proxy.calls_between(restarted, Instant::now());
    let values = calls
        .iter()
        .filter(|c| c.operation != "ListSecrets")
        .count();
    println!(
        "[{test}] killed with the worker at revision +{revision_at_kill}; down {:.1} s; change on the worker {:.1} s and Ready {:.1} s after the restart; revisions +{revisions}, ReplicaSets +{sets}; {} Secrets Manager calls after the restart ({values} not listings); {samples} samples",
        restarted.duration_since(killed).as_secs_f64(),
        delivered.as_secs_f64(),
        ready.as_secs_f64(),
        calls.len()
    );
    assert_eq!(
        (revisions, sets),
        (1, 1),
        "exactly one new ReplicaSet for the change"
    );
    assert!(
        delivered.max(ready) <= SIGNAL,
        "recovered within {SIGNAL:?}"
    );
    assert_eq!(values, 0, "a restart reads no value the Secret holds");
    print_row(&Row {
        scenario: format!(
            "operator SIGKILLed right after writing a changed Secret (worker at revision +{revision_at_kill}), restarted 2 s later"
        ),
        outcome: "the restarted operator completed the rollout: exactly 1 new ReplicaSet".into(),
        rollouts: "0".into(),
        calls: format!(
            "none while down; {} ListSecrets after the restart, no value read",
            calls.len()
        ),
        signal: "—".into(),
        recover: secs(delivered.max(ready)),
    });
    delete_namespace(&rig.client, &rig.ns).await;
}

/// Two replicas with leader election; the leader is SIGKILLed: the follower takes over within
/// the lease's duration plus a few seconds, rolls nothing out by itself, reads no value again,
/// and then delivers a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "longer target: `cargo test --test control_plane_faults -- --include-ignored --nocapture`"]
async fn leader_sigkilled_follower_takes_over() {
    let _serial = SERIAL.lock().await;
    let test = "ctl-leader";
    let mut rig = Rig::start(test, Opts::default()).await;
    rig.op.take().unwrap().stop();
    let lease_name = format!("aso-{}", rig.ns);
    let lease_seconds = 6u64;
    let duration = lease_seconds.to_string();
    let args = [
        "--leader-election",
        "--lease-namespace",
        LEASE_NS,
        "--lease-name",
        &lease_name,
        "--lease-duration-seconds",
        &duration,
    ];
    let a = rig.operator(&args, &[("POD_NAME", "replica-a")]);
    eventually("replica-a leads", T, || async {
        a.logs().contains("became the leader").then_some(())
    })
    .await;
    let b = rig.operator(&args, &[("POD_NAME", "replica-b")]);
    eventually("replica-b waits for the lease", T, || async {
        b.logs()
            .contains("waiting to become the leader")
            .then_some(())
    })
    .await;
    rig.op = Some(a);
    rig.bind().await;
    let holder = || async {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(rig.client.clone(), LEASE_NS)
            .get(&lease_name)
            .await
            .ok()?
            .spec?
            .holder_identity
    };
    assert_eq!(holder().await.as_deref(), Some("replica-a"));
    assert!(
        !b.logs().contains("starting controller"),
        "the follower does not reconcile"
    );
    let monitor = rig.monitor();
    rig.op.take().unwrap().stop();
    let killed = Instant::now();
    eventually("replica-b leads", T, || async {
        b.logs().contains("became the leader").then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    assert_eq!(holder().await.as_deref(), Some("replica-b"));
    rig.op = Some(b);
    // Taking over changes nothing: no write, no value read, no rollout.
    rig.op().quiet().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sm_while_leaderless = rig.proxy.calls_between(killed, killed + took_over).len();
    let since = rig.proxy.calls_between(killed, Instant::now());
    let values = since
        .iter()
        .filter(|c| c.operation != "ListSecrets")
        .count();
    let revisions_after_takeover = revision(&rig.client, &rig.ns).await - rig.revision;
    let ready = rig.synced(SIGNAL).await;
    // The new leader delivers a change.
    let new = "postgresql://u:p@db-4:5432/app";
    let after = rig.data_with_db(new);
    rig.change_db(new).await;
    let delivered = rig.delivered(&after, T).await;
    let (revisions, sets) = rig.rollouts(1).await;
    let samples = monitor.check(&rig.data, &after).await;
    println!(
        "[{test}] lease {lease_seconds} s: replica-b led {:.1} s after replica-a was killed; {sm_while_leaderless} Secrets Manager calls without a leader, {} after ({values} not listings); revisions +{revisions_after_takeover} after the takeover; a change then delivered in {:.1} s (revisions +{revisions}, ReplicaSets +{sets}); {samples} samples",
        took_over.as_secs_f64(),
        since.len(),
        delivered.as_secs_f64()
    );
    assert!(
        took_over <= Duration::from_secs(lease_seconds + 5),
        "took over in {took_over:?}"
    );
    assert_eq!(revisions_after_takeover, 0, "no rollout from the takeover");
    assert_eq!(values, 0, "the new leader read no value the Secret holds");
    assert_eq!(
        (revisions, sets),
        (1, 1),
        "one rollout for the later change"
    );
    assert!(ready <= SIGNAL);
    print_row(&Row {
        scenario: format!(
            "2 replicas, leader election (lease {lease_seconds} s): leader SIGKILLed"
        ),
        outcome: "the follower took over; nothing rewritten, no value re-read; a later change delivered once".into(),
        rollouts: "0".into(),
        calls: format!("{sm_while_leaderless} (no leader: nobody calls)"),
        signal: "— (Ready stays True / Synced)".into(),
        recover: format!("took over in {}", secs(took_over)),
    });
    delete_namespace(&rig.client, &rig.ns).await;
}

async fn namespace_phase(client: &kube::Client, ns: &str) -> Option<String> {
    Api::<Namespace>::all(client.clone())
        .get_opt(ns)
        .await
        .ok()
        .flatten()
        .map(|n| n.status.and_then(|s| s.phase).unwrap_or_default())
}

/// Uninstalling the operator's chart while bindings exist. In the documented order (delete the
/// bindings, then uninstall) the operator releases them and their namespace deletes cleanly; in
/// the other order nothing removes the bindings' finalizer, so deleting their namespace hangs
/// until the documented recovery removes it (docs/reliability.md, "Uninstall").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_order_and_stuck_namespace_recovery() {
    let _serial = SERIAL.lock().await;
    let client = client().await;
    install_crds(&client).await;
    let helm = ground_var("ASO_HELM");
    let kubectl = ground_var("ASO_KUBECTL");
    let system = namespace(&client, "ctl-uninstall-op").await;
    let release = "aso-uninstall";
    let chart = repo_root().join("charts/airflow-secrets-operator");
    run(
        &helm,
        &[
            "install",
            release,
            chart.to_str().unwrap(),
            "-n",
            &system,
            "--set",
            "image.repository=example.invalid/airflow-secrets-operator",
            "--set",
            "sources.allowInline=true",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let sa = run(
        &kubectl,
        &[
            "-n",
            &system,
            "get",
            "deployment",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "jsonpath={.items[0].spec.template.spec.serviceAccountName}",
        ],
    );
    let kubeconfig = impersonating_kubeconfig(&system, sa.trim());
    let sm = secrets_manager().await;
    let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
    let mut apps = Vec::new();
    for which in ["ordered", "reversed"] {
        let ns = namespace(&client, &format!("ctl-uninstall-{which}")).await;
        helm_install_agent(
            &ns,
            "astro-agent",
            "resourceNamePrefix: astro-agent\nworkers:\n  - {name: default-worker}\n",
        );
        put_secret(&sm, &format!("ctl-{ns}/connections/db"), "postgresql://db").await;
        apps.push(ns);
    }
    let op = Operator::start_in_with(
        &[&apps[0], &apps[1]],
        &kubeconfig,
        &[],
        &[("RUST_LOG", RUST_LOG)],
    );
    for ns in &apps {
        apply_binding(
            &client,
            ns,
            json!({
                "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
                "metadata": {"name": BINDING},
                "spec": {
                    "source": {"endpoint": proxy.endpoint()},
                    "discovery": {"connectionsPrefix": format!("ctl-{ns}/connections")},
                    "target": {"workloads": {"helmRelease": "astro-agent"}},
                    "refreshInterval": "1s"
                }
            }),
        )
        .await;
        eventually("Ready", T, || async {
            let (s, r) = ready_reason(&client, ns, BINDING).await?;
            (s == "True" && r == "Synced").then_some(())
        })
        .await;
    }
    op.quiet().await;
    let (ordered, reversed) = (apps[0].clone(), apps[1].clone());

    // The documented order: bindings first (the operator releases them), then the chart.
    let bindings = |ns: &str| {
        Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(client.clone(), ns)
    };
    let start = Instant::now();
    bindings(&ordered)
        .delete(BINDING, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the binding released", T, || async {
        matches!(bindings(&ordered).get_opt(BINDING).await, Ok(None)).then_some(())
    })
    .await;
    let released = start.elapsed();
    let d = Api::<Deployment>::namespaced(client.clone(), &ordered)
        .get(WORKER)
        .await
        .unwrap();
    assert!(
        env_refs(&d, "worker").values().all(|(s, _)| s != SECRET),
        "the worker carries none of the binding's env"
    );
    run(&helm, &["uninstall", release, "-n", &system, "--wait"]);
    // Uninstalled: its pod goes, so does the operator.
    op.stop();
    let start = Instant::now();
    delete_namespace(&client, &ordered).await;
    eventually("the namespace deleted", T, || async {
        namespace_phase(&client, &ordered)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let ordered_gone = start.elapsed();

    // The other order: the chart is gone, the binding stays with its finalizer, and its
    // namespace's deletion waits for it.
    let start = Instant::now();
    delete_namespace(&client, &reversed).await;
    // The namespace controller deletes the binding; its finalizer keeps it.
    let held = eventually("the binding deleted by the namespace", T, || async {
        let b = bindings(&reversed).get(BINDING).await.ok()?;
        b.metadata.deletion_timestamp.is_some().then_some(b)
    })
    .await;
    assert!(
        held.finalizers()
            .iter()
            .any(|f| f == "airflow-secrets.io/cleanup")
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        namespace_phase(&client, &reversed).await.as_deref(),
        Some("Terminating"),
        "without the operator, the binding's finalizer holds the namespace"
    );
    // The documented recovery for a namespace being deleted: remove the finalizer (its
    // Deployments and Secrets are deleted with the namespace anyway).
    run(
        &kubectl,
        &[
            "-n",
            &reversed,
            "patch",
            "airflowsecretbinding",
            BINDING,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
        ],
    );
    let patched = Instant::now();
    eventually("the stuck namespace deleted", T, || async {
        namespace_phase(&client, &reversed)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let recovered = patched.elapsed();
    println!(
        "[ctl-uninstall] bindings first: binding released in {:.1} s, namespace deleted {:.1} s after the uninstall; chart first: namespace still Terminating after {:.0} s, deleted {:.1} s after the finalizer was removed",
        released.as_secs_f64(),
        ordered_gone.as_secs_f64(),
        patched.duration_since(start).as_secs_f64(),
        recovered.as_secs_f64()
    );
    print_row(&Row {
        scenario: "chart uninstalled while bindings exist, then their namespace deleted".into(),
        outcome: format!(
            "bindings deleted first (documented order): released in {}, namespace gone in {}; chart first: namespace Terminating until the binding's finalizer is removed by hand (documented), then gone in {}",
            secs(released),
            secs(ordered_gone),
            secs(recovered)
        ),
        rollouts: "0".into(),
        calls: "—".into(),
        signal: "—".into(),
        recover: "manual step needed in the wrong order".into(),
    });
    delete_namespace(&client, &system).await;
    let _ = std::fs::remove_file(&kubeconfig);
}
