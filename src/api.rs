//! The `AirflowSecretBinding` API (group `airflow-secrets.io`, version `v1alpha1`).
//!
//! Doc comments on these types become the CRD's OpenAPI descriptions, i.e. what
//! `kubectl explain airflowsecretbinding.spec` prints. Validation that the API server can do
//! (required fields, patterns, enums, CEL rules) lives here too, so that a bad binding is
//! rejected at `kubectl apply` with a message naming the field. What CEL cannot check (a lookup
//! pattern that the operator's regex engine refuses, ids Airflow would not accept) is reported
//! per entry in `status`.

// `printcolumn(..)` repeats `type_ = ..` by design; clippy reads that as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every resource this operator defines.
pub const GROUP: &str = "airflow-secrets.io";

/// Materialise Airflow connections, variables and config options from AWS Secrets Manager into a
/// managed Kubernetes Secret, and wire that Secret into Airflow agent Deployments.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "airflow-secrets.io",
    version = "v1alpha1",
    kind = "AirflowSecretBinding",
    namespaced,
    status = "AirflowSecretBindingStatus",
    shortname = "asb",
    category = "airflow",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(
        name = "Entries",
        type_ = "integer",
        json_path = ".status.syncedEntries"
    ),
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(
    doc = "Binds AWS Secrets Manager entries to Airflow connections, variables and config options on Airflow agent Deployments."
)]
#[x_kube(validation = Rule::new(
    "!has(self.mode) || self.mode != 'Backend' || ((!has(self.connections) || size(self.connections) == 0) && (!has(self.variables) || size(self.variables) == 0) && (!has(self.config) || size(self.config) == 0))"
).message("mode Backend configures Airflow's own SecretsManagerBackend and materialises no values: remove connections, variables and config").field_path(".mode"))]
#[x_kube(validation = Rule::new(
    "!has(self.mode) || self.mode != 'Backend' || has(self.discovery)"
).message("mode Backend needs discovery: its prefixes and patterns become the backend kwargs").field_path(".discovery"))]
#[x_kube(validation = Rule::new(
    "(has(self.mode) && self.mode == 'Backend') || has(self.discovery) || (has(self.connections) && size(self.connections) > 0) || (has(self.variables) && size(self.variables) > 0) || (has(self.config) && size(self.config) > 0)"
).message("the binding selects nothing: give connections, variables, config or discovery"))]
#[x_kube(validation = Rule::new(
    "!has(self.mode) || self.mode != 'Backend' || !has(self.target.injection) || self.target.injection != 'KubernetesBackend'"
).message("mode Backend configures Airflow's SecretsManagerBackend, injection KubernetesBackend its KubernetesSecretsBackend: choose one").field_path(".target.injection"))]
#[x_kube(validation = Rule::new(
    "!has(self.team) || !has(self.mode) || self.mode != 'Backend'"
).message("mode Backend configures Airflow's SecretsManagerBackend, which scopes lookups by the task's team itself: remove team").field_path(".team"))]
#[x_kube(validation = Rule::new(
    "!has(self.team) || !has(self.config) || size(self.config) == 0"
).message("Airflow reads configuration for all teams alike (config has no team form): put config entries in a binding without team").field_path(".config"))]
#[x_kube(validation = Rule::new(
    "!has(self.sourceRef) || !has(self.source) || !(has(self.source.region) || has(self.source.roleArn) || has(self.source.externalId) || has(self.source.roleSessionName) || has(self.source.endpoint))"
).message("sourceRef names an AirflowSecretSource, which sets region, role and endpoint: remove spec.source").field_path(".source"))]
#[serde(rename_all = "camelCase")]
pub struct AirflowSecretBindingSpec {
    /// The `AirflowSecretSource` (cluster-scoped, set up by the platform admin) to read through:
    /// its region, identity and endpoint, within the secrets it allows this namespace. Without
    /// it, the installation's default source (chart value `sources.default`) when one is set,
    /// else `source` below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<SourceRef>,

