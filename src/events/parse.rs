//! Pure: an EventBridge event about Secrets Manager (as SQS delivers it) → which secret it is
//! about, and which of a binding's ids may refer to that secret.
//!
//! An event is only a hint: it says *which* secret may have changed, never what it holds now
//! (events carry no values, arrive at least once, unordered, occasionally never). The consumer
//! re-reads the secret's current version and compares; nothing here is trusted beyond the id.
//!
//! Event kinds understood:
//! - native `Secret Label Updated` (a staging label moved; `detail.name`, ARN in `resources[0]`);
//! - `AWS API Call via CloudTrail` for the calls that change what a binding reads
//!   (`PutSecretValue`, `UpdateSecret`, `UpdateSecretVersionStage`, `RotateSecret`,
//!   `CreateSecret`, `DeleteSecret`, `RestoreSecret`); failed calls (`errorCode`) are ignored. The
//!   id is in `responseElements.arn` (spelled `aRN` before February 2024), or in
//!   `requestParameters.secretId` (a name, a full or a partial ARN) / `requestParameters.name`;
//! - `AWS Service Event via CloudTrail` `RotationSucceeded` (`additionalEventData.SecretId`,
//!   `requestParameters` null).

use serde_json::Value;

use crate::airflow::path;
use crate::api::{AirflowSecretBindingSpec, Mode, VersionSelector};

/// The longest id accepted from an event (AWS: names ≤ 512 characters, ARNs a little more).
const MAX_ID: usize = 2048;

/// What an event says happened to the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new value or a moved label (the current version may differ).
    Changed,
    Created,
    /// Deleted or scheduled for deletion.
    Deleted,
    Restored,
}

/// One relevant event, reduced to what the consumer may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// EventBridge's event id: duplicates of one event share it.
    pub event_id: Option<String>,
    pub kind: Kind,
    /// What produced it: the detail type's call or `Secret Label Updated`.
    pub action: String,
    pub region: Option<String>,
    /// Absent in the emulator's events: optional.
    pub account: Option<String>,
    /// Every id the event names the secret by (full or partial ARNs, names), deduplicated.
    pub ids: Vec<String>,
    /// The secret's exact name, when the event carries it.
    pub name: Option<String>,
    /// The version the event reports (e.g. where `AWSCURRENT` moved), when it reports one.
    pub version_id: Option<String>,
    /// A staging label the event moved other than `AWSCURRENT` (readers of that stage care).
    pub other_stage: Option<String>,
}

/// What a message body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Change(Change),
    /// A well-formed event that cannot change what a binding reads; the reason names no value.
    Ignored(&'static str),
    /// Not an event this consumer understands; the reason names no value.
    Invalid(&'static str),
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_ID)
}

/// Parses one SQS message body: the EventBridge event itself, or an SNS envelope around it.
pub fn parse(body: &str) -> Parsed {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Parsed::Invalid("the message body is not JSON");
    };
    // EventBridge → SNS → SQS wraps the event in a notification.
    if v.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = v.get("Message").and_then(Value::as_str)
    {
        return parse(inner);
    }
    parse_event(&v)
}

