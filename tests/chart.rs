//! The Helm chart `charts/airflow-secrets-operator`: lint, rendering, least-privilege RBAC, the
//! values schema, the dashboard against the operator's real metrics, and — on the test ground —
//! server-side validation of every rendered object and real installs whose pod runs under the
//! `restricted` Pod Security Standard with exactly the permissions the controller needs.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use airflow_secrets_operator::metrics::{BindingLabels, CallLabels, Calls, EntryLabels, Metrics};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{client, delete_namespace, eventually, ground_var, namespace, pipe, repo_root, run};

/// The oldest Kubernetes the chart supports (Chart.yaml `kubeVersion`); offline rendering
/// (`helm template`, `helm lint`) pretends to target it.
const KUBE_VERSION: &str = "1.33.0";

fn chart() -> String {
    repo_root()
        .join("charts/airflow-secrets-operator")
        .to_str()
        .unwrap()
        .to_string()
}

/// `helm template` with `args` (`--set …`, `--namespace …`): every rendered object.
fn render(release: &str, args: &[&str]) -> Vec<Value> {
    let text = render_text(release, args);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("helm template renders YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn render_text(release: &str, args: &[&str]) -> String {
    let chart = chart();
    let mut all = vec!["template", release, &chart, "--kube-version", KUBE_VERSION];
    all.extend_from_slice(args);
    run(&ground_var("ASO_HELM"), &all)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind).as_slice() {
        [o] => o,
        found => panic!("expected one {kind}, rendered {}", found.len()),
    }
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// (apiGroup, resource, verb) triples.
type Rules = BTreeSet<(String, String, String)>;

/// Every API call of the controller (src/controller.rs, kube-runtime's Recorder and finalizer).
fn needed_rules() -> Rules {
    let mut rules = Rules::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str]| {
        for verb in verbs {
            rules.insert((group.into(), resource.into(), verb.to_string()));
        }
    };
    add(
        "airflow-secrets.io",
        "airflowsecretbindings",
        &["get", "list", "watch", "patch"],
    );
    add(
        "airflow-secrets.io",
        "airflowsecretbindings/status",
        &["patch"],
    );
    add(
        "",
        "secrets",
        &["get", "list", "watch", "create", "patch", "delete"],
    );
    add("apps", "deployments", &["get", "list", "watch", "patch"]);
    add("events.k8s.io", "events", &["create", "patch"]);
    // injection KubernetesBackend: the agents' Role + RoleBinding (applied, deleted).
    for resource in ["roles", "rolebindings"] {
        add(
            "rbac.authorization.k8s.io",
            resource,
            &["create", "patch", "delete"],
        );
    }
    rules
}

