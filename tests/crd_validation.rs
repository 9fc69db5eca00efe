//! The API server itself rejects bad bindings, with a message that names the field
//! (OpenAPI validation and CEL rules from `crds/`), and `kubectl explain` documents the API.

mod support;

use airflow_secrets_operator::api::AirflowSecretBinding;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::*;

fn binding(name: &str, spec: Value) -> AirflowSecretBinding {
    serde_json::from_value(json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("test binding deserialises")
}

fn valid_target() -> Value {
    json!({"workloads": {"helmRelease": "astro-agent"}})
}

fn conn() -> Value {
    json!([{"connId": "db", "secretId": "airflow/connections/db"}])
}

/// Posts each case's object (`post` gives the path and body) and returns what the API server
/// did not reject with HTTP 422 and a message containing the expected substrings.
async fn rejections(
    client: &kube::Client,
    cases: &[(&str, Value, Vec<&str>)],
    post: impl Fn(&str, &Value) -> (String, Value),
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, spec, expected) in cases {
        let (path, body) = post(name, spec);
        let req = http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        match client.request_text(req).await {
            Ok(_) => problems.push(format!("{name}: accepted, expected a rejection")),
            Err(kube::Error::Api(status)) => {
                let msg = status.message.clone();
                if status.code != 422 || !expected.iter().all(|e| msg.contains(e)) {
                    problems.push(format!(
                        "{name}: got {} {msg:?}, expected it to contain {expected:?}",
                        status.code
                    ));
                }
            }
            Err(e) => problems.push(format!("{name}: unexpected error {e}")),
        }
    }
    problems
}