fn parse_event(v: &Value) -> Parsed {
    if !v.is_object() {
        return Parsed::Invalid("the message body is not an event object");
    }
    if v.get("source").and_then(Value::as_str) != Some("aws.secretsmanager") {
        return Parsed::Ignored("not a Secrets Manager event");
    }
    let Some(detail_type) = v.get("detail-type").and_then(Value::as_str) else {
        return Parsed::Invalid("the event has no detail-type");
    };
    let detail = v.get("detail").unwrap_or(&Value::Null);
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: Option<&str>| {
        if let Some(id) = id
            && !ids.iter().any(|i| i == id)
        {
            ids.push(id.to_string());
        }
    };
    let (kind, action, name, version_id, other_stage) = match detail_type {
        "Secret Label Updated" => {
            let label = str_at(detail, &["labelUpdated"]);
            push(
                v.get("resources")
                    .and_then(|r| r.get(0))
                    .and_then(Value::as_str)
                    .filter(|s| s.len() <= MAX_ID),
            );
            let name = str_at(detail, &["name"]);
            push(name);
            let current = label.is_none_or(|l| l == "AWSCURRENT");
            (
                Kind::Changed,
                "Secret Label Updated".to_string(),
                name.map(str::to_string),
                current
                    .then(|| str_at(detail, &["versionId"]).map(str::to_string))
                    .flatten(),
                (!current).then(|| label.map(str::to_string)).flatten(),
            )
        }
        "AWS API Call via CloudTrail" | "AWS Service Event via CloudTrail" => {
            if detail.get("errorCode").is_some_and(|e| !e.is_null()) {
                return Parsed::Ignored("a failed call");
            }
            let Some(event_name) = str_at(detail, &["eventName"]) else {
                return Parsed::Invalid("the CloudTrail event has no eventName");
            };
            let kind = match event_name {
                "PutSecretValue"
                | "UpdateSecret"
                | "UpdateSecretVersionStage"
                | "RotateSecret"
                | "RotationSucceeded" => Kind::Changed,
                "CreateSecret" => Kind::Created,
                "DeleteSecret" => Kind::Deleted,
                "RestoreSecret" => Kind::Restored,
                "GetSecretValue"
                | "BatchGetSecretValue"
                | "DescribeSecret"
                | "ListSecrets"
                | "ListSecretVersionIds"
                | "GetResourcePolicy"
                | "GetRandomPassword" => {
                    return Parsed::Ignored("a read-only call");
                }
                _ => return Parsed::Ignored("a call that does not change what bindings read"),
            };
            let resp = detail.get("responseElements").unwrap_or(&Value::Null);
            let req = detail.get("requestParameters").unwrap_or(&Value::Null);
            push(str_at(resp, &["arn"]));
            push(str_at(resp, &["aRN"]));
            push(str_at(resp, &["ARN"]));
            push(str_at(detail, &["additionalEventData", "SecretId"]));
            push(str_at(req, &["secretId"]));
            let name = str_at(resp, &["name"])
                .or_else(|| str_at(req, &["name"]))
                .filter(|n| !n.starts_with("arn:"));
            push(name);
            let stage = str_at(req, &["versionStage"]);
            let current = stage.is_none_or(|s| s == "AWSCURRENT");
            let version = str_at(resp, &["versionId"])
                .or_else(|| str_at(req, &["moveToVersionId"]))
                .filter(|_| current);
            (
                kind,
                event_name.to_string(),
                name.map(str::to_string),
                version.map(str::to_string),
                (!current).then(|| stage.map(str::to_string)).flatten(),
            )
        }
        _ => return Parsed::Ignored("a Secrets Manager event that changes no value"),
    };
    if ids.is_empty() {
        return Parsed::Invalid("the event names no secret");
    }
    // A secret given by name only: the name is exact.
    let name = name.or_else(|| {
        ids.iter()
            .find(|i| !i.starts_with("arn:"))
            .map(|s| s.to_string())
    });
    let region = v
        .get("region")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| ids.iter().find_map(|i| Arn::parse(i)).map(|a| a.region));
    Parsed::Change(Change {
        event_id: v.get("id").and_then(Value::as_str).map(str::to_string),
        kind,
        action,
        region,
        account: v
            .get("account")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        ids,
        name,
        version_id,
        other_stage,
    })
}

/// A Secrets Manager secret ARN: `arn:<partition>:secretsmanager:<region>:<account>:secret:<rest>`
/// where `<rest>` is `<name>-<6 random characters>` (full) or `<name>` (partial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account: String,
    pub rest: String,
}

impl Arn {
    pub fn parse(s: &str) -> Option<Arn> {
        let mut parts = s.splitn(7, ':');
        let (arn, _partition, service, region, account, kind, rest) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        (arn == "arn" && service == "secretsmanager" && kind == "secret" && !rest.is_empty()).then(
            || Arn {
                region: region.to_string(),
                account: account.to_string(),
                rest: rest.to_string(),
            },
        )
    }
}

