//! Which Secrets Manager source a binding reads through, and what it may read there.
//!
//! A binding names an admin-owned [`AirflowSecretSource`] (`spec.sourceRef`), or falls back to
//! the installation's default source, or — where the installation allows it — describes an
//! inline source (`spec.source`). The outcome is a [`Grant`]: how to reach Secrets Manager (an
//! [`Origin`]: one shared view each) and, for a source, what the binding's namespace may read
//! ([`Allowed`]). Everything here is pure: the controller passes in the sources and the
//! namespace's labels it has cached.

use std::collections::BTreeMap;

use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};
use wildmatch::WildMatch;

use crate::api::{AirflowSecretBindingSpec, AirflowSecretSource, Source};

/// Session tag naming the source a role was assumed for.
pub const SOURCE_TAG: &str = "airflow-secrets-source";
/// Session tag naming the namespace a role was assumed for.
pub const NAMESPACE_TAG: &str = "airflow-secrets-namespace";
/// Session name of roles assumed for inline sources without `roleSessionName`.
pub const DEFAULT_SESSION_NAME: &str = "airflow-secrets-operator";
/// STS's limit on a role session name.
pub const SESSION_NAME_MAX: usize = 64;

/// Ready reasons of a binding its source refuses.
pub mod reason {
    /// The named (or default) source does not exist.
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    /// The source does not admit the namespace, or the inline source is not allowed.
    pub const SOURCE_REFUSED: &str = "SourceRefused";
}

/// What the installation allows (chart values `sources.allowInline` and `sources.default`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Bindings may set `spec.source.roleArn` / `endpoint` (and, with a default source, any
    /// `spec.source` field).
    pub allow_inline: bool,
    /// The source of bindings without `spec.sourceRef` and `spec.source`.
    pub default_source: Option<String>,
}

/// How to reach Secrets Manager. Bindings with equal origins share one view (one client, one
/// rate limit, one cache): a role assumed for a source is assumed once per namespace (its
/// session tags name both), the operator's own identity serves every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub endpoint: Option<String>,
    /// Role session name (with `role_arn`).
    pub session_name: Option<String>,
    /// Session tags (with `role_arn`), as (key, value).
    pub session_tags: Vec<(String, String)>,
}

impl From<&Source> for Origin {
    fn from(s: &Source) -> Self {
        Origin {
            region: s.region.clone(),
            role_arn: s.role_arn.clone(),
            external_id: s.external_id.clone(),
            endpoint: s.endpoint.clone(),
            // None: DEFAULT_SESSION_NAME (kept unset, so that Backend mode's kwargs stay as
            // they were written before sources existed).
            session_name: s.role_session_name.clone(),
            session_tags: vec![],
        }
    }
}

/// How a binding reads, and within what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub origin: Origin,
    /// What the binding may read; `None`: whatever its identity may (no source applies).
    pub allowed: Option<Allowed>,
}

impl Grant {
    /// Reading with the inline source and no restriction (the `render` command, which reads
    /// with its caller's own identity).
    pub fn inline(source: &Source) -> Grant {
        Grant {
            origin: Origin::from(source),
            allowed: None,
        }
    }

    /// Whether the secret (a name, or a full or partial ARN) may be read; else why not.
    pub fn admits(&self, secret_id: &str) -> Result<(), String> {
        self.allowed
            .as_ref()
            .map_or(Ok(()), |a| a.admits(secret_id))
    }

    /// Whether a listing of this name prefix stays within what may be read.
    pub fn may_list(&self, prefix: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.may_list(prefix))
    }

    /// Whether a name a listing returned may be read.
    pub fn admits_name(&self, name: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.admits_name(name))
    }
}

/// What a source allows one namespace, its `{namespace}` placeholders filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub source: String,
    pub namespace: String,
    pub name_prefixes: Vec<String>,
    pub arn_patterns: Vec<String>,
}