/// The triples a Role or ClusterRole grants; wildcards and narrowing fields are refused here.
fn granted(role: &Value) -> Rules {
    let name = &role["metadata"]["name"];
    let mut rules = Rules::new();
    for rule in role["rules"].as_array().expect("rules") {
        for field in ["resourceNames", "nonResourceURLs"] {
            assert!(
                rule.get(field).is_none(),
                "{name}: unexpected {field} in {rule}"
            );
        }
        let list = |field: &str| -> Vec<String> {
            let items: Vec<String> = rule[field]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: rule without {field}: {rule}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
            assert!(
                !items.iter().any(|i| i.contains('*')),
                "{name}: wildcard in {field}: {rule}"
            );
            items
        };
        for group in list("apiGroups") {
            for resource in list("resources") {
                for verb in list("verbs") {
                    rules.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    rules
}

fn app_version() -> String {
    let text = std::fs::read_to_string(PathBuf::from(chart()).join("Chart.yaml")).unwrap();
    let chart: Value = serde_yaml::from_str(&text).unwrap();
    chart["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_string()
}

#[test]
fn lint_strict_passes() {
    let helm = ground_var("ASO_HELM");
    let chart = chart();
    for values in [
        &[][..],
        &["--set", "watchNamespace=airflow-agents"][..],
        &[
            "--set",
            "serviceMonitor.enabled=true,grafanaDashboard.enabled=true",
        ][..],
    ] {
        let mut args = vec!["lint", "--strict", &chart, "--kube-version", KUBE_VERSION];
        args.extend_from_slice(values);
        let out = run(&helm, &args);
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn deployment_is_restricted_and_wired_to_the_binary() {
    let objects = render("aso", &["--namespace", "ops"]);
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    // Leader election (default) allows a rolling update; see the leader-election test.
    assert!(deployment["spec"]["strategy"].is_null());
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = one(&objects, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);

    let pod_sc = &pod["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true);
    assert_eq!(pod_sc["runAsUser"], 65532);
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault");

    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc.get("privileged").is_none_or(|p| p == false));
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());

    assert_eq!(
        c["image"],
        format!(
            "ghcr.io/airflow-secrets-operator/airflow-secrets-operator:{}",
            app_version()
        ),
        "the image tag defaults to appVersion"
    );
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        env(c, "HTTP_ADDRESS").unwrap()["value"],
        "0.0.0.0:8080",
        "the binary must listen on the container port"
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http"})
    );
    assert_eq!(
        env(c, "POD_NAME").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(env(c, "LOG_FORMAT").unwrap()["value"], "text");
    assert_eq!(env(c, "RUST_LOG").unwrap()["value"], "info");
    assert!(env(c, "WATCH_NAMESPACE").is_none());
    assert!(env(c, "AWS_REGION").is_none());
    assert!(
        env(c, "SQS_QUEUE_URL").is_none(),
        "the event consumer is off by default"
    );

    // The metrics Service reaches the pod's named port.
    let service = one(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    let selector = service["spec"]["selector"].as_object().unwrap();
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }

    // Values reach the container.
    let objects = render(
        "aso",
        &[
            "--set",
            "image.repository=example.invalid/aso,image.tag=v9,logFormat=json,aws.region=eu-west-1",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/aso",
            "--set",
            "podAnnotations.a=b,nodeSelector.pool=ops",
        ],
    );
    let deployment = one(&objects, "Deployment");
    let template = &deployment["spec"]["template"];
    let c = &template["spec"]["containers"][0];
    assert_eq!(c["image"], "example.invalid/aso:v9");
    assert_eq!(env(c, "LOG_FORMAT").unwrap()["value"], "json");
    assert_eq!(env(c, "AWS_REGION").unwrap()["value"], "eu-west-1");
    assert_eq!(template["metadata"]["annotations"]["a"], "b");
    assert_eq!(template["spec"]["nodeSelector"]["pool"], "ops");
    assert_eq!(
        one(&objects, "ServiceAccount")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/aso"
    );
    assert!(env(c, "SQS_QUEUE_URL").is_none());

    // The event consumer (docs/events.md): queue, region and role reach the container.
    let objects = render(
        "aso",
        &[
            "--set",
            "events.sqs.queueUrl=https://sqs.eu-west-1.amazonaws.com/123456789012/aso-events,events.sqs.region=eu-west-1",
            "--set",
            "events.sqs.roleArn=arn:aws:iam::123456789012:role/aso-events",
        ],
    );
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(c, "SQS_QUEUE_URL").unwrap()["value"],
        "https://sqs.eu-west-1.amazonaws.com/123456789012/aso-events"
    );
    assert_eq!(env(c, "SQS_REGION").unwrap()["value"], "eu-west-1");
    assert_eq!(
        env(c, "SQS_ROLE_ARN").unwrap()["value"],
        "arn:aws:iam::123456789012:role/aso-events"
    );
}

#[test]
fn rbac_is_exactly_what_the_controller_calls() {
    // Cluster-wide (default).
    let objects = render("aso", &["--namespace", "ops"]);
    let objects = without_leader_election(objects);
    let rendered = kinds(&objects);
    assert!(
        !rendered.contains("Role") && !rendered.contains("RoleBinding"),
        "{rendered:?}"
    );
    let role = one(&objects, "ClusterRole");
    assert_eq!(granted(role), needed_rules());
    let binding = one(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]})
    );
    let sa = one(&objects, "ServiceAccount");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}])
    );

    // One namespace: a Role and RoleBinding there, nothing cluster-wide, WATCH_NAMESPACE set.
    let objects = render(
        "aso",
        &[
            "--namespace",
            "ops",
            "--set",
            "watchNamespace=airflow-agents",
        ],
    );
    let objects = without_leader_election(objects);
    let rendered = kinds(&objects);
    assert!(
        !rendered.contains("ClusterRole") && !rendered.contains("ClusterRoleBinding"),
        "{rendered:?}"
    );
    let role = one(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "airflow-agents");
    assert_eq!(granted(role), needed_rules());
    let binding = one(&objects, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "airflow-agents");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}])
    );
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(c, "WATCH_NAMESPACES").unwrap()["value"],
        "airflow-agents"
    );

    // A list of namespaces (watchNamespace adds to it): a Role and RoleBinding in each, the
    // same rules, nothing cluster-wide, WATCH_NAMESPACES sorted and without duplicates.
    let objects = render(
        "aso",
        &[
            "--namespace",
            "ops",
            "--set",
            "watchNamespaces={team-b,team-a},watchNamespace=team-c",
        ],
    );
    let objects = without_leader_election(objects);
    let rendered = kinds(&objects);
    assert!(
        !rendered.contains("ClusterRole") && !rendered.contains("ClusterRoleBinding"),
        "{rendered:?}"
    );
    let roles = of_kind(&objects, "Role");
    let bindings = of_kind(&objects, "RoleBinding");
    let in_ns = |objs: &[&Value]| -> Vec<String> {
        objs.iter()
            .map(|o| o["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(in_ns(&roles), ["team-a", "team-b", "team-c"]);
    assert_eq!(in_ns(&bindings), ["team-a", "team-b", "team-c"]);
    for (role, binding) in roles.iter().zip(&bindings) {
        assert_eq!(granted(role), needed_rules(), "{}", role["metadata"]);
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "ops"}])
        );
    }
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(c, "WATCH_NAMESPACES").unwrap()["value"],
        "team-a,team-b,team-c"
    );
    let objects = render("aso", &["--set", "watchNamespaces={a,b},watchNamespace=a"]);
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(c, "WATCH_NAMESPACES").unwrap()["value"], "a,b");
    assert_eq!(of_kind(&without_leader_election(objects), "Role").len(), 2);

    // The optional objects bring no permission of their own.
    for set in [
        "serviceMonitor.enabled=true,grafanaDashboard.enabled=true",
        "serviceMonitor.enabled=true,grafanaDashboard.enabled=true,watchNamespace=airflow-agents",
    ] {
        let objects = without_leader_election(render("aso", &["--set", set]));
        let roles: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
            .collect();
        assert_eq!(roles.len(), 1, "--set {set}");
        assert_eq!(granted(roles[0]), needed_rules(), "--set {set}");
    }

    // rbac.create=false and userRoles.create=false render none.
    let objects = render(
        "aso",
        &["--set", "rbac.create=false,userRoles.create=false"],
    );
    let rendered = kinds(&objects);
    assert!(rendered.iter().all(|k| !k.contains("Role")), "{rendered:?}");
    // The users' roles grant only bindings, and authoring only through admin.
    let objects = render("aso", &["--set", "rbac.create=false"]);
    let users: Vec<&Value> = of_kind(&objects, "ClusterRole");
    assert_eq!(users.len(), 2);
    for role in users {
        let labels = &role["metadata"]["labels"];
        assert!(
            role["rules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["apiGroups"] == json!(["airflow-secrets.io"]))
        );
        let writes = role["rules"][0]["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("create"));
        assert_eq!(
            labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true",
            !writes,
            "edit gets no write: {role}"
        );
        assert_eq!(
            labels["rbac.authorization.k8s.io/aggregate-to-admin"],
            "true"
        );
    }
}

/// Sources are cluster-scoped and namespaces' labels decide who may use them: one ClusterRole
/// reads exactly those, also when the operator watches a list of namespaces.
#[test]
fn sources_and_namespaces_are_read_cluster_wide_and_nothing_else() {
    for set in ["logLevel=info", "watchNamespaces={team-a,team-b}"] {
        let objects = render("aso", &["--namespace", "ops", "--set", set]);
        let named = |kind: &str| -> Vec<&Value> {
            of_kind(&objects, kind)
                .into_iter()
                .filter(|o| {
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap()
                        .ends_with("-sources")
                })
                .collect()
        };
        let roles = named("ClusterRole");
        assert_eq!(roles.len(), 1, "--set {set}");
        let mut want = Rules::new();
        for (group, resource) in [
            ("airflow-secrets.io", "airflowsecretsources"),
            ("", "namespaces"),
        ] {
            for verb in ["get", "list", "watch"] {
                want.insert((group.into(), resource.into(), verb.into()));
            }
        }
        assert_eq!(granted(roles[0]), want, "--set {set}");
        let binding = named("ClusterRoleBinding");
        assert_eq!(binding.len(), 1);
        assert_eq!(binding[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
        assert_eq!(binding[0]["subjects"][0]["namespace"], "ops");
    }
}

/// Inline sources: refused by default, at apply by an admission policy (and by the operator);
/// with a default source, every spec.source field is.
#[test]
fn inline_sources_are_refused_by_default_and_allowed_on_request() {
    let objects = render("aso", &[]);
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(c, "ALLOW_INLINE_SOURCES").unwrap()["value"], "false");
    assert!(env(c, "DEFAULT_SOURCE").is_none());
    let policy = one(&objects, "ValidatingAdmissionPolicy");
    let fields = |p: &Value| -> Vec<String> {
        p["spec"]["validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                v["message"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        fields(policy),
        [
            "spec.source.roleArn",
            "spec.source.endpoint",
            "spec.source.externalId",
            "spec.source.roleSessionName"
        ]
    );
    let binding = one(&objects, "ValidatingAdmissionPolicyBinding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));

    let objects = render("aso", &["--set", "sources.default=shared"]);
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(c, "DEFAULT_SOURCE").unwrap()["value"], "shared");
    assert!(
        fields(one(&objects, "ValidatingAdmissionPolicy"))
            .contains(&"spec.source.region".to_string())
    );

    let objects = render("aso", &["--set", "sources.allowInline=true"]);
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(c, "ALLOW_INLINE_SOURCES").unwrap()["value"], "true");
    assert!(of_kind(&objects, "ValidatingAdmissionPolicy").is_empty());
}

#[test]
fn disruption_budget_with_replicas_network_policy_on_request() {
    let objects = render("aso", &[]);
    let rendered = kinds(&objects);
    assert!(
        !rendered.contains("PodDisruptionBudget") && !rendered.contains("NetworkPolicy"),
        "one replica blocks no drain; the policy is opt-in: {rendered:?}"
    );
    let objects = render(
        "aso",
        &["--set", "replicaCount=2,networkPolicy.enabled=true"],
    );
    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let deployment = one(&objects, "Deployment");
    let pods = &deployment["spec"]["template"]["metadata"]["labels"];
    let np = one(&objects, "NetworkPolicy");
    for selector in [
        &pdb["spec"]["selector"]["matchLabels"],
        &np["spec"]["podSelector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(&pods[k], v, "selects the operator's pods: {k}");
        }
    }
    assert_eq!(
        np["spec"]["ingress"][0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}])
    );
}