/// `rest` without the 6-character suffix AWS appends to a full ARN, if it has one of that shape.
fn strip_suffix(rest: &str) -> Option<&str> {
    let (head, tail) = rest.rsplit_once('-')?;
    (!head.is_empty() && tail.len() == 6 && tail.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(head)
}

/// The names an id may stand for: a name itself; for an ARN its resource part, and that part
/// without a full ARN's suffix (a partial ARN cannot be told from a full one by its shape).
pub fn name_keys(id: &str) -> Vec<&str> {
    if !id.starts_with("arn:") {
        return vec![id];
    }
    let Some(rest) = id.split_once(":secret:").map(|(_, r)| r) else {
        return vec![];
    };
    let mut out = vec![rest];
    out.extend(strip_suffix(rest));
    out
}

/// Whether a binding's id may refer to the secret of an event (cheap, generous: a false match
/// costs one version check, never a wrong value, since the check uses the binding's own id).
pub fn may_refer(binding_id: &str, change: &Change) -> bool {
    if let Some(b) = Arn::parse(binding_id) {
        if change.region.as_deref().is_some_and(|r| r != b.region) {
            return false;
        }
        if let Some(a) = change.account.as_deref()
            && a != b.account
        {
            return false;
        }
    }
    let mine = name_keys(binding_id);
    change
        .ids
        .iter()
        .any(|id| name_keys(id).iter().any(|k| mine.contains(k)))
}

/// Whether `id` (a binding's name, full or partial ARN) names exactly the secret `name` / `arn`
/// (as Secrets Manager described it).
pub fn names_exactly(id: &str, name: &str, arn: &str) -> bool {
    if id == name || id == arn {
        return true;
    }
    // A partial ARN: the full one minus its `-XXXXXX` suffix.
    arn.strip_prefix(id)
        .is_some_and(|tail| tail.len() == 7 && strip_suffix(&format!("x{tail}")) == Some("x"))
}

/// The `ListSecrets` name filters of a spec's discovery (as `discover` lists them); an empty
/// filter lists every secret.
pub fn discovery_filters(spec: &AirflowSecretBindingSpec) -> Vec<String> {
    let Some(d) = &spec.discovery else {
        return vec![];
    };
    [&d.connections_prefix, &d.variables_prefix]
        .into_iter()
        .flatten()
        .filter_map(|prefix| {
            let filter = path::list_filter(prefix, &d.sep);
            match (&spec.team, filter) {
                (Some(team), Some(f)) => Some(format!("{f}{team}{}", path::TEAM_SEP)),
                (Some(_), None) => None,
                (None, f) => Some(f.unwrap_or_default()),
            }
        })
        .collect()
}

/// Whether a binding's discovery may list the event's secret (by any name the event allows).
pub fn discovery_covers(filters: &[String], change: &Change) -> bool {
    change.ids.iter().any(|id| {
        name_keys(id)
            .iter()
            .any(|n| filters.iter().any(|f| n.starts_with(f.as_str())))
    })
}

/// How a binding is interested in an event's secret.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interest {
    /// Its explicit ids (and discovered names it read) at `AWSCURRENT` that may be the secret:
    /// checked by version.
    pub current: Vec<String>,
    /// It reads the secret at another stage or version: always re-read directly.
    pub direct: bool,
    /// Its discovery may list the secret (a created / deleted / restored one changes the
    /// listing).
    pub discovery: bool,
}

impl Interest {
    pub fn any(&self) -> bool {
        !self.current.is_empty() || self.direct || self.discovery
    }
}

fn is_current(v: &VersionSelector) -> bool {
    v.version_id.is_none() && v.version_stage.as_deref().is_none_or(|s| s == "AWSCURRENT")
}