impl Allowed {
    fn of(source: &AirflowSecretSource, namespace: &str) -> Allowed {
        let fill = |v: &Vec<String>| -> Vec<String> {
            v.iter()
                .map(|p| p.replace("{namespace}", namespace))
                .collect()
        };
        Allowed {
            source: kube::ResourceExt::name_any(source),
            namespace: namespace.into(),
            name_prefixes: fill(&source.spec.allowed.name_prefixes),
            arn_patterns: fill(&source.spec.allowed.arn_patterns),
        }
    }

    /// A name is allowed under a prefix; an ARN (full or partial) by a pattern.
    pub fn admits(&self, secret_id: &str) -> Result<(), String> {
        let ok = if secret_id.starts_with("arn:") {
            self.arn_patterns
                .iter()
                .any(|p| WildMatch::new(p).matches(secret_id))
        } else {
            self.admits_name(secret_id)
        };
        if ok {
            return Ok(());
        }
        let (what, allowed) = if secret_id.starts_with("arn:") {
            ("ARN patterns", &self.arn_patterns)
        } else {
            ("name prefixes", &self.name_prefixes)
        };
        Err(format!(
            "{secret_id} is outside what AirflowSecretSource {} allows namespace {} ({what}: {}); nothing was read",
            self.source,
            self.namespace,
            shown(allowed)
        ))
    }

    pub fn may_list(&self, prefix: &str) -> bool {
        self.admits_name(prefix)
    }

    pub fn admits_name(&self, name: &str) -> bool {
        self.name_prefixes.iter().any(|p| name.starts_with(p))
    }

    /// Why a discovery listing of `prefix` (spec field `field`) is refused.
    pub fn listing_refused(&self, field: &str, prefix: &str) -> String {
        format!(
            "spec.discovery.{field} lists {prefix:?}, which is broader than what AirflowSecretSource {} allows namespace {} (name prefixes: {}); nothing is listed",
            self.source,
            self.namespace,
            shown(&self.name_prefixes)
        )
    }
}

fn shown(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a binding reads nothing: Ready is False with this reason and message, and the managed
/// Secret keeps what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Which source the binding uses: `Some(name)` for a source (named or the default), `None`
/// for the inline (or the operator's own) source.
pub fn source_name<'a>(
    spec: &'a AirflowSecretBindingSpec,
    settings: &'a Settings,
) -> Option<&'a str> {
    match &spec.source_ref {
        Some(r) => Some(&r.name),
        None if spec.source.is_empty() => settings.default_source.as_deref(),
        None => None,
    }
}

/// The grant of a binding in `namespace`: `sources` finds a source by name, `namespace_labels`
/// are the labels of the binding's namespace (empty when unknown).
pub fn grant(
    namespace: &str,
    spec: &AirflowSecretBindingSpec,
    settings: &Settings,
    sources: impl Fn(&str) -> Option<std::sync::Arc<AirflowSecretSource>>,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Grant, Refusal> {
    let Some(name) = source_name(spec, settings) else {
        return inline(spec, settings);
    };
    let field = if spec.source_ref.is_some() {
        "spec.sourceRef.name"
    } else {
        "the installation's default source, chart value sources.default"
    };
    let Some(source) = sources(name) else {
        return Err(Refusal {
            reason: reason::SOURCE_NOT_FOUND,
            message: format!(
                "AirflowSecretSource {name} ({field}) does not exist; the managed Secret keeps what it holds"
            ),
        });
    };
    admit_namespace(&source, namespace, namespace_labels)?;
    let s = &source.spec;
    let tagged = s.role_arn.is_some();
    Ok(Grant {
        origin: Origin {
            region: s.region.clone(),
            role_arn: s.role_arn.clone(),
            external_id: s.external_id.clone(),
            endpoint: s.endpoint.clone(),
            session_name: tagged.then(|| session_name(namespace)),
            session_tags: if tagged {
                vec![
                    (SOURCE_TAG.into(), name.into()),
                    (NAMESPACE_TAG.into(), namespace.into()),
                ]
            } else {
                vec![]
            },
        },
        allowed: Some(Allowed::of(&source, namespace)),
    })
}

/// An inline source (or none): allowed as the installation says.
fn inline(spec: &AirflowSecretBindingSpec, settings: &Settings) -> Result<Grant, Refusal> {
    let s = &spec.source;
    if !settings.allow_inline {
        let fields = [
            ("roleArn", s.role_arn.is_some()),
            ("endpoint", s.endpoint.is_some()),
            ("externalId", s.external_id.is_some()),
            ("roleSessionName", s.role_session_name.is_some()),
            (
                "region",
                s.region.is_some() && settings.default_source.is_some(),
            ),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, set)| *set) {
            let instead = match &settings.default_source {
                Some(d) => format!(
                    "remove spec.source to read through the default source {d}, or name an AirflowSecretSource in spec.sourceRef"
                ),
                None => "name an AirflowSecretSource in spec.sourceRef".into(),
            };
            return Err(Refusal {
                reason: reason::SOURCE_REFUSED,
                message: format!(
                    "spec.source.{field}: this installation does not allow inline sources (chart value sources.allowInline); {instead}"
                ),
            });
        }
    }
    Ok(Grant {
        origin: Origin::from(s),
        allowed: None,
    })
}

