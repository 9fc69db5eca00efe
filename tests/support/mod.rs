//! Shared helpers of the tests that run against the test ground (tests/ground/up.sh): a real
//! kube-apiserver + controller-manager + scheduler + kwok, the moto Secrets Manager emulator and
//! helm. `tests/run.sh` starts the ground and exports its coordinates; without them these tests
//! fail with a message saying so (they never skip).
#![allow(dead_code)]

pub mod faults;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

/// A variable the ground exports; its absence is a set-up error, not a reason to skip.
pub fn ground_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need the test ground. Run them with `tests/run.sh` \
             (or `source <state>/env` after `tests/ground/up.sh <state>`)."
        )
    })
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub async fn client() -> Client {
    ground_var("KUBECONFIG");
    Client::try_default()
        .await
        .expect("cannot build a client from KUBECONFIG")
}

/// A fresh namespace for one test, named after it plus a random suffix.
pub async fn namespace(client: &Client, test: &str) -> String {
    let suffix: u32 = rand_u32();
    let name = format!("{}-{:08x}", test.replace('_', "-"), suffix);
    let name = name.chars().take(63).collect::<String>();
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"aso-test": "true"}}
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create test namespace");
    name
}

pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Installs (server-side apply) the CRDs from `crds/` and waits until they are Established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = repo_root().join("crds");
    for entry in std::fs::read_dir(&dir).expect("read crds/") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = crd.name_any();
            crds.patch(
                &name,
                &PatchParams::apply("aso-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
            eventually(
                &format!("CRD {name} Established"),
                Duration::from_secs(30),
                || {
                    let crds = crds.clone();
                    let name = name.clone();
                    async move {
                        let crd = crds.get(&name).await.ok()?;
                        let established = crd
                            .status?
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True");
                        established.then_some(())
                    }
                },
            )
            .await;
        }
    }
}

/// Runs a command of the ground (helm, kubectl) and returns stdout, panicking with stderr on failure.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).unwrap()
}

/// `helm install` of the agent stand-in chart (tests/agent-chart) with the given values.
pub fn helm_install_agent(namespace: &str, release: &str, values_yaml: &str) {
    helm_agent("install", namespace, release, values_yaml, &[]);
}

pub fn helm_agent(verb: &str, namespace: &str, release: &str, values_yaml: &str, extra: &[&str]) {
    let helm = ground_var("ASO_HELM");
    let values = std::env::temp_dir().join(format!(
        "aso-values-{namespace}-{release}-{}.yaml",
        rand_u32()
    ));
    std::fs::write(&values, values_yaml).unwrap();
    let chart = repo_root().join("tests/agent-chart");
    let mut args = vec![
        verb,
        release,
        chart.to_str().unwrap(),
        "--namespace",
        namespace,
        "-f",
        values.to_str().unwrap(),
        "--wait",
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    run(&helm, &args);
    let _ = std::fs::remove_file(&values);
    let _ = std::fs::remove_file(values);
}

/// An AWS Secrets Manager client for the emulator, configured only through the standard
/// environment (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_REGION`, test credentials).
pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER");
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// Runs `program args…` with `input` on stdin and returns its stdout, panicking with `what` and
/// the program's stderr when it cannot start or fails.
pub fn pipe(program: &str, args: &[&str], input: &[u8], what: &str) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait for the child");
    assert!(
        out.status.success(),
        "{what}: {program} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The operator binary, running as a child process for one namespace, with the ground's
/// environment (kubeconfig, AWS emulator). Stopped when dropped; its log is printed on failure.
pub struct Operator {
    child: std::process::Child,
    pub log: PathBuf,
    /// `http://127.0.0.1:<port>` of /healthz, /readyz, /metrics.
    pub http: String,
}

impl Operator {
    pub fn start(namespace: &str) -> Operator {
        Self::start_with(namespace, &[], &[])
    }

    /// Starts the operator with extra arguments and environment.
    pub fn start_with(namespace: &str, args: &[&str], envs: &[(&str, &str)]) -> Operator {
        // The operator runs with exactly the rights of the chart's ServiceAccount.
        let kubeconfig = std::env::var("ASO_OPERATOR_KUBECONFIG").unwrap_or_else(|_| {
            panic!(
                "ASO_OPERATOR_KUBECONFIG is not set: run tests/ground/operator-rbac.sh <state> after up.sh (tests/run.sh does)"
            )
        });
        Self::spawn(
            &["--namespace", namespace],
            args,
            envs,
            std::path::Path::new(&kubeconfig),
            namespace,
        )
    }

    /// Starts the operator for a list of namespaces (`--namespaces a,b`) with `kubeconfig`'s
    /// identity.
    pub fn start_in(namespaces: &[&str], kubeconfig: &std::path::Path) -> Operator {
        Self::start_in_with(namespaces, kubeconfig, &[], &[])
    }

    /// [`Operator::start_in`] with extra arguments and environment.
    pub fn start_in_with(
        namespaces: &[&str],
        kubeconfig: &std::path::Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Operator {
        let list = namespaces.join(",");
        Self::spawn(
            &["--namespaces", &list],
            args,
            envs,
            kubeconfig,
            namespaces.first().copied().unwrap_or("all"),
        )
    }

    fn spawn(
        scope: &[&str],
        args: &[&str],
        envs: &[(&str, &str)],
        kubeconfig: &std::path::Path,
        tag: &str,
    ) -> Operator {
        let log = std::env::temp_dir().join(format!("aso-operator-{tag}-{}.log", rand_u32()));
        let file = std::fs::File::create(&log).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Most tests name the emulator (or a fault proxy) inline in spec.source.endpoint; those
        // of tenancy say otherwise.
        let inline: &[&str] = if args.iter().any(|a| a.starts_with("--allow-inline-sources")) {
            &[]
        } else {
            &["--allow-inline-sources=true"]
        };
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_airflow-secrets-operator"))
            .env("KUBECONFIG", kubeconfig)
            .arg("run")
            .args(scope)
            .args(["--http-address", &format!("127.0.0.1:{port}")])
            .args(inline)
            .args(args)
            .env("RUST_LOG", "info,airflow_secrets_operator=debug")
            .envs(envs.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the operator");
        Operator {
            child,
            log,
            http: format!("http://127.0.0.1:{port}"),
        }
    }

    /// GET of one of the operator's endpoints: (HTTP status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("{}{path}", self.http),
            ])
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The value of one metric line (`name{labels}`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// The sum of every series of a metric family whose labels contain `labels` (e.g.
    /// `namespace="x"`).
    pub fn metric_sum(&self, family: &str, labels: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(family)?;
                let (series, value) = rest.rsplit_once(' ')?;
                (series.starts_with('{') && series.contains(labels)).then_some(value)
            })
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// Waits until the operator has made no Deployment write for longer than its debounce.
    pub async fn quiet(&self) {
        let series = "airflow_secrets_workload_writes_total";
        let mut last = (self.metric(series), Instant::now());
        let start = Instant::now();
        while last.1.elapsed() < Duration::from_millis(2500) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the operator never went quiet"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.metric(series);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
    }

    /// The operator's exit status, once it has exited by itself within `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("poll the operator") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The operator process's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the operator's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- operator log ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        } else {
            // Kept only when the test failed: a passing run leaves nothing behind.
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// Writes a copy of the ground's kubeconfig (`KUBECONFIG`, the cluster admin) that impersonates
/// the ServiceAccount `namespace/name`, as `tests/ground/operator-rbac.sh` does for the chart's.
pub fn impersonating_kubeconfig(namespace: &str, name: &str) -> PathBuf {
    let admin = std::fs::read_to_string(ground_var("KUBECONFIG")).expect("read KUBECONFIG");
    let marker = "    client-key: ";
    assert!(admin.contains(marker), "KUBECONFIG names no client key");
    let mut out = String::new();
    for line in admin.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with(marker) {
            out.push_str(&format!(
                "    as: system:serviceaccount:{namespace}:{name}\n    as-groups: [system:serviceaccounts, system:serviceaccounts:{namespace}, system:authenticated]\n"
            ));
        }
    }
    let path =
        std::env::temp_dir().join(format!("aso-{namespace}-{name}-{}.kubeconfig", rand_u32()));
    std::fs::write(&path, out).unwrap();
    path
}

/// Creates or updates a secret in the emulator.
pub async fn put_secret(sm: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    match sm
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_exists_exception()) =>
        {
            sm.put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .expect("PutSecretValue");
        }
        Err(e) => panic!("CreateSecret {name}: {e:?}"),
    }
}

