//! The Secrets Manager API calls of one source, each rate-limited and counted as AWS bills it.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};

use super::ResolveError;
use super::limit::TokenBucket;
use crate::api::{EntryState, VersionSelector};
use crate::entries::Fetched;
use crate::metrics::{CallLabels, Calls};

/// AWS's limit on ids per `BatchGetSecretValue` call.
pub const BATCH_LIMIT: usize = 20;
/// AWS's limit on `ListSecrets` page size.
pub const LIST_PAGE: i32 = 100;
/// AWS's limit on values in one `ListSecrets` filter.
pub const FILTER_VALUES: usize = 10;

/// A secret as a listing shows it: no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub current_version: Option<String>,
}

/// What one value read gave: (version id, outcome), by the id asked for.
pub type Read = BTreeMap<String, (Option<String>, Fetched)>;

/// The client of one source with its rate limit and call counter.
pub struct Api<'a> {
    pub client: &'a Client,
    pub limiter: &'a TokenBucket,
    pub calls: &'a Calls,
    /// Bytes of secret values received.
    pub value_bytes: &'a prometheus_client::metrics::counter::Counter,
}

impl Api<'_> {
    fn count(&self, operation: &'static str, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        self.calls
            .get_or_create(&CallLabels {
                operation,
                outcome: outcome.into(),
            })
            .inc();
    }

    /// `ListSecrets` with name filter values (prefix matches; none: every secret), all pages.
    pub async fn list(&self, filter: &[String]) -> Result<Vec<Listed>, ResolveError> {
        Ok(self
            .list_upto(filter, usize::MAX)
            .await?
            .expect("no page limit"))
    }

    /// Like [`Api::list`], but gives up (None) when more than `max_pages` pages would be needed.
    pub async fn list_upto(
        &self,
        filter: &[String],
        max_pages: usize,
    ) -> Result<Option<Vec<Listed>>, ResolveError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..max_pages {
            let mut req = self
                .client
                .list_secrets()
                .max_results(LIST_PAGE)
                .set_next_token(token.clone());
            if !filter.is_empty() {
                req = req.filters(
                    Filter::builder()
                        .key(FilterNameStringType::Name)
                        .set_values(Some(filter.to_vec()))
                        .build(),
                );
            }
            self.limiter.acquire().await;
            let page = req.send().await;
            self.count("ListSecrets", page.is_ok());
            let page = page.map_err(|e| {
                let denied = e
                    .as_service_error()
                    .and_then(aws_sdk_secretsmanager::error::ProvideErrorMetadata::code)
                    == Some("AccessDeniedException");
                let message = sdk_message(&e);
                if denied {
                    ResolveError::Denied {
                        operation: "ListSecrets",
                        message,
                    }
                } else {
                    ResolveError::Call {
                        operation: "ListSecrets",
                        message,
                    }
                }
            })?;
            for s in page.secret_list() {
                let Some(name) = s.name() else { continue };
                let current_version = s.secret_versions_to_stages().and_then(|m| {
                    m.iter()
                        .find(|(_, stages)| stages.iter().any(|st| st == "AWSCURRENT"))
                        .map(|(v, _)| v.clone())
                });
                out.push(Listed {
                    name: name.to_string(),
                    current_version,
                });
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    /// `BatchGetSecretValue` in chunks of 20; id → (version id, outcome) for every id asked,
    /// per-id errors included.
    pub async fn batch_get(&self, ids: &[String]) -> Result<Read, ResolveError> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(BATCH_LIMIT) {
            self.limiter.acquire().await;
            let resp = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(chunk.to_vec()))
                .send()
                .await;
            self.count("BatchGetSecretValue", resp.is_ok());
            let resp = resp.map_err(|e| ResolveError::Call {
                operation: "BatchGetSecretValue",
                message: sdk_message(&e),
            })?;
            for v in resp.secret_values() {
                let fetched = match v.secret_string() {
                    Some(s) => {
                        self.value_bytes.inc_by(s.len() as u64);
                        Fetched::Value(s.to_string())
                    }
                    None => Fetched::BinaryOnly,
                };
                let version = v.version_id().map(str::to_string);
                // The response names the secret by name and ARN; the request may have used either.
                for asked in chunk
                    .iter()
                    .filter(|a| Some(a.as_str()) == v.name() || Some(a.as_str()) == v.arn())
                {
                    out.insert(asked.clone(), (version.clone(), fetched.clone()));
                }
            }
            for e in resp.errors() {
                let Some(id) = e.secret_id() else { continue };
                out.insert(
                    id.to_string(),
                    (None, problem(e.error_code().unwrap_or_default())),
                );
            }
            for asked in chunk {
                out.entry(asked.clone()).or_insert((
                    None,
                    Fetched::Problem(
                        EntryState::NotFound,
                        "Secrets Manager returned nothing for this id".into(),
                    ),
                ));
            }
        }
        Ok(out)
    }

    /// `GetSecretValue` of one id at a stage or version.
    pub async fn get_one(
        &self,
        secret_id: &str,
        version: &VersionSelector,
    ) -> Result<(Option<String>, Fetched), ResolveError> {
        self.limiter.acquire().await;
        let resp = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .set_version_id(version.version_id.clone())
            .set_version_stage(version.version_stage.clone())
            .send()
            .await;
        self.count("GetSecretValue", resp.is_ok());
        match resp {
            Ok(r) => {
                let fetched = match r.secret_string() {
                    Some(s) => {
                        self.value_bytes.inc_by(s.len() as u64);
                        Fetched::Value(s.to_string())
                    }
                    None => Fetched::BinaryOnly,
                };
                Ok((r.version_id().map(str::to_string), fetched))
            }
            Err(e) => {
                let code = e
                    .as_service_error()
                    .and_then(|s| aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(s))
                    .map(str::to_string);
                match code {
                    Some(code) => Ok((None, problem(&code))),
                    None => Err(ResolveError::Call {
                        operation: "GetSecretValue",
                        message: sdk_message(&e),
                    }),
                }
            }
        }
    }
}