#[test]
fn service_monitor_and_dashboard_only_when_enabled() {
    let objects = render("aso", &["--namespace", "ops"]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding"
        ]
        .map(String::from)
        .into(),
        "the defaults render only these kinds"
    );

    let objects = render(
        "aso",
        &[
            "--namespace",
            "ops",
            "--set",
            "serviceMonitor.enabled=true,serviceMonitor.labels.release=kube-prometheus-stack",
            "--set",
            "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring",
        ],
    );
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(
        endpoint["port"],
        one(&objects, "Service")["spec"]["ports"][0]["name"]
    );
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["honorLabels"], true,
        "the metrics' namespace label is the binding's"
    );

    let map = one(&objects, "ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped = map["data"]["airflow-secrets-operator.json"]
        .as_str()
        .unwrap();
    assert_eq!(shipped, dashboard_text().trim_end());
}

fn dashboard_text() -> String {
    std::fs::read_to_string(PathBuf::from(chart()).join("dashboards/airflow-secrets-operator.json"))
        .unwrap()
}

/// Every series the dashboard queries is one the operator exposes, and every metric of the
/// operator is on the dashboard.
#[test]
fn dashboard_queries_the_operators_metrics() {
    let dashboard: Value = serde_json::from_str(&dashboard_text()).expect("dashboard is JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());

    // Families and their sample names, from the operator's own registry (prometheus-client
    // encodes a family once it has a sample: give each one).
    let calls = Calls::default();
    calls
        .get_or_create(&CallLabels {
            operation: "ListSecrets",
            outcome: "success".into(),
        })
        .inc();
    let waited = airflow_secrets_operator::secretsmanager::Waited::default();
    waited.inc_by(0.5);
    let m = Metrics::new(calls, Default::default(), waited);
    let b = BindingLabels {
        namespace: "ns".into(),
        binding: "b".into(),
    };
    m.reconcile_duration.observe(0.1);
    m.reconciles.get_or_create(&b).inc();
    m.reconcile_errors.get_or_create(&b).inc();
    m.rollouts.get_or_create(&b).inc();
    m.conflicts.get_or_create(&b).inc();
    m.events
        .get_or_create(&airflow_secrets_operator::metrics::EventLabels {
            outcome: "received",
        })
        .inc();
    m.entries
        .get_or_create(&EntryLabels {
            namespace: "ns".into(),
            binding: "b".into(),
            state: "Synced".into(),
        })
        .set(1);
    m.set_cache_sizes(&[("values", 1)]);
    let metrics = m.encode();
    let mut families = Vec::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let samples: Vec<String> = match kind {
                "counter" => vec![format!("{name}_total")],
                "gauge" => vec![name.to_string()],
                "histogram" => ["bucket", "sum", "count"]
                    .map(|s| format!("{name}_{s}"))
                    .into(),
                other => panic!("{name}: metric type {other} not handled by this test"),
            };
            families.push((name.to_string(), samples));
        }
    }
    assert_eq!(families.len(), 14, "families exposed: {families:?}");
    let exposed: BTreeSet<&str> = families
        .iter()
        .flat_map(|(_, s)| s.iter().map(String::as_str))
        .collect();

    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let series_re = regex::Regex::new(r"airflow_secrets_[a-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for m in series_re.find_iter(expr) {
            assert!(
                exposed.contains(m.as_str()),
                "the dashboard queries {}, which the operator does not expose ({expr})",
                m.as_str()
            );
            used.insert(m.as_str().to_string());
        }
    }
    for (family, samples) in &families {
        assert!(
            samples.iter().any(|s| used.contains(s)),
            "the dashboard does not show {family}"
        );
    }
    // Every panel reads the dashboard's data source variable.
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let root = repo_root().join("crds");
    let copy = PathBuf::from(chart()).join("crds");
    let names = |dir: &PathBuf| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert_eq!(
        names(&copy),
        names(&root),
        "charts/…/crds/ and crds/ list different files"
    );
    for name in names(&root) {
        let generated = std::fs::read(root.join(&name)).unwrap();
        let shipped = std::fs::read(copy.join(&name)).unwrap();
        assert!(
            shipped == generated,
            "the chart ships a stale {name}; run: \
             cp crds/{name} charts/airflow-secrets-operator/crds/"
        );
    }
    assert!(
        !std::fs::symlink_metadata(copy.join("airflowsecretbindings.yaml"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "helm does not package symlinks reliably: copy the file"
    );
}

/// `helm package` ships the CRD and the dashboard as regular files.
#[test]
fn package_contains_the_crd_and_the_dashboard() {
    let out = std::env::temp_dir().join(format!("aso-chart-package-{}", std::process::id()));
    let out = out.to_str().unwrap();
    run(
        &ground_var("ASO_HELM"),
        &["package", &chart(), "--destination", out],
    );
    let tgz = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("helm package wrote a .tgz");
    let listing = run("tar", &["-tvzf", tgz.to_str().unwrap()]);
    std::fs::remove_dir_all(out).unwrap();
    for file in [
        "airflow-secrets-operator/crds/airflowsecretbindings.yaml",
        "airflow-secrets-operator/dashboards/airflow-secrets-operator.json",
        "airflow-secrets-operator/values.schema.json",
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(file))
            .unwrap_or_else(|| panic!("{file} is not in the package:\n{listing}"));
        assert!(
            line.starts_with('-'),
            "{file} is not a regular file: {line}"
        );
    }
}

