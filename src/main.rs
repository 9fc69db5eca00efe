use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use airflow_secrets_operator::api::Injection;
use clap::{Parser, Subcommand, ValueEnum};

/// Airflow connections, variables and config from AWS Secrets Manager, for Kubernetes.
#[derive(Parser)]
#[command(name = "airflow-secrets-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the current kubeconfig or the in-cluster config.
    Run {
        /// Watch only these namespaces, comma-separated (default: all namespaces). The operator
        /// then needs its rights in these namespaces only.
        #[arg(
            long,
            env = "WATCH_NAMESPACES",
            value_delimiter = ',',
            conflicts_with = "namespace"
        )]
        namespaces: Vec<String>,
        /// Watch only this namespace (`--namespaces` with one name).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080", env = "HTTP_ADDRESS")]
        http_address: std::net::SocketAddr,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
        log_format: LogFormat,
        /// Run only while holding the Lease `<lease-name>` in `--lease-namespace`, so that
        /// several replicas can run and one reconciles.
        #[arg(long, env = "LEADER_ELECTION")]
        leader_election: bool,
        #[arg(long, default_value = "airflow-secrets-operator", env = "LEASE_NAME")]
        lease_name: String,
        /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE).
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// Seconds a leader's lease lasts without renewal before another replica takes over.
        #[arg(long, default_value_t = 15, env = "LEASE_DURATION_SECONDS")]
        lease_duration_seconds: u64,
        /// Secrets Manager calls per second per source (token bucket; AWS throttles per
        /// operation, and every call is billed).
        #[arg(long, default_value_t = 20.0, env = "SECRETS_MANAGER_QPS")]
        secrets_manager_qps: f64,
        /// Calls a source may make at once before the rate applies.
        #[arg(long, default_value_t = 40.0, env = "SECRETS_MANAGER_BURST")]
        secrets_manager_burst: f64,
        /// Let bindings set an inline `spec.source` with `roleArn` or `endpoint` (and, with a
        /// default source, any `spec.source` field). Off: such bindings are refused (Ready
        /// False, `SourceRefused`, naming the field) and read nothing; they name an
        /// AirflowSecretSource instead.
        #[arg(long, env = "ALLOW_INLINE_SOURCES", default_value_t = false, action = clap::ArgAction::Set)]
        allow_inline_sources: bool,
        /// The AirflowSecretSource of bindings that set neither `spec.sourceRef` nor
        /// `spec.source` (default: none; they read with the operator's own identity).
        #[arg(long, env = "DEFAULT_SOURCE")]
        default_source: Option<String>,
        /// URL of an SQS queue that receives Secrets Manager change events from EventBridge
        /// (docs/events.md): changes then land in seconds; periodic refreshes stay. Empty: off.
        /// Only the leader consumes; never share one queue between two installations.
        #[arg(long, env = "SQS_QUEUE_URL")]
        sqs_queue_url: Option<String>,
        /// Region of the queue (default: the queue URL's, else the AWS default chain).
        #[arg(long, env = "SQS_REGION")]
        sqs_region: Option<String>,
        /// Role to assume for the queue (default: the operator's own identity).
        #[arg(long, env = "SQS_ROLE_ARN")]
        sqs_role_arn: Option<String>,
    },
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crd {
        /// Print the binding reference (Markdown) instead.
        #[arg(long)]
        reference: bool,
        /// Write one file per CRD into this directory (what `crds/` holds) instead of printing.
        #[arg(long, conflicts_with = "reference")]
        out_dir: Option<PathBuf>,
    },
    /// Dry-run binding files against Secrets Manager: the env names each workload would get,
    /// value hashes only, and what Airflow would not accept. Exit code 1 when an entry would not
    /// be injected, 2 when a file or Secrets Manager cannot be read. AWS credentials, region and
    /// endpoint come from the standard AWS environment and the binding's `spec.source`
    /// (`spec.sourceRef` is not followed: the files are read with your own identity).
    Render {
        /// Binding file(s), YAML; several documents per file allowed.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Deployments to select from, e.g. `helm template` output of the agent release.
        #[arg(long, conflicts_with = "cluster")]
        workloads: Option<PathBuf>,
        /// Select from the Deployments of the binding's namespace in the current cluster.
        #[arg(long)]
        cluster: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Read an agent values.yaml that configures Airflow's SecretsManagerBackend and print the
    /// equivalent AirflowSecretBinding.
    ImportValues {
        /// The agent chart's values.yaml.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Helm release name of the agents.
        #[arg(long, default_value = "astro-agent")]
        release: String,
        /// Name of the binding.
        #[arg(long, default_value = "agents")]
        name: String,
        /// Namespace of the binding (default: the values' `namespace`).
        #[arg(long)]
        namespace: Option<String>,
        /// How the agents get the values: through Airflow's KubernetesSecretsBackend reading
        /// labelled Secrets (rotations without restarts; needs the cncf-kubernetes provider >=
        /// 10.25.0 in the agent image), or as env vars.
        #[arg(long, value_enum, default_value_t = ImportInjection::KubernetesBackend)]
        injection: ImportInjection,
        #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ImportInjection {
    KubernetesBackend,
    Env,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Yaml,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd {
            reference: true, ..
        } => {
            print!("{}", airflow_secrets_operator::crd::reference_markdown());
            ExitCode::SUCCESS
        }
        Command::Crd {
            out_dir: Some(dir), ..
        } => match write_crds(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "error: could not write the CRDs into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        },
        Command::Crd { .. } => match airflow_secrets_operator::crd::all_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: could not render the CRDs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            namespaces,
            namespace,
            http_address,
            log_format,
            leader_election,
            lease_name,
            lease_namespace,
            lease_duration_seconds,
            secrets_manager_qps,
            secrets_manager_burst,
            sqs_queue_url,
            sqs_region,
            sqs_role_arn,
            allow_inline_sources,
            default_source,
        } => {
            init_tracing(log_format);
            let limit = airflow_secrets_operator::secretsmanager::RateLimit {
                per_second: secrets_manager_qps.max(0.1),
                burst: secrets_manager_burst.max(1.0),
            };
            let lease = leader_election.then_some(Lease {
                name: lease_name,
                namespace: lease_namespace,
                duration: lease_duration_seconds,
            });
            let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
            let events = non_empty(sqs_queue_url).map(|queue_url| {
                airflow_secrets_operator::events::SqsConfig {
                    queue_url,
                    region: non_empty(sqs_region),
                    role_arn: non_empty(sqs_role_arn),
                }
            });
            let scope = airflow_secrets_operator::controller::Scope::new(
                namespaces.into_iter().chain(namespace),
            );
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            let settings = airflow_secrets_operator::source::Settings {
                allow_inline: allow_inline_sources,
                default_source: non_empty(default_source),
            };
            match runtime.block_on(run(scope, http_address, lease, limit, settings, events)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render {
            files,
            workloads,
            cluster,
            output,
        } => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(render(files, workloads, cluster, output)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::ImportValues {
            file,
            release,
            name,
            namespace,
            injection,
            output,
        } => {
            let opts = airflow_secrets_operator::import::ImportOptions {
                release,
                name,
                namespace,
                injection: match injection {
                    ImportInjection::KubernetesBackend => Injection::KubernetesBackend,
                    ImportInjection::Env => Injection::Env,
                },
            };
            let shown = file.display().to_string();
            let result = std::fs::read_to_string(&file)
                .map_err(|e| format!("{shown}: {e}"))
                .and_then(|text| {
                    airflow_secrets_operator::import::import_values(&shown, &text, &opts)
                        .map_err(|e| e.to_string())
                });
            match result {
                Ok(import) => {
                    for note in &import.notes {
                        eprintln!("note: {note}");
                    }
                    match output {
                        Output::Json => println!(
                            "{}",
                            serde_json::to_string_pretty(&import.binding).expect("json")
                        ),
                        _ => print!(
                            "---\n{}",
                            serde_yaml::to_string(&import.binding).expect("yaml")
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Leader election settings.
struct Lease {
    name: String,
    namespace: Option<String>,
    duration: u64,
}

async fn run(
    scope: airflow_secrets_operator::controller::Scope,
    http_address: std::net::SocketAddr,
    lease: Option<Lease>,
    limit: airflow_secrets_operator::secretsmanager::RateLimit,
    settings: airflow_secrets_operator::source::Settings,
    events: Option<airflow_secrets_operator::events::SqsConfig>,
) -> anyhow::Result<()> {
    use airflow_secrets_operator::{controller, http, metrics, secretsmanager};
    let client = kube::Client::try_default().await?;
    let secrets_manager = Arc::new(secretsmanager::SecretsManager::with_limit(limit).await);
    let metrics = metrics::Metrics::new(
        secrets_manager.calls.clone(),
        secrets_manager.value_bytes.clone(),
        secrets_manager.rate_limit_wait.clone(),
    );
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(http::serve(http_address, metrics.clone(), ready.clone()));
    // Ready once the binding API can be listed; a replica waiting for the Lease is ready too (a
    // rolling update must be able to proceed), it only does not reconcile.
    controller::ensure_crd(&client, &scope).await?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);

    // With leader election, reconcile only while holding the Lease; losing it ends the process
    // (the pod restarts and waits again), so two replicas never reconcile at the same time.
    let mut leading = None;
    if let Some(lease) = lease {
        let lease_ns = lease.namespace.ok_or_else(|| {
            anyhow::anyhow!("--leader-election needs --lease-namespace (or POD_NAMESPACE)")
        })?;
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("airflow-secrets-operator-{}", std::process::id()));
        let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.name)
            .with_namespace(&lease_ns)
            .with_identity(&identity)
            .with_duration(lease.duration)
            .with_grace(lease.duration.clamp(2, 6) / 2)
            .with_field_manager(controller::MANAGER)
            .build()
            .await?;
        let (mut rx, task) = manager.watch().await;
        tracing::info!(lease = %lease.name, namespace = %lease_ns, %identity, "waiting to become the leader");
        while !*rx.borrow_and_update() {
            rx.changed()
                .await
                .map_err(|_| anyhow::anyhow!("leader election stopped"))?;
        }
        tracing::info!(%identity, "became the leader");
        leading = Some((rx, task));
    }
    let lost = async {
        match leading.as_mut() {
            Some((rx, _)) => loop {
                if rx.changed().await.is_err() || !*rx.borrow() {
                    return;
                }
            },
            None => std::future::pending().await,
        }
    };
    tracing::info!(
        namespaces = %scope,
        "starting controller"
    );
    tokio::select! {
        // The event consumer runs inside: only on the leader, like the controllers.
        r = controller::run(client, secrets_manager, metrics, scope, settings, events) => r,
        r = server => Err(anyhow::anyhow!("the HTTP server stopped: {r:?}")),
        () = lost => Err(anyhow::anyhow!("lost the leader lease; exiting so that another replica leads")),
    }
}

/// Writes each CRD file of `crds/` into `dir`.
fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    for (name, yaml) in airflow_secrets_operator::crd::files()? {
        std::fs::write(dir.join(name), yaml)?;
    }
    Ok(())
}

async fn render(
    files: Vec<PathBuf>,
    workloads: Option<PathBuf>,
    cluster: bool,
    output: Output,
) -> anyhow::Result<ExitCode> {
    use airflow_secrets_operator::render;
    let mut bindings = Vec::new();
    for f in &files {
        let shown = f.display().to_string();
        let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        bindings.extend(render::read_bindings(&shown, &text)?);
    }
    let from_file = match &workloads {
        Some(f) => {
            let shown = f.display().to_string();
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
            Some(render::read_deployments(&shown, &text)?)
        }
        None => None,
    };
    let client = if cluster {
        Some(kube::Client::try_default().await?)
    } else {
        None
    };
    let sm = airflow_secrets_operator::secretsmanager::SecretsManager::from_env().await;
    let mut results = Vec::new();
    for b in &bindings {
        let name = b.metadata.name.clone().unwrap_or_default();
        eprintln!("reading Secrets Manager for binding {name}...");
        let deployments = match (&from_file, &client) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(c)) => {
                let ns = b
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| c.default_namespace().to_string());
                let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
                    kube::Api::namespaced(c.clone(), &ns);
                Some(api.list(&Default::default()).await?.items)
            }
            _ => None,
        };
        let r = render::render(b, &sm, deployments.as_deref()).await?;
        eprintln!("  {} entries, {} not injected", r.entries.len(), r.errors());
        results.push(r);
    }
    match output {
        Output::Table => {
            for r in &results {
                println!("{}", render::table(r));
            }
        }
        Output::Yaml => print!("{}", serde_yaml::to_string(&results)?),
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
    }
    let errors: usize = results.iter().map(|r| r.errors()).sum();
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Log targets capped at `debug` whatever RUST_LOG says: at `trace` they print whole HTTP
/// bodies and decoded outputs, and an SQS message (a change event) may carry a secret value (a
/// CloudTrail event of a trail that records request data). Secrets Manager's own answers are
/// marked sensitive by the SDK and not printed even there.
const BODY_LOGGERS: &[&str] = &["aws_smithy_runtime", "aws_smithy_runtime_api"];

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    for target in BODY_LOGGERS {
        filter = filter.add_directive(format!("{target}=debug").parse().expect("a directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
