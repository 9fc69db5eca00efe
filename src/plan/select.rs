//! Which Deployments a binding selects, and which of their containers: pure functions over the
//! Deployments of the binding's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;

use crate::api::{Component, WorkloadSelector};

/// The agent component of a Deployment: from its `app.kubernetes.io/component` or `component`
/// label, else from the chart's naming (`<prefix>-worker-<name>`, `<prefix>-dag-processor`,
/// `<prefix>-triggerer`, `<prefix>-sentinel`).
pub fn component_of(deployment: &Deployment) -> Option<Component> {
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    let from = |s: &str| match s {
        "worker" => Some(Component::Worker),
        "dag-processor" | "dag_processor" | "dagProcessor" | "dagprocessor" => {
            Some(Component::DagProcessor)
        }
        "triggerer" => Some(Component::Triggerer),
        "sentinel" => Some(Component::Sentinel),
        _ => None,
    };
    if let Some(c) = ["app.kubernetes.io/component", "component"]
        .iter()
        .find_map(|k| labels.get(*k).and_then(|v| from(v)))
    {
        return Some(c);
    }
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    if name.contains("-worker-") || name.ends_with("-worker") {
        Some(Component::Worker)
    } else if name.contains("-dag-processor") {
        Some(Component::DagProcessor)
    } else if name.ends_with("-triggerer") || name.contains("-triggerer-") {
        Some(Component::Triggerer)
    } else if name.ends_with("-sentinel") {
        Some(Component::Sentinel)
    } else {
        None
    }
}

/// A Deployment that receives the values, and the containers in it that do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedWorkload {
    pub name: String,
    pub component: Option<Component>,
    pub containers: Vec<String>,
}

/// Which of `deployments` (all in the binding's namespace) the binding selects.
pub fn select_workloads(
    deployments: &[Deployment],
    selector: &WorkloadSelector,
    components: &[Component],
    containers: &[String],
) -> Vec<SelectedWorkload> {
    let mut out = Vec::new();
    for d in deployments {
        let name = d.metadata.name.clone().unwrap_or_default();
        let component = component_of(d);
        let named = selector.names.contains(&name);
        let release_ok = selector
            .helm_release
            .as_ref()
            .is_none_or(|release| helm_release_of(d) == Some(release.as_str()));
        let labels_ok = selector
            .selector
            .as_ref()
            .is_none_or(|sel| label_selector_matches(sel, d.metadata.labels.as_ref()));
        let by_criteria = (selector.helm_release.is_some() || selector.selector.is_some())
            && release_ok
            && labels_ok
            && component.is_some_and(|c| components.contains(&c));
        let matches = named || by_criteria;
        if !matches {
            continue;
        }
        let pod_containers: Vec<String> = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let chosen: Vec<String> = if containers.is_empty() {
            pod_containers.into_iter().take(1).collect()
        } else {
            pod_containers
                .into_iter()
                .filter(|c| containers.contains(c))
                .collect()
        };
        if !chosen.is_empty() {
            out.push(SelectedWorkload {
                name,
                component,
                containers: chosen,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The Helm release a Deployment belongs to: its `meta.helm.sh/release-name` annotation (set by
/// helm install/upgrade), or, without it (as in `helm template` output), its
/// `app.kubernetes.io/instance` label.
fn helm_release_of(d: &Deployment) -> Option<&str> {
    let annotated = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("meta.helm.sh/release-name"));
    match annotated {
        Some(r) => Some(r.as_str()),
        None => d
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/instance"))
            .map(String::as_str),
    }
}

fn label_selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let eq_ok = sel
        .match_labels
        .as_ref()
        .is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expr_ok = sel.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    eq_ok && expr_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    fn deployment(
        name: &str,
        labels: &[(&str, &str)],
        release: Option<&str>,
        containers: &[&str],
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "annotations": release.map(|r| json!({"meta.helm.sh/release-name": r})).unwrap_or(json!({}))
            },
            "spec": {"selector": {}, "template": {"spec": {"containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()}}}
        }))
        .unwrap()
    }

    #[test]
    fn selection_by_release_component_and_container() {
        let ds = [
            deployment(
                "astro-agent-worker-default-worker",
                &[],
                Some("astro-agent"),
                &["worker", "log-sidecar"],
            ),
            deployment(
                "astro-agent-dag-processor",
                &[("component", "dag-processor")],
                Some("astro-agent"),
                &["dag-processor"],
            ),
            deployment(
                "astro-agent-triggerer",
                &[],
                Some("astro-agent"),
                &["triggerer"],
            ),
            deployment(
                "astro-agent-sentinel",
                &[],
                Some("astro-agent"),
                &["sentinel"],
            ),
            deployment("other-worker-x", &[], Some("other"), &["worker"]),
            deployment("unrelated", &[], None, &["app"]),
        ];
        let sel = WorkloadSelector {
            helm_release: Some("astro-agent".into()),
            ..Default::default()
        };
        let got = select_workloads(&ds, &sel, &crate::api::default_components(), &[]);
        let names: Vec<&str> = got.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "astro-agent-dag-processor",
                "astro-agent-triggerer",
                "astro-agent-worker-default-worker"
            ]
        );
        assert_eq!(
            got[2].containers,
            ["worker"],
            "first container only by default"
        );
        let with_sentinel =
            select_workloads(&ds, &sel, &[Component::Sentinel], &["sentinel".into()]);
        assert_eq!(with_sentinel.len(), 1);
        let by_name = WorkloadSelector {
            names: vec!["unrelated".into()],
            ..Default::default()
        };
        assert_eq!(
            select_workloads(&ds, &by_name, &crate::api::default_components(), &[]).len(),
            1
        );
    }
}