#[test]
fn schema_rejects_bad_values() {
    let helm = ground_var("ASO_HELM");
    let chart = chart();
    for (set, complaint) in [
        ("replicaCount=abc", "'/replicaCount'"),
        (
            "replicaCount=2,leaderElection.enabled=false",
            "'/replicaCount'",
        ),
        (
            "replicaConut=1",
            "additional properties 'replicaConut' not allowed",
        ),
        ("logFormat=xml", "'/logFormat'"),
        ("image.tags=v1", "additional properties 'tags' not allowed"),
        ("watchNamespace=Not_A_Namespace", "'/watchNamespace'"),
        (
            "watchNamespaces={a,Not_A_Namespace}",
            "'/watchNamespaces/1'",
        ),
        ("events.sqs.queueUrl=not-a-url", "'/events/sqs/queueUrl'"),
        (
            "events.sqs.queue=x",
            "additional properties 'queue' not allowed",
        ),
    ] {
        let out = std::process::Command::new(&helm)
            .args([
                "template",
                "aso",
                &chart,
                "--kube-version",
                KUBE_VERSION,
                "--set",
                set,
            ])
            .output()
            .expect("run helm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} rendered");
        assert!(
            stderr.contains("values don't meet the specifications of the schema")
                && stderr.contains(complaint),
            "--set {set}: {stderr}"
        );
    }
    // The same keys with good values render.
    render(
        "aso",
        &[
            "--set",
            "replicaCount=0,logFormat=json,image.tag=v1,watchNamespace=airflow-agents",
        ],
    );
}