    /// An inline source: AWS region, optional role to assume, optional endpoint. `roleArn` and
    /// `endpoint` are refused unless the installation allows inline sources (chart value
    /// `sources.allowInline`); with a default source, any field here is.
    #[serde(default)]
    pub source: Source,

    /// Connections from explicitly named secrets. Each becomes `AIRFLOW_CONN_<CONN_ID upper-cased>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["connId".into()]))]
    pub connections: Vec<ConnectionEntry>,

    /// Variables from explicitly named secrets. Each becomes `AIRFLOW_VAR_<KEY upper-cased>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["key".into()]))]
    pub variables: Vec<VariableEntry>,

    /// Airflow config options from explicitly named secrets. Each becomes
    /// `AIRFLOW__<SECTION>__<KEY>` (upper-cased, `.` in the section becomes `_`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["section".into(), "key".into()]))]
    pub config: Vec<ConfigEntry>,

    /// Discover secrets by name prefix, with the same keyword arguments and meaning as Airflow's
    /// `SecretsManagerBackend` (`connections_prefix`, `sep`, `connections_lookup_pattern`, ...).
    /// A kind whose prefix is not given is not discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,

    /// The Airflow team whose tasks read these connections and variables (Airflow ≥ 3.3 with
    /// `[core] multi_team = True`). They are delivered team-scoped: `AIRFLOW_CONN__<TEAM>___<ID>`
    /// and `AIRFLOW_VAR__<TEAM>___<KEY>` (upper-cased), or Secrets labelled
    /// `airflow.apache.org/team=<team>` with `injection: KubernetesBackend`. Discovery finds the
    /// names Airflow's `SecretsManagerBackend` looks up first for the team,
    /// `<prefix><sep><team>--<id>`, the lookup pattern applying to `<id>`; a prefix that is
    /// empty after Airflow strips `sep` finds none (Airflow makes no team lookup then). Airflow
    /// falls back to the global names itself: deliver those with a binding without `team`. Ids
    /// containing `--` are refused (Airflow's Secrets Manager backend refuses them in
    /// multi-team mode), ids containing `___` too with env delivery (its env backend refuses
    /// them). Config options have no team form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_-]{3,50}$"))]
    pub team: Option<String>,

    /// Which Secret to write and which workloads receive it.
    pub target: Target,

    /// `Materialize` (default) copies values into the managed Secret. `Backend` instead configures
    /// Airflow's own `SecretsManagerBackend` on the workloads (`AIRFLOW__SECRETS__BACKEND`,
    /// `AIRFLOW__SECRETS__BACKEND_KWARGS` and the `[workers]` variants) from `discovery` and
    /// `source`, and copies no values.
    #[serde(default)]
    pub mode: Mode,

    /// How often Secrets Manager is checked for new versions, e.g. `30s`, `15m`, `1h`, `1h30m`.
    /// The operator checks the secrets of all bindings of a source together, on each binding's
    /// interval, and reconciles a binding when one of its secrets changed; entries no listing
    /// can check (ARNs, pinned stages or version ids) are re-read on the interval. An unchanged
    /// binding is reconciled anyway every ten intervals (at least 5 minutes, at most 10 hours).
    #[serde(default = "default_refresh_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("refreshInterval must be at least 1s"))]
    pub refresh_interval: String,

    /// What happens when a refresh suddenly finds far fewer secrets than before (fewer than half,
    /// and at least two fewer, with an unchanged spec) — typically a wrong region, a role that
    /// lost `secretsmanager:ListSecrets`, or a mistyped prefix rather than intended deletions.
    /// `Hold` (default) keeps the last good content on the agents and sets Ready=False with
    /// reason `SourceEmptied`; a new value of the annotation `airflow-secrets.io/force-sync`
    /// accepts the deletions once. `Follow` applies them like any other change. Deleting single
    /// secrets is always followed, as Airflow would no longer find them.
    #[serde(default)]
    pub mass_deletion_policy: MassDeletionPolicy,