/// What `DescribeSecret` tells of one secret: no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// The id it was asked for.
    pub asked: String,
    /// Name and ARN; None when there is no such secret.
    pub name: Option<String>,
    pub arn: Option<String>,
    /// The `AWSCURRENT` version; None when gone (not found, or scheduled for deletion, which
    /// Airflow's backend reads as not found too).
    pub current_version: Option<String>,
}

impl Described {
    pub fn gone(&self) -> bool {
        self.current_version.is_none()
    }
}

impl Api<'_> {
    /// `DescribeSecret` of one id (a name, full or partial ARN): its current version, no value.
    pub async fn describe(&self, secret_id: &str) -> Result<Described, ResolveError> {
        self.limiter.acquire().await;
        let resp = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await;
        self.count("DescribeSecret", resp.is_ok());
        match resp {
            Ok(r) => {
                let current_version = r
                    .version_ids_to_stages()
                    .and_then(|m| {
                        m.iter()
                            .find(|(_, stages)| stages.iter().any(|st| st == "AWSCURRENT"))
                            .map(|(v, _)| v.clone())
                    })
                    .filter(|_| r.deleted_date().is_none());
                Ok(Described {
                    asked: secret_id.to_string(),
                    name: r.name().map(str::to_string),
                    arn: r.arn().map(str::to_string),
                    current_version,
                })
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(Described {
                    asked: secret_id.to_string(),
                    name: None,
                    arn: None,
                    current_version: None,
                })
            }
            Err(e) => Err(ResolveError::Call {
                operation: "DescribeSecret",
                message: sdk_message(&e),
            }),
        }
    }
}

/// A per-id error code as an entry state; the message names the code, never a value.
///
/// Codes that Airflow's backend treats as "not found" (a secret scheduled for deletion answers
/// InvalidRequestException) are NotFound here too, so the entry leaves the Secret as it leaves
/// Airflow's view; other errors keep the last good value.
pub fn problem(code: &str) -> Fetched {
    let state = match code {
        "ResourceNotFoundException" | "InvalidRequestException" | "InvalidParameterException" => {
            EntryState::NotFound
        }
        "AccessDeniedException" => EntryState::AccessDenied,
        _ => EntryState::Error,
    };
    Fetched::Problem(state, format!("Secrets Manager: {code}"))
}

fn sdk_message<E: std::error::Error + 'static>(
    e: &aws_sdk_secretsmanager::error::SdkError<E>,
) -> String {
    use std::fmt::Write;
    let mut s = e.to_string();
    // An answer without an AWS error code (a 429 or 502 from a proxy or gateway in the path)
    // reads "unhandled error" otherwise: its HTTP status tells who answered.
    if let Some(r) = e.raw_response() {
        let _ = write!(s, " (HTTP {})", r.status().as_u16());
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_states_as_airflow_sees_them() {
        let state = |code: &str| match problem(code) {
            Fetched::Problem(s, m) => {
                assert!(m.contains(code));
                s
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(state("ResourceNotFoundException"), EntryState::NotFound);
        assert_eq!(
            state("InvalidRequestException"),
            EntryState::NotFound,
            "scheduled for deletion"
        );
        assert_eq!(state("AccessDeniedException"), EntryState::AccessDenied);
        assert_eq!(state("DecryptionFailure"), EntryState::Error);
        assert_eq!(state("ThrottlingException"), EntryState::Error);
    }
}