#[tokio::test]
async fn invalid_bindings_are_rejected_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "crd-validation").await;
    let api: Api<AirflowSecretBinding> = Api::namespaced(client.clone(), &ns);

    // (case, spec, substrings the API server's message must contain)
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "empty-conn-id",
            json!({"connections": [{"connId": "", "secretId": "s"}], "target": valid_target()}),
            vec!["spec.connections[0].connId"],
        ),
        (
            "empty-secret-id",
            json!({"connections": [{"connId": "a", "secretId": ""}], "target": valid_target()}),
            vec!["spec.connections[0].secretId"],
        ),
        (
            "bad-secret-id",
            json!({"variables": [{"key": "a", "secretId": "has space"}], "target": valid_target()}),
            vec!["spec.variables[0].secretId"],
        ),
        (
            "stage-and-id",
            json!({"connections": [{"connId": "a", "secretId": "s", "versionStage": "AWSCURRENT", "versionId": "0123456789abcdef0123456789abcdef"}], "target": valid_target()}),
            vec!["spec.connections[0].versionId", "mutually exclusive"],
        ),
        (
            "duplicate-conn-id",
            json!({"connections": [{"connId": "a", "secretId": "s"}, {"connId": "a", "secretId": "t"}], "target": valid_target()}),
            vec!["spec.connections[1]", "Duplicate"],
        ),
        (
            "config-double-underscore",
            json!({"config": [{"section": "a__b", "key": "k", "secretId": "s"}], "target": valid_target()}),
            vec!["spec.config[0].section", "__"],
        ),
        (
            "backend-with-values",
            json!({"mode": "Backend", "discovery": {"connectionsPrefix": "airflow/connections"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.mode", "remove connections"],
        ),
        (
            "backend-without-discovery",
            json!({"mode": "Backend", "target": valid_target()}),
            vec!["spec.discovery", "needs discovery"],
        ),
        (
            "team-too-short",
            json!({"team": "ml", "connections": conn(), "target": valid_target()}),
            vec!["spec.team"],
        ),
        (
            "team-with-backend-mode",
            json!({"team": "mlops", "mode": "Backend", "discovery": {"connectionsPrefix": "airflow/connections"}, "target": valid_target()}),
            vec!["spec.team", "remove team"],
        ),
        (
            "team-with-config",
            json!({"team": "mlops", "config": [{"section": "core", "key": "k", "secretId": "s"}], "target": valid_target()}),
            vec!["spec.config", "no team form"],
        ),
        (
            "selects-nothing",
            json!({"target": valid_target()}),
            vec!["spec", "selects nothing"],
        ),
        (
            "no-workloads",
            json!({"connections": conn(), "target": {}}),
            vec!["spec.target.workloads", "required unless"],
        ),
        (
            "empty-workloads",
            json!({"connections": conn(), "target": {"workloads": {}}}),
            vec!["spec.target.workloads", "helmRelease, selector or names"],
        ),
        (
            "bad-extra-conn-words",
            json!({"discovery": {"connectionsPrefix": "p", "extraConnWords": {"description": ["d"]}}, "target": valid_target()}),
            vec!["spec.discovery.extraConnWords", "login"],
        ),
        (
            "bad-refresh-interval",
            json!({"connections": conn(), "refreshInterval": "soon", "target": valid_target()}),
            vec!["spec.refreshInterval"],
        ),
        (
            "zero-refresh-interval",
            json!({"connections": conn(), "refreshInterval": "0s", "target": valid_target()}),
            vec!["spec.refreshInterval", "at least 1s"],
        ),
        (
            "bad-injection",
            json!({"connections": conn(), "target": {"injection": "Mount", "workloads": {"names": ["x"]}}}),
            vec!["spec.target.injection", "Unsupported value"],
        ),
        (
            "pattern-without-prefix",
            json!({"discovery": {"variablesPrefix": "v", "connectionsLookupPattern": "^a"}, "target": valid_target()}),
            vec![
                "spec.discovery.connectionsLookupPattern",
                "needs connectionsPrefix",
            ],
        ),
        (
            "bad-secret-name",
            json!({"connections": conn(), "target": {"secretName": "Bad_Name", "workloads": {"names": ["x"]}}}),
            vec!["spec.target.secretName"],
        ),
        (
            "external-id-without-role",
            json!({"source": {"externalId": "abc"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.source.externalId", "needs source.roleArn"],
        ),
        (
            "bad-region",
            json!({"source": {"region": "Europe"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.source.region"],
        ),
        (
            "bad-role-arn",
            json!({"source": {"roleArn": "my-role"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.source.roleArn"],
        ),
        (
            "bad-component",
            json!({"connections": conn(), "target": {"components": ["webserver"], "workloads": {"names": ["x"]}}}),
            vec!["spec.target.components[0]"],
        ),
        (
            "source-ref-and-inline-source",
            json!({"sourceRef": {"name": "teams"}, "source": {"region": "eu-west-1"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.source", "sourceRef names an AirflowSecretSource"],
        ),
        (
            "bad-source-ref",
            json!({"sourceRef": {"name": "Not_A_Name"}, "connections": conn(), "target": valid_target()}),
            vec!["spec.sourceRef.name"],
        ),
        (
            "backend-namespace-without-kubernetes-backend",
            json!({"connections": conn(), "target": {"workloads": {"names": ["x"]}, "backendNamespace": "store"}}),
            vec![
                "spec.target.backendNamespace",
                "set injection KubernetesBackend",
            ],
        ),
        (
            "bad-backend-namespace",
            json!({"connections": conn(), "target": {"workloads": {"names": ["x"]}, "injection": "KubernetesBackend", "backendNamespace": "Not.A.Namespace"}}),
            vec!["spec.target.backendNamespace"],
        ),
        (
            "bad-deletion-policy",
            json!({"connections": conn(), "deletionPolicy": "Orphan", "target": valid_target()}),
            vec!["spec.deletionPolicy"],
        ),
    ];
    let problems = rejections(&client, &cases, |name, spec| {
        // Built as JSON so that invalid values reach the API server unchanged.
        let body = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        });
        (
            format!("/apis/airflow-secrets.io/v1alpha1/namespaces/{ns}/airflowsecretbindings"),
            body,
        )
    })
    .await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // A full, valid binding is accepted and defaults are filled in.
    let ok = binding(
        "valid",
        json!({
            "source": {"region": "eu-west-1", "roleArn": "arn:aws:iam::123456789012:role/airflow-secrets", "externalId": "xyz"},
            "connections": [{"connId": "warehouse", "secretId": "airflow/connections/warehouse", "versionStage": "AWSPREVIOUS"}],
            "variables": [{"key": "env", "secretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/variables/env-AbCdEf"}],
            "config": [{"section": "smtp", "key": "smtp_password", "secretId": "airflow/config/smtp_password"}],
            "discovery": {"connectionsPrefix": "airflow/connections", "connectionsLookupPattern": "^(?!tmp)", "extraConnWords": {"login": ["account"]}},
            "target": {"workloads": {"helmRelease": "astro-agent"}, "components": ["worker", "sentinel"], "injection": "EnvFrom"}
        }),
    );
    let created = api
        .create(&PostParams::default(), &ok)
        .await
        .expect("a valid binding is accepted");
    assert_eq!(created.spec.discovery.as_ref().unwrap().sep, "/");
    assert_eq!(created.spec.refresh_interval, "1h");
    assert!(created.spec.target.rollout_on_change);
    delete_namespace(&client, &ns).await;
}

/// Sources, too, are rejected at apply with the field named; a full one is accepted.
#[tokio::test]
async fn invalid_sources_are_rejected_naming_the_field() {
    let client = client().await;
    install_crds(&client).await;
    let suffix = namespace(&client, "crd-sources").await;
    let allowed = json!({"namePrefixes": ["airflow/{namespace}/"]});
    let everyone = json!({"selector": {}});
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "no-namespaces",
            json!({"allowed": allowed}),
            vec!["spec.namespaces"],
        ),
        (
            "empty-namespaces",
            json!({"namespaces": {}, "allowed": allowed}),
            vec!["spec.namespaces", "names or a selector"],
        ),
        (
            "no-allowed",
            json!({"namespaces": everyone}),
            vec!["spec.allowed"],
        ),
        (
            "empty-allowed",
            json!({"namespaces": everyone, "allowed": {}}),
            vec!["spec.allowed", "namePrefixes or arnPatterns"],
        ),
        (
            "external-id-without-role",
            json!({"namespaces": everyone, "allowed": allowed, "externalId": "xyz"}),
            vec!["spec.externalId", "needs roleArn"],
        ),
        (
            "bad-role-arn",
            json!({"namespaces": everyone, "allowed": allowed, "roleArn": "my-role"}),
            vec!["spec.roleArn"],
        ),
        (
            "bad-endpoint",
            json!({"namespaces": everyone, "allowed": allowed, "endpoint": "ftp://x"}),
            vec!["spec.endpoint"],
        ),
    ];
    let problems = rejections(&client, &cases, |name, spec| {
        let body = json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretSource",
            "metadata": {"name": format!("{name}-{suffix}")}, "spec": spec
        });
        (
            "/apis/airflow-secrets.io/v1alpha1/airflowsecretsources".to_string(),
            body,
        )
    })
    .await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let api: Api<airflow_secrets_operator::api::AirflowSecretSource> = Api::all(client.clone());
    let name = format!("valid-{suffix}");
    let ok: airflow_secrets_operator::api::AirflowSecretSource = serde_json::from_value(json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretSource",
        "metadata": {"name": name},
        "spec": {
            "region": "eu-west-1",
            "roleArn": "arn:aws:iam::123456789012:role/airflow-secrets-reader",
            "externalId": "xyz",
            "endpoint": "https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com",
            "namespaces": {"names": ["team-a"], "selector": {"matchLabels": {"tenant": "true"}}},
            "allowed": {
                "namePrefixes": ["airflow/{namespace}/"],
                "arnPatterns": ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:shared/*"]
            }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &ok)
        .await
        .expect("a valid source is accepted");
    api.delete(&name, &Default::default()).await.unwrap();
    delete_namespace(&client, &suffix).await;
}

#[tokio::test]
async fn kubectl_explain_documents_the_api() {
    let client = client().await;
    install_crds(&client).await;
    let kubectl = ground_var("ASO_KUBECTL");
    // The API server publishes a new CRD's OpenAPI a few seconds after it is Established.
    let spec = eventually(
        "kubectl explain to know the CRD",
        std::time::Duration::from_secs(60),
        || {
            let kubectl = kubectl.clone();
            async move {
                let out = std::process::Command::new(&kubectl)
                    .args(["explain", "airflowsecretbinding.spec"])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            }
        },
    )
    .await;
    for expected in [
        "connections",
        "discovery",
        "target",
        "refreshInterval",
        "deletionPolicy",
        "AIRFLOW_CONN_",
    ] {
        assert!(
            spec.contains(expected),
            "kubectl explain spec lacks {expected}:\n{spec}"
        );
    }
    let discovery = run(
        &kubectl,
        &["explain", "asb.spec.discovery.connectionsLookupPattern"],
    );
    assert!(discovery.contains("case-insensitively"), "{discovery}");
}