    /// What happens to the managed Secret when the binding is deleted. `Delete` (default) removes
    /// it; `Retain` keeps it (without owner). In both cases the injected env and the rollout
    /// annotation are removed from the workloads.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl AirflowSecretBindingSpec {
    /// `spec.discovery.extraConnWords`, empty without discovery: an input of every conversion.
    pub fn extra_conn_words(&self) -> &BTreeMap<String, Vec<String>> {
        static NONE: BTreeMap<String, Vec<String>> = BTreeMap::new();
        self.discovery
            .as_ref()
            .map_or(&NONE, |d| &d.extra_conn_words)
    }
}

/// Default for `spec.refreshInterval`.
pub fn default_refresh_interval() -> String {
    "1h".into()
}

/// Where the secrets live.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.externalId) || has(self.roleArn)").message("source.externalId needs source.roleArn").field_path(".externalId"))]
#[x_kube(validation = Rule::new("!has(self.roleSessionName) || has(self.roleArn)").message("source.roleSessionName needs source.roleArn").field_path(".roleSessionName"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// AWS region of the secrets, e.g. `eu-west-1`. Defaults to the operator's own region
    /// (`AWS_REGION` or its profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// IAM role to assume for this binding (`arn:aws:iam::<account>:role/<name>`). Without it the
    /// operator's own identity (IRSA, EKS Pod Identity, instance profile) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,

    /// External id passed when assuming `roleArn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,

    /// Session name used when assuming `roleArn` (default: `airflow-secrets-operator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[\w+=,.@-]{2,64}$"))]
    pub role_session_name: Option<String>,

    /// Secrets Manager endpoint override (for VPC endpoints or a local emulator), e.g.
    /// `https://vpce-0abc.secretsmanager.eu-west-1.vpce.amazonaws.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,
}

impl Source {
    /// Whether no field is set (the binding reads with the operator's own identity and region).
    pub fn is_empty(&self) -> bool {
        *self == Source::default()
    }
}

/// A reference to an `AirflowSecretSource`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Name of the `AirflowSecretSource`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
}

/// Where the secrets of some namespaces live and what those namespaces may read there. Set up by
/// the platform admin: bindings name it in `spec.sourceRef` and read with its identity only
/// what it allows their namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "airflow-secrets.io",
    version = "v1alpha1",
    kind = "AirflowSecretSource",
    shortname = "asrc",
    category = "airflow",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleArn"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(
    doc = "An AWS Secrets Manager source set up by the platform admin: region, identity and endpoint, the namespaces that may use it and the secrets they may read."
)]
#[x_kube(validation = Rule::new("!has(self.externalId) || has(self.roleArn)").message("externalId needs roleArn").field_path(".externalId"))]
#[serde(rename_all = "camelCase")]
pub struct AirflowSecretSourceSpec {
    /// AWS region of the secrets, e.g. `eu-west-1`. Defaults to the operator's own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    pub region: Option<String>,

    /// IAM role to assume (`arn:aws:iam::<account>:role/<name>`), once per namespace, with the
    /// session tags `airflow-secrets-source` (this source's name) and `airflow-secrets-namespace`
    /// and the session name `aso.<namespace>`; the role's trust policy must allow
    /// `sts:AssumeRole` and `sts:TagSession` (docs/iam.md). Without it the operator's own
    /// identity is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"))]
    pub role_arn: Option<String>,

    /// External id passed when assuming `roleArn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1224))]
    pub external_id: Option<String>,

    /// Secrets Manager endpoint (a VPC endpoint, or a local emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,

    /// The namespaces whose bindings may use this source.
    pub namespaces: SourceNamespaces,

    /// The secrets those bindings may read. `{namespace}` in a prefix or pattern stands for the
    /// binding's namespace, e.g. `airflow/{namespace}/`.
    pub allowed: AllowedSecrets,
}

/// The namespaces that may use a source: those named, and those the selector matches.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("size(self.names) > 0 || has(self.selector)").message("namespaces needs names or a selector (an empty selector, {}, matches every namespace)"))]
#[serde(rename_all = "camelCase")]
pub struct SourceNamespaces {
    /// Namespace names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub names: Vec<String>,