/// Server-side dry-run apply: the API server validates every rendered object (strict field
/// validation: an unknown or misplaced field fails).
#[tokio::test]
async fn rendered_manifests_pass_server_side_dry_run() {
    let client = client().await;
    support::install_crds(&client).await;
    let ns = namespace(&client, "chart-dry-run").await;
    let kubectl = ground_var("ASO_KUBECTL");
    for extra in [
        &["--set", "grafanaDashboard.enabled=true"][..],
        &["--set", &format!("watchNamespace={ns}")][..],
        &["--set", &format!("watchNamespaces={{{ns},default}}")][..],
        &["--set", "replicaCount=2,networkPolicy.enabled=true"][..],
    ] {
        let mut args = vec!["--namespace", ns.as_str()];
        args.extend_from_slice(extra);
        let manifests = render_text("aso", &args);
        let objects = render("aso", &args);
        let out = pipe(
            &kubectl,
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
            ],
            manifests.as_bytes(),
            "server-side dry run of the rendered chart",
        );
        let out = String::from_utf8(out).unwrap();
        let applied = out
            .lines()
            .filter(|l| l.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(applied, objects.len(), "{extra:?}:\n{out}");
    }
    delete_namespace(&client, &ns).await;
}

/// A fresh namespace that enforces the `restricted` Pod Security Standard, checked by a pod
/// without a security context being refused there.
async fn restricted_namespace(client: &kube::Client, test: &str) -> String {
    let ns = namespace(client, test).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .expect("label the namespace");
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/plain"}]}
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &plain,
        )
        .await
        .expect_err("a plain pod must be refused in a restricted namespace");
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );
    ns
}

