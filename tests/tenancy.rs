//! Tenancy, on the real control plane: an `AirflowSecretSource` decides which namespaces may
//! read which secrets with which identity. Every Secrets Manager and STS call the operator makes
//! goes through a recording proxy of the project's own (`support::faults`, passing everything),
//! so that a test asserts what was (not) asked for, and with which session tags.

mod support;

use std::time::Duration;

use airflow_secrets_operator::api::{AirflowSecretSource, EntryState};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use support::faults::{Call, FaultProxy, form};
use support::*;

const T: Duration = Duration::from_secs(60);
const ACCOUNT: &str = "123456789012";

async fn apply_source(client: &kube::Client, name: &str, spec: Value) {
    let api: Api<AirflowSecretSource> = Api::all(client.clone());
    api.patch(
        name,
        &PatchParams::apply("aso-tests").force(),
        &Patch::Apply(json!({
            "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretSource",
            "metadata": {"name": name}, "spec": spec
        })),
    )
    .await
    .unwrap_or_else(|e| panic!("apply AirflowSecretSource {name}: {e}"));
}

async fn delete_source(client: &kube::Client, name: &str) {
    let api: Api<AirflowSecretSource> = Api::all(client.clone());
    let _ = api.delete(name, &Default::default()).await;
}

fn binding(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": name}, "spec": spec
    })
}

async fn ready_as(client: &kube::Client, ns: &str, name: &str, want: (&str, &str)) -> String {
    eventually(&format!("{ns}/{name} Ready {want:?}"), T, || async {
        let s = binding_status(client, ns, name).await?;
        let c = s.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (c.status == want.0 && c.reason == want.1).then_some(c.message)
    })
    .await
}