    /// A label selector on namespaces; `{}` matches every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// What the bindings of a source may read. A secret is allowed when its name starts with one of
/// `namePrefixes`, or, named by ARN (full or partial), when the ARN matches one of `arnPatterns`.
/// Discovery may list only under an allowed prefix: a prefix broader than every allowed one is
/// refused before any call.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("size(self.namePrefixes) > 0 || size(self.arnPatterns) > 0").message("allowed needs namePrefixes or arnPatterns (the prefix \"\" allows every name)"))]
#[serde(rename_all = "camelCase")]
pub struct AllowedSecrets {
    /// Secret name prefixes, case-sensitive as Secrets Manager names are, e.g.
    /// `airflow/{namespace}/`. Mind the separator: `airflow/team-a` also allows
    /// `airflow/team-ab/x`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub name_prefixes: Vec<String>,

    /// Patterns of secret ARNs that may be named in bindings, `*` matching any characters and
    /// `?` one, as in IAM resource ARNs, e.g.
    /// `arn:aws:secretsmanager:eu-west-1:123456789012:secret:shared/{namespace}/*`. A partial
    /// ARN (without the random suffix) is matched as written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub arn_patterns: Vec<String>,
}

/// Which version of a secret to read. Without `versionStage` or `versionId`, `AWSCURRENT`.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub struct VersionSelector {
    /// Version stage label, e.g. `AWSCURRENT` (default), `AWSPREVIOUS` or a custom label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub version_stage: Option<String>,

    /// Exact version id (a UUID shown by `aws secretsmanager list-secret-version-ids`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 32, max = 64))]
    pub version_id: Option<String>,
}

const SECRET_ID_PATTERN: &str = r"^[A-Za-z0-9/_+=.@:-]+$";

/// One Airflow connection read from one secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.versionStage) || !has(self.versionId)").message("versionStage and versionId are mutually exclusive").field_path(".versionId"))]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEntry {
    /// Airflow connection id, as used in DAGs (`conn_id`). Airflow accepts letters, digits and
    /// `_ # ! ( ) - . : / \`, at most 250 characters.
    #[schemars(length(min = 1, max = 250))]
    pub conn_id: String,

    /// Secret name or full ARN in Secrets Manager. Its `SecretString` is either an Airflow URI
    /// (`postgres://user:pass@host:5432/db`, copied verbatim) or a JSON object, standardised
    /// exactly as Airflow's `SecretsManagerBackend` does (aliases such as `user`, `username`,
    /// `engine`; keys Airflow does not know, such as `dbname`, are dropped).
    #[schemars(length(min = 1, max = 2048), regex(pattern = SECRET_ID_PATTERN))]
    pub secret_id: String,

    #[serde(flatten)]
    pub version: VersionSelector,
}

/// One Airflow variable read from one secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.versionStage) || !has(self.versionId)").message("versionStage and versionId are mutually exclusive").field_path(".versionId"))]
#[serde(rename_all = "camelCase")]
pub struct VariableEntry {
    /// Airflow variable key, as used in `Variable.get(key)`.
    #[schemars(length(min = 1, max = 250))]
    pub key: String,

    /// Secret name or full ARN. Its `SecretString` becomes the variable's value verbatim.
    #[schemars(length(min = 1, max = 2048), regex(pattern = SECRET_ID_PATTERN))]
    pub secret_id: String,

    #[serde(flatten)]
    pub version: VersionSelector,
}

/// One Airflow config option read from one secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.versionStage) || !has(self.versionId)").message("versionStage and versionId are mutually exclusive").field_path(".versionId"))]
#[x_kube(validation = Rule::new("!self.section.contains('__') && !self.key.contains('__')").message("section and key must not contain '__': Airflow splits AIRFLOW__SECTION__KEY on it").field_path(".section"))]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntry {
    /// Config section, e.g. `smtp`, `database`, `celery`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_.]+$"))]
    pub section: String,

    /// Config option, e.g. `smtp_password`, `sql_alchemy_conn`.
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9_]+$"))]
    pub key: String,

    /// Secret name or full ARN. Its `SecretString` becomes the option's value verbatim.
    #[schemars(length(min = 1, max = 2048), regex(pattern = SECRET_ID_PATTERN))]
    pub secret_id: String,

    #[serde(flatten)]
    pub version: VersionSelector,
}

