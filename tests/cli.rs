//! The CLI on real sample files: `render` against the Secrets Manager emulator, `import-values`
//! on an agent values.yaml, and both on malformed input.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airflow-secrets-operator"))
}

fn fixture(name: &str) -> String {
    repo_root()
        .join("tests/fixtures/cli")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn exec(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("run the binary");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[tokio::test]
async fn render_shows_env_per_workload_hashes_only_and_fails_on_errors() {
    let sm = secrets_manager().await;
    let p = format!("cli-render-{}", std::process::id());
    put_secret(
        &sm,
        &format!("{p}/connections/db_main"),
        "postgres://u:CANARY-pw@h/db",
    )
    .await;
    put_secret(&sm, &format!("{p}/connections/db_broken"), "{not json").await;
    put_secret(&sm, &format!("{p}/variables/env"), "CANARY-var").await;
    let dir = std::env::temp_dir().join(format!("aso-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binding = dir.join("binding.yaml");
    let binding_text = format!(
        "apiVersion: airflow-secrets.io/v1alpha1\nkind: AirflowSecretBinding\nmetadata: {{name: agents, namespace: airflow-agents}}\nspec:\n  discovery: {{connectionsPrefix: {p}/connections, variablesPrefix: {p}/variables}}\n  target:\n    workloads: {{helmRelease: astro-agent}}\n"
    );
    std::fs::write(&binding, &binding_text).unwrap();
    // The agents, as `helm template` renders them.
    let agents = run(
        &ground_var("ASO_HELM"),
        &[
            "template",
            "astro-agent",
            repo_root().join("tests/agent-chart").to_str().unwrap(),
        ],
    );
    let workloads = dir.join("agents.yaml");
    std::fs::write(&workloads, agents).unwrap();

    let out = exec(bin().args([
        "render",
        "-f",
        binding.to_str().unwrap(),
        "--workloads",
        workloads.to_str().unwrap(),
    ]));
    assert_eq!(
        out.code, 1,
        "an entry Airflow would not read makes the exit code 1:\n{}{}",
        out.stdout, out.stderr
    );
    assert!(
        out.stdout.contains("AIRFLOW_CONN_DB_MAIN") && out.stdout.contains("sha256:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Invalid") && out.stdout.contains("not valid JSON"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Deployment astro-agent-worker-default-worker [worker]: AIRFLOW_CONN_DB_MAIN, AIRFLOW_VAR_ENV"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("astro-agent-sentinel"),
        "the sentinel is not selected"
    );
    assert!(
        out.stderr.contains("reading Secrets Manager"),
        "progress on stderr: {}",
        out.stderr
    );
    assert!(
        !(out.stdout.clone() + &out.stderr).contains("CANARY"),
        "a value was printed"
    );

    let out = exec(bin().args(["render", "-f", binding.to_str().unwrap(), "-o", "json"]));
    let json: Value = serde_json::from_str(&out.stdout).expect("json output");
    let entries = json[0]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(
        entries
            .iter()
            .any(|e| e["envName"] == "AIRFLOW_VAR_ENV" && e["state"] == "Synced")
    );
    assert!(!out.stdout.contains("CANARY"));

    // Everything readable: exit code 0.
    std::fs::write(
        &binding,
        binding_text.replace(
            "discovery: {",
            "discovery: {connectionsLookupPattern: '^db_main', ",
        ),
    )
    .unwrap();
    let out = exec(bin().args(["render", "-f", binding.to_str().unwrap()]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // A malformed file: exit code 2, naming the file, the document and the field.
    let out = exec(bin().args(["render", "-f", &fixture("malformed-binding.yaml")]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("malformed-binding.yaml: document 1: field spec.target.injection"),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn import_values_prints_a_binding_the_api_server_accepts() {
    let client = client().await;
    install_crds(&client).await;
    let out = exec(bin().args([
        "import-values",
        "-f",
        &fixture("astro-values.yaml"),
        "--release",
        "astro-agent",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "set `secretBackend: airflow.providers.cncf.kubernetes.secrets.kubernetes_secrets_backend.KubernetesSecretsBackend`"
        ),
        "{}",
        out.stderr
    );
    let binding: Value = serde_yaml::from_str(&out.stdout).expect("YAML output");
    assert_eq!(binding["metadata"]["namespace"], "airflow-agents");
    assert_eq!(
        binding["spec"]["discovery"]["connectionsLookupPattern"],
        "^(db|aws)_"
    );
    assert_eq!(
        binding["spec"]["source"]["roleArn"],
        "arn:aws:iam::123456789012:role/airflow-secrets"
    );

    // The printed manifest passes the API server's validation (server-side dry run).
    let ns = namespace(&client, "cli-import").await;
    let file = std::env::temp_dir().join(format!("aso-import-{}.json", std::process::id()));
    let json = exec(bin().args([
        "import-values",
        "-f",
        &fixture("astro-values.yaml"),
        "--namespace",
        &ns,
        "-o",
        "json",
    ]));
    let parsed: Value = serde_json::from_str(&json.stdout).expect("json");
    std::fs::write(&file, serde_json::to_string(&parsed).unwrap()).unwrap();
    run(
        &ground_var("ASO_KUBECTL"),
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            file.to_str().unwrap(),
        ],
    );

    // Malformed values: exit code 2, naming the file and the entry.
    let bad = exec(bin().args(["import-values", "-f", &fixture("broken-values.yaml")]));
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains(
            "broken-values.yaml: commonEnv[0]: AIRFLOW__SECRETS__BACKEND_KWARGS is not valid JSON"
        ),
        "{}",
        bad.stderr
    );
    let missing = exec(bin().args(["import-values", "-f", "/nonexistent/values.yaml"]));
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("/nonexistent/values.yaml"),
        "{}",
        missing.stderr
    );
    std::fs::remove_file(file).ok();
    delete_namespace(&client, &ns).await;
}