/// A binding's interest in an event: its spec, and the secret ids its last read included
/// (discovered names among them).
pub fn interest(spec: &AirflowSecretBindingSpec, read: &[String], change: &Change) -> Interest {
    let mut out = Interest::default();
    if spec.mode == Mode::Backend {
        return out;
    }
    if let Some(r) = &spec.source.region
        && change.region.as_deref().is_some_and(|e| e != r)
    {
        return out;
    }
    let explicit = spec
        .connections
        .iter()
        .map(|c| (&c.secret_id, &c.version))
        .chain(spec.variables.iter().map(|v| (&v.secret_id, &v.version)))
        .chain(spec.config.iter().map(|c| (&c.secret_id, &c.version)));
    for (id, version) in explicit {
        if !may_refer(id, change) {
            continue;
        }
        if is_current(version) {
            if !out.current.contains(id) {
                out.current.push(id.clone());
            }
        } else {
            out.direct = true;
        }
    }
    for id in read {
        if may_refer(id, change) && !out.current.contains(id) && !out.direct {
            out.current.push(id.clone());
        }
    }
    out.discovery = discovery_covers(&discovery_filters(spec), change);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf";

    fn change(body: serde_json::Value) -> Change {
        match parse(&body.to_string()) {
            Parsed::Change(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn cloudtrail(name: &str, detail: serde_json::Value) -> serde_json::Value {
        let mut d = json!({"eventSource": "secretsmanager.amazonaws.com", "eventName": name});
        d.as_object_mut()
            .unwrap()
            .extend(detail.as_object().unwrap().clone());
        json!({
            "version": "0", "id": "e-1", "detail-type": "AWS API Call via CloudTrail",
            "source": "aws.secretsmanager", "account": "123456789012",
            "time": "2026-01-01T00:00:00Z", "region": "eu-west-1", "resources": [], "detail": d
        })
    }

    #[test]
    fn the_native_label_event() {
        let c = change(json!({
            "version": "0", "id": "6a7e8feb", "detail-type": "Secret Label Updated",
            "source": "aws.secretsmanager", "account": "123456789012",
            "time": "2024-02-06T16:43:48Z", "region": "eu-west-1", "resources": [ARN],
            "detail": {"name": "prod/db", "labelUpdated": "AWSCURRENT", "versionId": "v2"}
        }));
        assert_eq!(c.kind, Kind::Changed);
        assert_eq!(c.ids, [ARN, "prod/db"]);
        assert_eq!(c.name.as_deref(), Some("prod/db"));
        assert_eq!(c.version_id.as_deref(), Some("v2"));
        assert_eq!(c.event_id.as_deref(), Some("6a7e8feb"));
        assert_eq!(c.other_stage, None);
        // Another label moved: not the current version.
        let c = change(json!({
            "id": "x", "detail-type": "Secret Label Updated", "source": "aws.secretsmanager",
            "region": "eu-west-1", "resources": [ARN],
            "detail": {"name": "prod/db", "labelUpdated": "BLUE", "versionId": "v3"}
        }));
        assert_eq!(
            (c.version_id, c.other_stage.as_deref()),
            (None, Some("BLUE"))
        );
    }

    #[test]
    fn cloudtrail_calls_name_the_secret_in_several_ways() {
        // Today's spelling, and the id as the caller gave it.
        let c = change(cloudtrail(
            "PutSecretValue",
            json!({"requestParameters": {"secretId": "prod/db", "clientRequestToken": "t"},
                   "responseElements": {"arn": ARN, "versionId": "v2"}}),
        ));
        assert_eq!(c.kind, Kind::Changed);
        assert_eq!(c.ids, [ARN, "prod/db"]);
        assert_eq!(c.name.as_deref(), Some("prod/db"));
        assert_eq!(c.version_id.as_deref(), Some("v2"));
        // Before February 2024: `aRN`; a partial ARN as secretId; no account (moto).
        let mut ev = cloudtrail(
            "UpdateSecret",
            json!({"requestParameters": {"secretId": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db"},
                   "responseElements": {"aRN": ARN}}),
        );
        ev.as_object_mut().unwrap().remove("account");
        let c = change(ev);
        assert_eq!(c.account, None);
        assert_eq!(c.ids.len(), 2);
        assert_eq!(c.name, None, "no exact name in this event");
        // Create / delete / restore.
        let c = change(cloudtrail(
            "CreateSecret",
            json!({"requestParameters": {"name": "prod/new"}, "responseElements": {"arn": ARN}}),
        ));
        assert_eq!(
            (c.kind, c.name.as_deref()),
            (Kind::Created, Some("prod/new"))
        );
        let c = change(cloudtrail(
            "DeleteSecret",
            json!({"requestParameters": {"secretId": "prod/db", "recoveryWindowInDays": 7},
                   "responseElements": {"arn": ARN, "name": "prod/db", "deletionDate": "x"}}),
        ));
        assert_eq!(c.kind, Kind::Deleted);
        let c = change(cloudtrail(
            "RestoreSecret",
            json!({"requestParameters": {"secretId": ARN}, "responseElements": {"arn": ARN}}),
        ));
        assert_eq!((c.kind, c.ids.len()), (Kind::Restored, 1));
        // A stage other than AWSCURRENT moved.
        let c = change(cloudtrail(
            "UpdateSecretVersionStage",
            json!({"requestParameters": {"secretId": "prod/db", "versionStage": "BLUE", "moveToVersionId": "v9"}}),
        ));
        assert_eq!(
            (c.version_id, c.other_stage.as_deref()),
            (None, Some("BLUE"))
        );
    }

    #[test]
    fn rotation_succeeded_names_the_secret_by_arn_only() {
        let c = change(json!({
            "id": "r-1", "detail-type": "AWS Service Event via CloudTrail",
            "source": "aws.secretsmanager", "region": "eu-west-1",
            "detail": {"eventSource": "secretsmanager.amazonaws.com", "eventName": "RotationSucceeded",
                       "requestParameters": null, "responseElements": null,
                       "additionalEventData": {"SecretId": ARN}}
        }));
        assert_eq!(c.kind, Kind::Changed);
        assert_eq!(c.ids, [ARN]);
        assert_eq!(c.name, None);
        // It refreshes a binding that names the secret by name.
        assert!(may_refer("prod/db", &c));
        assert!(!may_refer("prod/db2", &c));
        assert!(!may_refer("prod", &c));
    }

    #[test]
    fn what_is_ignored_or_invalid() {
        assert_eq!(
            parse(
                &cloudtrail(
                    "PutSecretValue",
                    json!({"errorCode": "AccessDenied", "requestParameters": {"secretId": "prod/db"}})
                )
                .to_string()
            ),
            Parsed::Ignored("a failed call")
        );
        assert_eq!(
            parse(&cloudtrail("GetSecretValue", json!({})).to_string()),
            Parsed::Ignored("a read-only call")
        );
        assert!(matches!(
            parse(&cloudtrail("TagResource", json!({})).to_string()),
            Parsed::Ignored(_)
        ));
        assert!(matches!(
            parse(r#"{"source": "aws.s3", "detail-type": "Object Created"}"#),
            Parsed::Ignored(_)
        ));
        assert!(matches!(parse("not json"), Parsed::Invalid(_)));
        assert!(matches!(parse("[1]"), Parsed::Invalid(_)));
        assert_eq!(
            parse(&cloudtrail("PutSecretValue", json!({"requestParameters": null})).to_string()),
            Parsed::Invalid("the event names no secret")
        );
    }

    #[test]
    fn an_sns_envelope_is_unwrapped() {
        let inner = cloudtrail(
            "PutSecretValue",
            json!({"requestParameters": {"secretId": "prod/db"}}),
        );
        let body = json!({"Type": "Notification", "Message": inner.to_string()});
        assert_eq!(change(body).ids, ["prod/db"]);
    }

    #[test]
    fn ids_match_by_name_full_and_partial_arn() {
        let by_arn = change(cloudtrail(
            "PutSecretValue",
            json!({"responseElements": {"arn": ARN}}),
        ));
        let by_name = change(cloudtrail(
            "PutSecretValue",
            json!({"requestParameters": {"secretId": "prod/db"}}),
        ));
        let partial = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db";
        for c in [&by_arn, &by_name] {
            assert!(may_refer("prod/db", c));
            assert!(may_refer(ARN, c));
            assert!(may_refer(partial, c));
            assert!(!may_refer("prod/db-backup", c));
            assert!(!may_refer("prod/d", c));
        }
        // Another region or account: not this secret.
        assert!(!may_refer(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf",
            &by_arn
        ));
        assert!(!may_refer(
            "arn:aws:secretsmanager:eu-west-1:999999999999:secret:prod/db-AbCdEf",
            &by_arn
        ));
        // Exact, once described.
        assert!(names_exactly("prod/db", "prod/db", ARN));
        assert!(names_exactly(ARN, "prod/db", ARN));
        assert!(names_exactly(partial, "prod/db", ARN));
        assert!(!names_exactly("prod/d", "prod/db", ARN));
        assert!(!names_exactly(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod",
            "prod/db",
            ARN
        ));
    }

    fn spec(v: serde_json::Value) -> AirflowSecretBindingSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn interest_of_bindings() {
        let c = change(cloudtrail(
            "RotationSucceeded",
            json!({"additionalEventData": {"SecretId": ARN}}),
        ));
        let explicit = spec(json!({
            "source": {"region": "eu-west-1"},
            "connections": [{"connId": "db", "secretId": "prod/db"},
                            {"connId": "old", "secretId": "prod/db", "versionStage": "AWSPREVIOUS"}],
            "variables": [{"key": "other", "secretId": "prod/other"}],
            "target": {}
        }));
        let i = interest(&explicit, &[], &c);
        assert_eq!(i.current, ["prod/db"]);
        assert!(i.direct && !i.discovery);
        // Another region's binding is not interested.
        let mut elsewhere = explicit.clone();
        elsewhere.source.region = Some("us-east-1".into());
        assert!(!interest(&elsewhere, &[], &c).any());
        // Discovery: the prefix covers the secret; a name it read is checked by version.
        let discovery = spec(json!({
            "source": {}, "discovery": {"connectionsPrefix": "prod"}, "target": {}
        }));
        assert_eq!(discovery_filters(&discovery), ["prod/"]);
        let i = interest(&discovery, &["prod/db".into()], &c);
        assert_eq!(i.current, ["prod/db"]);
        assert!(i.discovery);
        let i = interest(&discovery, &[], &c);
        assert!(i.discovery && i.current.is_empty());
        let unrelated = spec(json!({
            "source": {}, "discovery": {"connectionsPrefix": "staging"}, "target": {}
        }));
        assert!(!interest(&unrelated, &[], &c).any());
        // Team-scoped discovery lists `<prefix>/<team>--`.
        let team = spec(json!({
            "source": {}, "team": "blue", "discovery": {"variablesPrefix": "prod"}, "target": {}
        }));
        assert_eq!(discovery_filters(&team), ["prod/blue--"]);
        assert!(!interest(&team, &[], &c).any());
    }
}