/// Discovery of secrets by prefix, with the keyword arguments of Airflow's
/// `SecretsManagerBackend` and their meaning: a secret named
/// `<prefix with trailing sep characters stripped><sep><id>` is connection (or variable) `<id>`,
/// and a lookup pattern, when given, must match the id at its start, case-insensitively
/// (Python's `re.match(pattern, id, re.IGNORECASE)`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.connectionsPrefix) || has(self.variablesPrefix) || has(self.configPrefix)").message("discovery needs at least one of connectionsPrefix, variablesPrefix, configPrefix"))]
#[x_kube(validation = Rule::new("!has(self.connectionsLookupPattern) || has(self.connectionsPrefix)").message("connectionsLookupPattern needs connectionsPrefix").field_path(".connectionsLookupPattern"))]
#[x_kube(validation = Rule::new("!has(self.variablesLookupPattern) || has(self.variablesPrefix)").message("variablesLookupPattern needs variablesPrefix").field_path(".variablesLookupPattern"))]
#[x_kube(validation = Rule::new("!has(self.configLookupPattern) || has(self.configPrefix)").message("configLookupPattern needs configPrefix").field_path(".configLookupPattern"))]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    /// Prefix of connection secrets (Airflow's default is `airflow/connections`). Not given: no
    /// connections are discovered (and, in Backend mode, Airflow looks none up). An empty string
    /// means the bare id is the secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub connections_prefix: Option<String>,

    /// Prefix of variable secrets (Airflow's default is `airflow/variables`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub variables_prefix: Option<String>,

    /// Prefix of config secrets (Airflow's default is `airflow/config`). Used in Backend mode;
    /// in Materialize mode config options are only read from `spec.config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub config_prefix: Option<String>,

    /// Separator between prefix and id (Airflow's default `/`). Trailing characters of the prefix
    /// that occur in `sep` are stripped first, as Python's `prefix.rstrip(sep)` does.
    #[serde(default = "default_sep")]
    #[schemars(length(min = 1, max = 16))]
    pub sep: String,

    /// Regular expression a connection id must match at its start, case-insensitively, to be
    /// discovered: evaluated exactly as Airflow's `re.match(pattern, id, re.IGNORECASE)`,
    /// look-around, back-references, conditionals, atomic groups and possessive quantifiers
    /// included. A pattern Python refuses is reported as Invalid in status with Python's message;
    /// a match that exceeds the backtracking limit discovers nothing for that id (logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub connections_lookup_pattern: Option<String>,

    /// Like `connectionsLookupPattern`, for variable keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub variables_lookup_pattern: Option<String>,

    /// Like `connectionsLookupPattern`, for config keys (Backend mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub config_lookup_pattern: Option<String>,

    /// Extra JSON key aliases per connection field, as Airflow's `extra_conn_words`:
    /// `{"login": ["account"], "host": ["endpoint"]}`. Keys: login (or user), password, host,
    /// port, schema, conn_type, extra.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.all(k, k in ['login', 'user', 'password', 'host', 'port', 'schema', 'conn_type', 'extra'])").message("extraConnWords keys must be login, user, password, host, port, schema, conn_type or extra"))]
    pub extra_conn_words: BTreeMap<String, Vec<String>>,
}

/// Default for `spec.discovery.sep`, as Airflow's.
pub fn default_sep() -> String {
    "/".into()
}