/// Every secret name, id and listing filter a Secrets Manager call asked for.
fn asked_for(calls: &[Call]) -> Vec<String> {
    let mut out = Vec::new();
    for c in calls.iter().filter(|c| c.body.starts_with('{')) {
        let body: Value = serde_json::from_str(&c.body).unwrap_or_default();
        if let Some(id) = body["SecretId"].as_str() {
            out.push(id.to_string());
        }
        for id in body["SecretIdList"].as_array().into_iter().flatten() {
            out.push(id.as_str().unwrap_or_default().to_string());
        }
        for f in body["Filters"].as_array().into_iter().flatten() {
            for v in f["Values"].as_array().into_iter().flatten() {
                out.push(v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// A binding of namespace A names B's secret by name, full ARN and partial ARN, and discovers
/// with a prefix broader than its own (narrowed by a lookup pattern to B's secrets): each is
/// AccessDenied in status, no value of B reaches A's Secret, and no Secrets Manager call names
/// or lists anything outside A's prefix. A's own entries sync.
#[tokio::test]
async fn a_namespace_reads_only_what_its_source_allows() {
    let client = client().await;
    install_crds(&client).await;
    let a = namespace(&client, "tenancy-a").await;
    let sm = secrets_manager().await;
    let p = format!("tenancy-{a}");
    let canary = format!("b-canary-{}", a.rsplit('-').next().unwrap());
    put_secret(
        &sm,
        &format!("{p}/{a}/conns/db"),
        "postgres://a:pa@db-a/app",
    )
    .await;
    put_secret(&sm, &format!("{p}/{a}/vars/token"), "a-token").await;
    put_secret(
        &sm,
        &format!("{p}/b/conns/db"),
        &format!("postgres://b:{canary}@db-b/app"),
    )
    .await;
    let b_arn = sm
        .describe_secret()
        .secret_id(format!("{p}/b/conns/db"))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let partial = format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{p}/b/conns/db");
    let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
    let source = format!("src-{a}");
    apply_source(
        &client,
        &source,
        json!({
            "endpoint": proxy.endpoint(),
            "namespaces": {"names": [a]},
            "allowed": {
                "namePrefixes": [format!("{p}/{{namespace}}/")],
                "arnPatterns": [format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{p}/{{namespace}}/*")]
            }
        }),
    )
    .await;
    let op = Operator::start_with(&a, &["--allow-inline-sources=false"], &[]);
    apply_binding(
        &client,
        &a,
        binding(
            "agents",
            json!({
                "sourceRef": {"name": source},
                "connections": [
                    {"connId": "mine", "secretId": format!("{p}/{a}/conns/db")},
                    {"connId": "by_name", "secretId": format!("{p}/b/conns/db")},
                    {"connId": "by_arn", "secretId": b_arn},
                    {"connId": "by_partial_arn", "secretId": partial}
                ],
                "discovery": {
                    "variablesPrefix": format!("{p}/{a}/vars"),
                    "connectionsPrefix": p,
                    "connectionsLookupPattern": "^b/"
                },
                "target": {"injection": "SecretOnly"}
            }),
        ),
    )
    .await;
    let message = ready_as(&client, &a, "agents", ("True", "SyncedWithEntryErrors")).await;
    let status = binding_status(&client, &a, "agents").await.unwrap();
    let state = |name: &str| {
        status
            .entries
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("entry {name} in {:?}", status.entries))
            .clone()
    };
    assert_eq!(state("mine").state, EntryState::Synced, "{message}");
    assert_eq!(state("token").state, EntryState::Synced);
    for refused in ["by_name", "by_arn", "by_partial_arn"] {
        let e = state(refused);
        assert_eq!(e.state, EntryState::AccessDenied, "{e:?}");
        let m = e.message.unwrap();
        assert!(
            m.contains(&format!(
                "outside what AirflowSecretSource {source} allows namespace {a}"
            )),
            "{m}"
        );
    }
    let listing = state("spec.discovery.connectionsPrefix");
    assert_eq!(listing.state, EntryState::AccessDenied);
    assert!(
        listing
            .message
            .as_deref()
            .unwrap()
            .contains("broader than what AirflowSecretSource"),
        "{listing:?}"
    );
    let data = secret_text(&client, &a, "agents-airflow").await.unwrap();
    let keys: Vec<&String> = data.keys().collect();
    assert_eq!(keys, ["AIRFLOW_CONN_MINE", "AIRFLOW_VAR_TOKEN"], "{keys:?}");
    assert!(!data.values().any(|v| v.contains(&canary)));
    // No call named, or listed, anything outside A's prefix.
    op.quiet().await;
    let asked = asked_for(&proxy.calls());
    assert!(!asked.is_empty(), "the source's endpoint was used");
    let own = format!("{p}/{a}/");
    for id in &asked {
        assert!(id.starts_with(&own), "a call asked for {id:?}: {asked:?}");
    }
    assert!(
        !proxy
            .calls()
            .iter()
            .any(|c| c.body.contains(&format!("{p}/b"))),
        "B's secret was never named"
    );
    drop(op);
    delete_source(&client, &source).await;
    delete_namespace(&client, &a).await;
}

/// Inline sources, refused: at apply by the chart's admission policy (naming the field), and by
/// the operator where no policy is installed (Ready False, SourceRefused, nothing read). A
/// namespace a source does not admit, or a source that does not exist, gets a clear reason; a
/// namespace admitted by label becomes Ready when the label is set.
#[tokio::test]
async fn inline_sources_and_unadmitted_namespaces_are_refused() {
    let client = client().await;
    install_crds(&client).await;
    let guarded = namespace(&client, "tenancy-vap").await;
    let ns = namespace(&client, "tenancy-refused").await;
    // The chart's policy, for this test's first namespace only.
    let release = format!("vap-{}", guarded.rsplit('-').next().unwrap());
    let chart = repo_root().join("charts/airflow-secrets-operator");
    let policy = run(
        &ground_var("ASO_HELM"),
        &[
            "template",
            &release,
            chart.to_str().unwrap(),
            "--kube-version",
            "1.35.0",
            "--show-only",
            "templates/admission.yaml",
            "--set",
            &format!("sources.admissionPolicy.namespaceSelector.matchLabels.vap-test={release}"),
        ],
    );
    let kubectl = ground_var("ASO_KUBECTL");
    pipe(
        &kubectl,
        &["apply", "-f", "-"],
        policy.as_bytes(),
        "apply the admission policy",
    );
    run(
        &kubectl,
        &[
            "label",
            "namespace",
            &guarded,
            &format!("vap-test={release}"),
        ],
    );
    let api: Api<airflow_secrets_operator::api::AirflowSecretBinding> =
        Api::namespaced(client.clone(), &guarded);
    let inline = binding(
        "inline",
        json!({
            "source": {"endpoint": "http://169.254.169.254"},
            "variables": [{"key": "x", "secretId": "x"}],
            "target": {"injection": "SecretOnly"}
        }),
    );
    // The policy takes effect within a moment of its creation.
    let refusal = eventually(
        "the admission policy refuses inline endpoints",
        T,
        || async {
            let r = api
                .patch(
                    "inline",
                    &PatchParams::apply("aso-tests"),
                    &Patch::Apply(&inline),
                )
                .await;
            match r {
                Err(kube::Error::Api(e)) if e.code == 422 || e.code == 403 => Some(e.message),
                Ok(_) => {
                    let _ = api.delete("inline", &Default::default()).await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    assert!(
        refusal.contains("spec.source.endpoint: this installation does not allow inline sources"),
        "{refusal}"
    );
    pipe(
        &kubectl,
        &["delete", "-f", "-"],
        policy.as_bytes(),
        "delete the admission policy",
    );

    // No policy in this namespace: the operator refuses, names the field, reads nothing.
    let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
    let _op = Operator::start_with(&ns, &["--allow-inline-sources=false"], &[]);
    apply_binding(
        &client,
        &ns,
        binding(
            "inline",
            json!({
                "source": {"roleArn": format!("arn:aws:iam::{ACCOUNT}:role/anything"), "endpoint": proxy.endpoint()},
                "variables": [{"key": "x", "secretId": "x"}],
                "target": {"injection": "SecretOnly"}
            }),
        ),
    )
    .await;
    let m = ready_as(&client, &ns, "inline", ("False", "SourceRefused")).await;
    assert!(
        m.starts_with("spec.source.roleArn: this installation does not allow inline sources"),
        "{m}"
    );

    apply_binding(
        &client,
        &ns,
        binding(
            "missing",
            json!({
                "sourceRef": {"name": format!("nothing-{ns}")},
                "variables": [{"key": "x", "secretId": "x"}],
                "target": {"injection": "SecretOnly"}
            }),
        ),
    )
    .await;
    let m = ready_as(&client, &ns, "missing", ("False", "SourceNotFound")).await;
    assert!(m.contains("spec.sourceRef.name"), "{m}");

    // A source that admits namespaces by label: refused until the namespace is labelled.
    let sm = secrets_manager().await;
    let p = format!("tenancy-{ns}");
    put_secret(&sm, &format!("{p}/x"), "labelled-value").await;
    let source = format!("by-label-{ns}");
    apply_source(
        &client,
        &source,
        json!({
            "endpoint": proxy.endpoint(),
            "namespaces": {"selector": {"matchLabels": {"tenant": ns}}},
            "allowed": {"namePrefixes": [format!("{p}/")]}
        }),
    )
    .await;
    apply_binding(
        &client,
        &ns,
        binding(
            "by-label",
            json!({
                "sourceRef": {"name": source},
                "variables": [{"key": "x", "secretId": format!("{p}/x")}],
                "target": {"injection": "SecretOnly"}
            }),
        ),
    )
    .await;
    let m = ready_as(&client, &ns, "by-label", ("False", "SourceRefused")).await;
    assert!(m.contains(&format!("does not allow namespace {ns}")), "{m}");
    assert!(
        proxy.calls().is_empty(),
        "refused bindings made no Secrets Manager call: {:?}",
        proxy
            .calls()
            .iter()
            .map(|c| &c.operation)
            .collect::<Vec<_>>()
    );
    run(
        &kubectl,
        &["label", "namespace", &ns, &format!("tenant={ns}")],
    );
    ready_as(&client, &ns, "by-label", ("True", "Synced")).await;
    let data = secret_text(&client, &ns, "by-label-airflow").await.unwrap();
    assert_eq!(data["AIRFLOW_VAR_X"], "labelled-value");
    delete_source(&client, &source).await;
    delete_namespace(&client, &guarded).await;
    delete_namespace(&client, &ns).await;
}

/// Two namespaces, two sources with different roles: each role is assumed (through STS, recorded
/// by the proxy) with the session tags of its source and namespace and a session name naming
/// the namespace, and each namespace's Secret holds its own value only.
#[tokio::test]
async fn each_namespace_assumes_its_sources_role_with_session_tags() {
    let client = client().await;
    install_crds(&client).await;
    let a = namespace(&client, "tenancy-role-a").await;
    let b = namespace(&client, "tenancy-role-b").await;
    let sm = secrets_manager().await;
    let p = format!("tenancy-{a}");
    put_secret(&sm, &format!("{p}/{a}/x"), "alpha").await;
    put_secret(&sm, &format!("{p}/{b}/x"), "beta").await;
    let proxy = FaultProxy::start(&ground_var("AWS_ENDPOINT_URL_SECRETS_MANAGER")).await;
    for (ns, role) in [(&a, "team-a"), (&b, "team-b")] {
        apply_source(
            &client,
            &format!("src-{ns}"),
            json!({
                "endpoint": proxy.endpoint(),
                "roleArn": format!("arn:aws:iam::{ACCOUNT}:role/{role}"),
                "externalId": format!("ext-{role}"),
                "namespaces": {"names": [ns]},
                "allowed": {"namePrefixes": [format!("{p}/{{namespace}}/")]}
            }),
        )
        .await;
    }
    let kubeconfig = ground_var("ASO_OPERATOR_KUBECONFIG");
    let op = Operator::start_in_with(
        &[&a, &b],
        std::path::Path::new(&kubeconfig),
        &["--allow-inline-sources=false"],
        &[("AWS_ENDPOINT_URL_STS", &proxy.endpoint())],
    );
    for (ns, other) in [(&a, &b), (&b, &a)] {
        apply_binding(
            &client,
            ns,
            binding(
                "agents",
                json!({
                    "sourceRef": {"name": format!("src-{ns}")},
                    "variables": [
                        {"key": "x", "secretId": format!("{p}/{ns}/x")},
                        {"key": "theirs", "secretId": format!("{p}/{other}/x")}
                    ],
                    "target": {"injection": "SecretOnly"}
                }),
            ),
        )
        .await;
    }
    for (ns, value) in [(&a, "alpha"), (&b, "beta")] {
        ready_as(&client, ns, "agents", ("True", "SyncedWithEntryErrors")).await;
        let data = secret_text(&client, ns, "agents-airflow").await.unwrap();
        assert_eq!(data.len(), 1, "{ns}: {data:?}");
        assert_eq!(data["AIRFLOW_VAR_X"], value);
    }
    op.quiet().await;
    let assumed: Vec<Call> = proxy
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AssumeRole")
        .collect();
    assert!(assumed.len() >= 2, "{assumed:?}");
    for (ns, role) in [(&a, "team-a"), (&b, "team-b")] {
        let mine: Vec<&Call> = assumed
            .iter()
            .filter(|c| {
                form(&c.body, "RoleArn").as_deref()
                    == Some(&format!("arn:aws:iam::{ACCOUNT}:role/{role}"))
            })
            .collect();
        assert!(!mine.is_empty(), "{role} assumed");
        for c in mine {
            assert_eq!(
                form(&c.body, "RoleSessionName").as_deref(),
                Some(format!("aso.{ns}").as_str())
            );
            assert_eq!(
                form(&c.body, "ExternalId").as_deref(),
                Some(format!("ext-{role}").as_str())
            );
            let tags: Vec<(String, String)> = (1..=2)
                .map(|i| {
                    (
                        form(&c.body, &format!("Tags.member.{i}.Key")).unwrap_or_default(),
                        form(&c.body, &format!("Tags.member.{i}.Value")).unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(
                tags,
                [
                    ("airflow-secrets-source".to_string(), format!("src-{ns}")),
                    ("airflow-secrets-namespace".to_string(), ns.to_string())
                ],
                "{}",
                c.body
            );
        }
    }
    drop(op);
    for ns in [&a, &b] {
        delete_source(&client, &format!("src-{ns}")).await;
        delete_namespace(&client, ns).await;
    }
}
