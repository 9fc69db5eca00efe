use std::process::ExitCode;

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
    /// Print the CustomResourceDefinitions as YAML (what `crds/` holds).
    Crd,
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
    }
}