/// Which Secret to write and where to inject it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.injection == 'SecretOnly' || has(self.workloads)").message("target.workloads is required unless target.injection is SecretOnly").field_path(".workloads"))]
#[x_kube(validation = Rule::new("!has(self.backendNamespace) || self.injection == 'KubernetesBackend'").message("target.backendNamespace is where injection KubernetesBackend writes its labelled Secrets: set injection KubernetesBackend or remove it").field_path(".backendNamespace"))]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Name of the managed Secret (default: `<binding name>-airflow`). The operator never takes
    /// over a Secret it did not create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,

    /// Deployments in the binding's namespace that receive the values: those of `helmRelease`
    /// that also match `selector` (when both are given) and are of one of `components`, plus every
    /// Deployment listed in `names`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<WorkloadSelector>,

    /// Agent components that receive the values (default: worker, dagProcessor, triggerer; the
    /// sentinel only when listed). A Deployment's component is read from its
    /// `app.kubernetes.io/component` / `component` label, or else its name
    /// (`<prefix>-worker-<name>`, `<prefix>-dag-processor`, `<prefix>-triggerer`,
    /// `<prefix>-sentinel`). Deployments listed in `workloads.names` are always included.
    #[serde(default = "default_components")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub components: Vec<Component>,

    /// Containers that receive the values (default: the first container of the pod template,
    /// the Airflow process; sidecars get nothing unless listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub containers: Vec<String>,

    /// How the values reach the containers: `Env` (default) adds one `env` entry with a
    /// `secretKeyRef` per value and never touches entries it does not own; `EnvFrom` adds one
    /// `envFrom` entry for the whole Secret (`envFrom` is an atomic list: use it only where no one
    /// else sets `envFrom`); `SecretOnly` writes the Secret and touches no workload.
    /// `KubernetesBackend` writes one Secret per connection and variable, labelled and keyed the
    /// way Airflow's `KubernetesSecretsBackend` (apache-airflow-providers-cncf-kubernetes) looks
    /// them up (`airflow.apache.org/connection-id` / `variable-key`, data key `value`), points
    /// the workloads' `[secrets] backend` and `[workers] secrets_backend` at that backend in this
    /// namespace (or `backendNamespace`), and grants their ServiceAccounts `list` on Secrets
    /// there: a rotation updates one
    /// Secret and restarts nothing (the agents read it at their next lookup). Config entries are
    /// injected as env (Airflow reads its config at start).
    #[serde(default)]
    pub injection: Injection,

    /// With `injection: KubernetesBackend`, the namespace that holds the labelled Secrets
    /// (default: the binding's own). The backend's kwargs name it, and the workloads'
    /// ServiceAccounts may list Secrets there only, not in their own namespace. The namespace
    /// must be annotated `airflow-secrets.io/backend-for` with the binding's namespace among its
    /// comma-separated names (`*`: any), by whoever administers namespaces; otherwise the
    /// binding is Ready=False `BackendNamespaceRefused` and nothing is written there. An
    /// operator limited to some namespaces (`--namespaces`) must watch it too. The Secrets,
    /// Role and RoleBinding there carry no owner reference (none can cross namespaces): they
    /// are labelled `airflow-secrets.io/binding` and `airflow-secrets.io/binding-namespace`, only
    /// objects so labelled are touched, and the operator deletes them when the binding stops
    /// targeting the namespace and when it is deleted (the Secrets are kept, unlabelled, with
    /// `deletionPolicy: Retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub backend_namespace: Option<String>,

    /// Roll the workloads when the content changes (default true), through a pod-template
    /// annotation carrying the content hash.
    #[serde(default = "default_true")]
    pub rollout_on_change: bool,
}

fn default_true() -> bool {
    true
}

/// Default for `spec.target.components`.
pub fn default_components() -> Vec<Component> {
    vec![
        Component::Worker,
        Component::DagProcessor,
        Component::Triggerer,
    ]
}

/// Selects Deployments in the binding's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("has(self.helmRelease) || has(self.selector) || size(self.names) > 0").message("workloads needs helmRelease, selector or names"))]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Helm release of the agent chart (`helm install <release> ...`): Deployments annotated
    /// `meta.helm.sh/release-name: <release>` (or, lacking that annotation as `helm template`
    /// output does, labelled `app.kubernetes.io/instance: <release>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 53))]
    pub helm_release: Option<String>,

    /// Label selector on the Deployments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Deployment names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub names: Vec<String>,
}