fn helm_install(release: &str, ns: &str, extra: &[&str]) {
    let chart = chart();
    let mut args = vec![
        "install",
        release,
        &chart,
        "--namespace",
        ns,
        "--set",
        "image.repository=example.invalid/aso",
        "--timeout",
        "60s",
    ];
    // The release's admission policy is installed (the API server must accept it) but applies
    // to no namespace of other tests, which apply inline sources.
    let vap = format!("sources.admissionPolicy.namespaceSelector.matchLabels.vap-test={release}");
    args.extend_from_slice(&["--set", &vap]);
    args.extend_from_slice(extra);
    run(&ground_var("ASO_HELM"), &args);
}

/// Waits for the release's pod to be Running and returns it; fails at once, saying why, when the
/// ReplicaSet cannot create the pod (e.g. refused by Pod Security admission).
async fn running_pod(client: &kube::Client, ns: &str, release: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    support::eventually(
        &format!("the pod of release {release} Running in {ns}"),
        Duration::from_secs(60),
        || {
            let (pods, sets, selector) = (pods.clone(), sets.clone(), selector.clone());
            async move {
                for rs in sets.list(&selector).await.ok()?.items {
                    let conditions = rs.status.and_then(|s| s.conditions).unwrap_or_default();
                    if let Some(c) = conditions
                        .iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                    {
                        panic!("the release's pod cannot be created: {:?}", c.message);
                    }
                }
                pods.list(&selector)
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            }
        },
    )
    .await
}

/// Whether the API server's authorizer lets `user` do `verb` on `group/resource` in `ns`.
async fn allowed(
    client: &kube::Client,
    user: &str,
    ns: &str,
    (group, resource, verb): (&str, &str, &str),
) -> bool {
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "resourceAttributes": {
                "namespace": ns, "group": group, "resource": resource,
                "subresource": subresource, "verb": verb,
            }
        }
    }))
    .unwrap();
    let review = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    review.status.expect("status").allowed
}

/// API calls the controller never makes; the operator's identity must be refused them.
const NOT_NEEDED: [(&str, &str, &str); 8] = [
    ("", "secrets", "update"),
    ("", "configmaps", "get"),
    ("", "pods", "list"),
    ("apps", "deployments", "delete"),
    ("apps", "deployments", "create"),
    ("airflow-secrets.io", "airflowsecretbindings", "delete"),
    ("coordination.k8s.io", "leases", "delete"),
    ("", "events", "create"),
];

async fn assert_permissions(client: &kube::Client, user: &str, ns: &str, granted: bool) {
    for (group, resource, verb) in &needed_rules() {
        let rule = (group.as_str(), resource.as_str(), verb.as_str());
        assert_eq!(
            allowed(client, user, ns, rule).await,
            granted,
            "{user} {verb} {group}/{resource} in {ns}"
        );
    }
    for rule in NOT_NEEDED {
        assert!(
            !allowed(client, user, ns, rule).await,
            "{user} may {rule:?} in {ns}"
        );
    }
}