/// Whether the source lets `namespace` use it (by name or by its labels).
fn admit_namespace(
    source: &AirflowSecretSource,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Result<(), Refusal> {
    let ns = &source.spec.namespaces;
    let name = kube::ResourceExt::name_any(source);
    if ns.names.iter().any(|n| n == namespace) {
        return Ok(());
    }
    if let Some(sel) = &ns.selector {
        let selector = Selector::try_from(sel.clone()).map_err(|e| Refusal {
            reason: reason::SOURCE_REFUSED,
            message: format!(
                "AirflowSecretSource {name}: spec.namespaces.selector is invalid ({e}); no namespace may use it"
            ),
        })?;
        if selector.matches(labels) {
            return Ok(());
        }
    }
    Err(Refusal {
        reason: reason::SOURCE_REFUSED,
        message: format!(
            "AirflowSecretSource {name} does not allow namespace {namespace} (its spec.namespaces); the managed Secret keeps what it holds"
        ),
    })
}

/// The role session name for a namespace: `aso.<namespace>`, within STS's 64 characters (a
/// long namespace is cut and ends with 8 hex digits of its SHA-256, so that names stay
/// distinct).
pub fn session_name(namespace: &str) -> String {
    let full = format!("aso.{namespace}");
    if full.len() <= SESSION_NAME_MAX {
        return full;
    }
    let hash = hex::encode(Sha256::digest(namespace.as_bytes()));
    let keep = SESSION_NAME_MAX - "aso.".len() - 9;
    format!("aso.{}-{}", &namespace[..keep], &hash[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AirflowSecretSourceSpec, AllowedSecrets, SourceNamespaces, SourceRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use std::sync::Arc;

    fn source(
        name: &str,
        names: &[&str],
        prefixes: &[&str],
        arns: &[&str],
    ) -> Arc<AirflowSecretSource> {
        Arc::new(AirflowSecretSource::new(
            name,
            AirflowSecretSourceSpec {
                region: Some("eu-west-1".into()),
                role_arn: Some("arn:aws:iam::123456789012:role/team".into()),
                namespaces: SourceNamespaces {
                    names: names.iter().map(|s| s.to_string()).collect(),
                    selector: None,
                },
                allowed: AllowedSecrets {
                    name_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
                    arn_patterns: arns.iter().map(|s| s.to_string()).collect(),
                },
                ..Default::default()
            },
        ))
    }

    fn spec_ref(name: &str) -> AirflowSecretBindingSpec {
        AirflowSecretBindingSpec {
            source_ref: Some(SourceRef { name: name.into() }),
            ..Default::default()
        }
    }

    fn grant_in(
        ns: &str,
        spec: &AirflowSecretBindingSpec,
        s: &Arc<AirflowSecretSource>,
    ) -> Result<Grant, Refusal> {
        let found = s.clone();
        grant(
            ns,
            spec,
            &Settings::default(),
            move |n| (n == "team").then(|| found.clone()),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn a_source_admits_its_namespaces_and_tags_the_session_with_source_and_namespace() {
        let s = source("team", &["a"], &["airflow/{namespace}/"], &[]);
        let g = grant_in("a", &spec_ref("team"), &s).unwrap();
        assert_eq!(g.origin.session_name.as_deref(), Some("aso.a"));
        assert_eq!(
            g.origin.session_tags,
            vec![
                (SOURCE_TAG.to_string(), "team".to_string()),
                (NAMESPACE_TAG.to_string(), "a".to_string())
            ]
        );
        assert_eq!(g.origin.region.as_deref(), Some("eu-west-1"));
        let r = grant_in("b", &spec_ref("team"), &s).unwrap_err();
        assert_eq!(r.reason, reason::SOURCE_REFUSED);
        assert!(
            r.message.contains("does not allow namespace b"),
            "{}",
            r.message
        );
        let r = grant_in("a", &spec_ref("other"), &s).unwrap_err();
        assert_eq!(r.reason, reason::SOURCE_NOT_FOUND);
        assert!(r.message.contains("spec.sourceRef.name"), "{}", r.message);
    }

    #[test]
    fn the_same_role_for_two_namespaces_is_two_origins_the_operators_identity_one() {
        let s = source("team", &["a", "b"], &[""], &[]);
        let a = grant_in("a", &spec_ref("team"), &s).unwrap();
        let b = grant_in("b", &spec_ref("team"), &s).unwrap();
        assert_ne!(a.origin, b.origin);
        let mut own = (*s).clone();
        own.spec.role_arn = None;
        let own = Arc::new(own);
        let a = grant_in("a", &spec_ref("team"), &own).unwrap();
        let b = grant_in("b", &spec_ref("team"), &own).unwrap();
        assert_eq!(a.origin, b.origin);
        assert!(a.origin.session_tags.is_empty());
    }

    #[test]
    fn names_arns_and_listings_are_checked_against_the_namespaces_allowance() {
        let s = source(
            "team",
            &["a"],
            &["airflow/{namespace}/"],
            &["arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/{namespace}/*"],
        );
        let g = grant_in("a", &spec_ref("team"), &s).unwrap();
        assert!(g.admits("airflow/a/db").is_ok());
        let e = g.admits("airflow/b/db").unwrap_err();
        assert!(
            e.contains("airflow/b/db is outside what AirflowSecretSource team allows namespace a"),
            "{e}"
        );
        assert!(e.contains("\"airflow/a/\""), "{e}");
        // Full and partial ARNs, of this and of other namespaces, accounts and regions.
        assert!(
            g.admits("arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/a/db-AbCdEf")
                .is_ok()
        );
        assert!(
            g.admits("arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/a/db")
                .is_ok()
        );
        for refused in [
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/b/db-AbCdEf",
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:airflow/b/db",
            "arn:aws:secretsmanager:eu-west-1:999999999999:secret:airflow/a/db",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:airflow/a/db",
        ] {
            assert!(g.admits(refused).is_err(), "{refused}");
        }
        // A name never passes as an ARN, nor an ARN as a name.
        assert!(g.admits("arn:aws:secretsmanager:x:airflow/a/").is_err());
        // Listings: within the prefix only.
        assert!(g.may_list("airflow/a/connections/"));
        assert!(g.may_list("airflow/a/"));
        assert!(!g.may_list("airflow/"));
        assert!(!g.may_list(""));
        assert!(!g.may_list("airflow/ab/"));
        assert!(g.admits_name("airflow/a/x"));
        assert!(!g.admits_name("airflow/b/x"));
    }

    #[test]
    fn a_selector_admits_namespaces_by_label() {
        let mut s = (*source("team", &[], &[""], &[])).clone();
        s.spec.namespaces.selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tenant".into(),
                operator: "In".into(),
                values: Some(vec!["blue".into()]),
            }]),
            ..Default::default()
        });
        let s = Arc::new(s);
        let labels = BTreeMap::from([("tenant".to_string(), "blue".to_string())]);
        let found = s.clone();
        let lookup = move |_: &str| Some(found.clone());
        assert!(
            grant(
                "x",
                &spec_ref("team"),
                &Settings::default(),
                &lookup,
                &labels
            )
            .is_ok()
        );
        let r = grant(
            "x",
            &spec_ref("team"),
            &Settings::default(),
            &lookup,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(r.reason, reason::SOURCE_REFUSED);
        // An empty selector matches every namespace.
        let mut all = (*s).clone();
        all.spec.namespaces.selector = Some(LabelSelector::default());
        let all = Arc::new(all);
        assert!(
            grant(
                "x",
                &spec_ref("team"),
                &Settings::default(),
                move |_| Some(all.clone()),
                &BTreeMap::new()
            )
            .is_ok()
        );
    }

    #[test]
    fn inline_sources_are_refused_naming_the_field_unless_allowed() {
        let mut spec = AirflowSecretBindingSpec::default();
        spec.source.endpoint = Some("http://169.254.169.254".into());
        let none = |_: &str| None;
        let r = grant("a", &spec, &Settings::default(), none, &BTreeMap::new()).unwrap_err();
        assert_eq!(r.reason, reason::SOURCE_REFUSED);
        assert!(
            r.message.starts_with("spec.source.endpoint:"),
            "{}",
            r.message
        );
        let allow = Settings {
            allow_inline: true,
            default_source: None,
        };
        let g = grant("a", &spec, &allow, none, &BTreeMap::new()).unwrap();
        assert_eq!(g.origin.endpoint.as_deref(), Some("http://169.254.169.254"));
        assert!(g.allowed.is_none());
        // A region alone is the operator's own identity elsewhere: fine without a default
        // source, an escape from it with one.
        let mut spec = AirflowSecretBindingSpec::default();
        spec.source.region = Some("us-east-1".into());
        assert!(grant("a", &spec, &Settings::default(), none, &BTreeMap::new()).is_ok());
        let with_default = Settings {
            allow_inline: false,
            default_source: Some("shared".into()),
        };
        let r = grant("a", &spec, &with_default, none, &BTreeMap::new()).unwrap_err();
        assert!(
            r.message.starts_with("spec.source.region:"),
            "{}",
            r.message
        );
        assert!(r.message.contains("default source shared"), "{}", r.message);
    }

    #[test]
    fn bindings_without_a_source_use_the_default_one() {
        let s = source("shared", &["a"], &["airflow/{namespace}/"], &[]);
        let settings = Settings {
            allow_inline: false,
            default_source: Some("shared".into()),
        };
        let found = s.clone();
        let g = grant(
            "a",
            &AirflowSecretBindingSpec::default(),
            &settings,
            move |n| (n == "shared").then(|| found.clone()),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            g.allowed.unwrap().name_prefixes,
            vec!["airflow/a/".to_string()]
        );
        let r = grant(
            "a",
            &AirflowSecretBindingSpec::default(),
            &settings,
            |_| None,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(r.message.contains("sources.default"), "{}", r.message);
        // No default source: the operator's own identity, unrestricted.
        let g = grant(
            "a",
            &AirflowSecretBindingSpec::default(),
            &Settings::default(),
            |_| None,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            g,
            Grant {
                origin: Origin::default(),
                allowed: None
            }
        );
    }

    #[test]
    fn session_names_stay_within_64_characters_and_distinct() {
        assert_eq!(session_name("team-a"), "aso.team-a");
        let long_a = "a".repeat(63);
        let mut long_b = "a".repeat(62);
        long_b.push('b');
        let (a, b) = (session_name(&long_a), session_name(&long_b));
        assert_eq!(a.len(), 64);
        assert_eq!(b.len(), 64);
        assert_ne!(a, b);
        assert_eq!(session_name(&"c".repeat(60)).len(), 64);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
        );
    }
}