/// An Airflow Remote Execution agent component.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "camelCase")]
pub enum Component {
    Worker,
    DagProcessor,
    Triggerer,
    Sentinel,
}

/// How values reach the containers.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Injection {
    #[default]
    Env,
    EnvFrom,
    SecretOnly,
    KubernetesBackend,
}

/// Materialise values or configure Airflow's backend.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Materialize,
    Backend,
}

/// What happens when a refresh suddenly finds far fewer secrets than before.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MassDeletionPolicy {
    #[default]
    Hold,
    Follow,
}

/// What happens to the managed Secret when the binding is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// Observed state. Never contains a secret value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AirflowSecretBindingStatus {
    /// `Ready` (is the managed Secret current and injected?) and warnings such as
    /// `BackendShadowing` and `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the binding last read Secrets Manager successfully (RFC 3339): when one of its
    /// secrets changed, and at least every ten refresh intervals. A read that changes nothing
    /// else in the status moves it at most every 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,

    /// SHA-256 of the managed Secret's content; also the pod-template annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,

    /// Name of the managed Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// Further Secrets holding the content when it exceeds what one Secret can hold
    /// (`<secretName>-2`, `<secretName>-3`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_secret_names: Vec<String>,

    /// Number of entries in state Synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_entries: Option<i64>,

    /// Number of entries of the binding, whatever their state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_entries: Option<i64>,

    /// Number of entries per state (`Synced`, `NotFound`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entry_counts: BTreeMap<String, i64>,

    /// Entries, those that need attention first. Every entry is listed while the binding has at
    /// most 32; beyond that only entries that are not Synced, up to about 12 KiB (the counts
    /// above always cover all), so that status stays small at any size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<EntryStatus>,

    /// Workloads the binding selects and what they carry of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,
}

/// State of one entry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EntryStatus {
    /// `Connection`, `Variable` or `Config`.
    pub kind: EntryKind,
    /// Connection id, variable key, or `section.key`.
    pub name: String,
    /// Environment variable the value is injected as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_name: Option<String>,
    /// Secrets Manager secret name.
    pub secret_id: String,
    /// Version read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub state: EntryState,
    /// Why, for any state but Synced. Never contains a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Kind of entry.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum EntryKind {
    Connection,
    Variable,
    Config,
}

/// State of one entry.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// In the managed Secret and injected.
    Synced,
    /// The secret (or the version asked for) does not exist.
    NotFound,
    /// The secret exists but Airflow would not read it (e.g. broken JSON), or the entry itself is
    /// invalid (e.g. a lookup pattern the operator cannot evaluate exactly).
    Invalid,
    /// The name or value cannot be carried by a Kubernetes Secret key or environment variable.
    Unrepresentable,
    /// Two entries map to the same environment variable; neither is injected.
    Conflict,
    /// The operator's identity may not read the secret.
    AccessDenied,
    /// Any other Secrets Manager error; the last good value is kept.
    Error,
}

/// A workload the binding selects, and what it carries of the binding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// Deployment name.
    pub name: String,
    /// Agent component, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
    /// Containers that received the values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// Whether the binding's entries are on the Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkloadState>,
    /// The binding's content hash the Deployment's pod template carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Why, for any state but Injected. Never contains a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a Deployment carries of a binding.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadState {
    /// Every entry is injected, with the binding's current content.
    Injected,
    /// Some entries are not injected: the chart or a binding created earlier sets the same env
    /// name (or envFrom) in that container.
    Conflict,
    /// Nothing of this binding is injected: the container's environment would exceed what
    /// Linux passes to a process.
    TooLarge,
    /// The Deployment keeps the binding's last good entries (its current content is held back;
    /// see the Ready condition).
    Held,
    /// Not yet written (the Deployment is updated a moment after the Secret).
    Pending,
}