fn service_account_user(objects: &[Value], ns: &str) -> String {
    let sa = one(objects, "ServiceAccount")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    format!("system:serviceaccount:{ns}:{sa}")
}

#[tokio::test]
async fn helm_install_cluster_wide_runs_restricted_with_least_privilege() {
    let client = client().await;
    let ns = restricted_namespace(&client, "chart-install").await;
    let release = format!("aso-{}", ns.rsplit('-').next().unwrap());
    helm_install(
        &release,
        &ns,
        &["--set", "replicaCount=2,networkPolicy.enabled=true"],
    );

    let pod = running_pod(&client, &ns, &release).await;
    let spec = pod.spec.unwrap();
    // The budget is installed and the disruption controller counts both replicas under it.
    let name = format!("{release}-airflow-secrets-operator");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    eventually(
        "the PodDisruptionBudget covering both replicas",
        Duration::from_secs(60),
        || async {
            let status = pdbs.get(&name).await.ok()?.status?;
            (status.expected_pods == 2 && status.disruptions_allowed == 1).then_some(())
        },
    )
    .await;
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get(&name)
        .await
        .expect("the NetworkPolicy is installed");
    assert_eq!(
        policy.spec.unwrap().policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(format!("example.invalid/aso:{}", app_version()).as_str())
    );
    Api::<CustomResourceDefinition>::all(client.clone())
        .get("airflowsecretbindings.airflow-secrets.io")
        .await
        .expect("the CRD is installed");

    let objects = render(&release, &["--namespace", &ns]);
    let user = service_account_user(&objects, &ns);
    assert_eq!(
        spec.service_account_name.as_deref(),
        user.rsplit(':').next()
    );
    // Cluster-wide: the same permissions in every namespace.
    assert_permissions(&client, &user, &ns, true).await;
    assert_permissions(&client, &user, "airflow-agents-elsewhere", true).await;
    // The leader-election Lease: only in the release namespace.
    for verb in ["get", "create", "patch"] {
        let lease = ("coordination.k8s.io", "leases", verb);
        assert!(
            allowed(&client, &user, &ns, lease).await,
            "{verb} leases in {ns}"
        );
        assert!(
            !allowed(&client, &user, "airflow-agents-elsewhere", lease).await,
            "{verb} leases elsewhere"
        );
    }

    run(
        &ground_var("ASO_HELM"),
        &["uninstall", &release, "--namespace", &ns, "--wait"],
    );
    assert_permissions(&client, &user, &ns, false).await;
    delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn helm_install_for_listed_namespaces_grants_only_there() {
    let client = client().await;
    let ns = restricted_namespace(&client, "chart-install-ns").await;
    let a = namespace(&client, "chart-agents-a").await;
    let b = namespace(&client, "chart-agents-b").await;
    let other = namespace(&client, "chart-agents-other").await;
    let release = format!("aso-{}", ns.rsplit('-').next().unwrap());
    helm_install(
        &release,
        &ns,
        &["--set", &format!("watchNamespaces={{{b},{a}}}")],
    );

    let pod = running_pod(&client, &ns, &release).await;
    let container = &pod.spec.unwrap().containers[0];
    let watch = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "WATCH_NAMESPACES")
        .and_then(|e| e.value.clone());
    let mut listed = [a.clone(), b.clone()];
    listed.sort();
    assert_eq!(watch, Some(listed.join(",")));

    let objects = render(&release, &["--namespace", &ns]);
    let user = service_account_user(&objects, &ns);
    assert_permissions(&client, &user, &a, true).await;
    assert_permissions(&client, &user, &b, true).await;
    assert_permissions(&client, &user, &other, false).await;
    assert_permissions(&client, &user, &ns, false).await;
    assert_permissions(&client, &user, "default", false).await;

    run(
        &ground_var("ASO_HELM"),
        &["uninstall", &release, "--namespace", &ns, "--wait"],
    );
    assert_permissions(&client, &user, &a, false).await;
    for n in [&ns, &a, &b, &other] {
        delete_namespace(&client, n).await;
    }
}

