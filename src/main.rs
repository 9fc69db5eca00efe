use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

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
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "WATCH_NAMESPACE")]
        namespace: Option<String>,
        /// Address of /healthz, /readyz and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080", env = "HTTP_ADDRESS")]
        http_address: std::net::SocketAddr,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match airflow_secrets_operator::crd::all_yaml() {
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
            namespace,
            http_address,
            log_format,
        } => {
            init_tracing(log_format);
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            match runtime.block_on(run(namespace, http_address)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(namespace: Option<String>, http_address: std::net::SocketAddr) -> anyhow::Result<()> {
    use airflow_secrets_operator::{controller, http, metrics, resolve};
    let client = kube::Client::try_default().await?;
    let secrets_manager = Arc::new(resolve::SecretsManager::from_env().await);
    let metrics = metrics::Metrics::new(secrets_manager.calls.clone());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(http::serve(http_address, metrics.clone(), ready.clone()));
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "starting controller"
    );
    tokio::select! {
        r = controller::run(client, secrets_manager, metrics, ready, namespace) => r,
        r = server => Err(anyhow::anyhow!("the HTTP server stopped: {r:?}")),
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