/// Applies a binding (server-side apply, as kubectl apply --server-side would).
pub async fn apply_binding(client: &Client, ns: &str, binding: serde_json::Value) {
    let api: Api<airflow_secrets_operator::api::AirflowSecretBinding> =
        Api::namespaced(client.clone(), ns);
    let name = binding["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply("aso-tests").force(),
        &Patch::Apply(binding),
    )
    .await
    .unwrap_or_else(|e| panic!("apply binding {name}: {e}"));
}

/// Decoded data of a Secret, if it exists.
pub async fn secret_text(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let s = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    Some(
        s.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect(),
    )
}

/// A Deployment of one container named `worker`, not from any Helm release.
pub async fn create_plain_deployment(client: &Client, ns: &str, name: &str) {
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "worker", "image": "example.invalid/w:1"}]}}
        }
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap_or_else(|e| panic!("create Deployment {name}: {e}"));
}

/// The pod template's spec of a Deployment.
pub fn pod(d: &k8s_openapi::api::apps::v1::Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a Deployment has a pod template")
}

/// Env entries of one container of a Deployment's pod template: name → (secret, key).
pub fn env_refs(
    d: &k8s_openapi::api::apps::v1::Deployment,
    container: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    let c = pod(d)
        .containers
        .iter()
        .find(|c| c.name == container)
        .unwrap();
    c.env
        .iter()
        .flatten()
        .filter_map(|e| {
            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
            Some((e.name.clone(), (r.name.clone(), r.key.clone())))
        })
        .collect()
}

pub async fn replicasets(
    client: &Client,
    ns: &str,
    deployment: &str,
) -> Vec<k8s_openapi::api::apps::v1::ReplicaSet> {
    Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(client.clone(), ns)
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|o| o.name == deployment))
        .collect()
}

pub async fn binding_status(
    client: &Client,
    ns: &str,
    name: &str,
) -> Option<airflow_secrets_operator::api::AirflowSecretBindingStatus> {
    Api::<airflow_secrets_operator::api::AirflowSecretBinding>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status
}

pub async fn ready_reason(client: &Client, ns: &str, name: &str) -> Option<(String, String)> {
    let s = binding_status(client, ns, name).await?;
    let c = s.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason))
}