/// The rendered objects without the leader-election Role and RoleBinding (checked on their own).
/// The operator's own RBAC: without the leader-election Role and the users' roles.
fn without_leader_election(objects: Vec<Value>) -> Vec<Value> {
    objects
        .into_iter()
        .filter(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            !name.ends_with("-leader-election")
                && !name.ends_with("-sources")
                && !(o["kind"] == "ClusterRole"
                    && (name.ends_with("-view") || name.ends_with("-author")))
        })
        .collect()
}

/// People's access to bindings through Kubernetes' default roles: `view` and `edit` read them,
/// only `admin` writes them (the chart's roles are aggregated so).
#[tokio::test]
async fn view_and_edit_read_bindings_only_admin_authors_them() {
    let client = client().await;
    let ns = restricted_namespace(&client, "chart-users").await;
    let release = format!("aso-{}", ns.rsplit('-').next().unwrap());
    helm_install(&release, &ns, &[]);
    let kubectl = ground_var("ASO_KUBECTL");
    for (user, role) in [("alice", "view"), ("bob", "edit"), ("carol", "admin")] {
        run(
            &kubectl,
            &[
                "-n",
                &ns,
                "create",
                "rolebinding",
                user,
                "--clusterrole",
                role,
                "--user",
                user,
            ],
        );
    }
    let can = |user: &str, verb: &str| {
        let out = std::process::Command::new(&kubectl)
            .args([
                "-n",
                &ns,
                "auth",
                "can-i",
                verb,
                "airflowsecretbindings.airflow-secrets.io",
            ])
            .args(["--as", user])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    // The aggregation controller fills the default roles shortly after the install.
    eventually(
        "aggregated into view and admin",
        Duration::from_secs(60),
        || async { (can("alice", "list") && can("carol", "create")).then_some(()) },
    )
    .await;
    for verb in ["get", "list", "watch"] {
        for user in ["alice", "bob", "carol"] {
            assert!(can(user, verb), "{user} may {verb} bindings");
        }
    }
    for verb in ["create", "patch", "delete"] {
        assert!(!can("alice", verb), "view may not {verb} bindings");
        assert!(!can("bob", verb), "edit may not {verb} bindings");
        assert!(can("carol", verb), "admin may {verb} bindings");
    }
    // The request itself, not only the review: edit is refused, admin creates.
    let binding = json!({
        "apiVersion": "airflow-secrets.io/v1alpha1", "kind": "AirflowSecretBinding",
        "metadata": {"name": "by-a-user", "namespace": ns},
        "spec": {"variables": [{"key": "v", "secretId": "v"}], "target": {"injection": "SecretOnly"}}
    });
    let create_as = |user: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(&kubectl)
            .args(["create", "-f", "-", "--as", user])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let input = binding.to_string();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = create_as("bob");
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("forbidden"),
        "{refused:?}"
    );
    let created = create_as("carol");
    assert!(created.status.success(), "{created:?}");
    // Authorship granted deliberately: edit plus the author role, as docs/reference.md says.
    let author = format!("{release}-airflow-secrets-operator-author");
    for (name, role) in [("dave", "edit"), ("dave-author", author.as_str())] {
        run(
            &kubectl,
            &[
                "-n",
                &ns,
                "create",
                "rolebinding",
                name,
                "--clusterrole",
                role,
                "--user",
                "dave",
            ],
        );
    }
    for verb in ["create", "patch", "delete"] {
        assert!(can("dave", verb), "edit + author may {verb} bindings");
    }
    run(
        &ground_var("ASO_HELM"),
        &["uninstall", &release, "--namespace", &ns, "--wait"],
    );
    delete_namespace(&client, &ns).await;
}

#[test]
fn leader_election_gets_the_lease_in_its_own_namespace_only() {
    let objects = render("aso", &["--namespace", "ops"]);
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "Role"
                && o["metadata"]["name"] == "aso-airflow-secrets-operator-leader-election"
        })
        .expect("the leader-election Role");
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}])
    );
    let c = &one(&objects, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(c, "LEADER_ELECTION").unwrap()["value"], "true");
    assert_eq!(
        env(c, "POD_NAMESPACE").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert!(
        one(&objects, "Deployment")["spec"]["strategy"].is_null(),
        "rolling updates with leader election"
    );

    let objects = render("aso", &["--set", "leaderElection.enabled=false"]);
    assert!(!kinds(&objects).contains("Role"));
    assert_eq!(
        one(&objects, "Deployment")["spec"]["strategy"]["type"],
        "Recreate"
    );
    let objects = render("aso", &["--set", "replicaCount=3"]);
    assert_eq!(one(&objects, "Deployment")["spec"]["replicas"], 3);
}
