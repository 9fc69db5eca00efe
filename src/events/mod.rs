//! The optional change-event consumer: Secrets Manager changes reach the bindings in seconds,
//! without polling, through EventBridge → SQS (docs/events.md).
//!
//! An event is a hint, never trusted: it names a secret; the consumer re-checks that secret's
//! current version directly (`DescribeSecret`, no value, not a listing — `ListSecrets` may lag
//! by minutes) through the shared Secrets Manager view, so that the view learns the version and
//! patches its cached listings; the bindings that read a changed secret (or whose discovery
//! gains or loses one) are woken, and read values as any refresh does (only versions not held).
//! Periodic refreshes stay: events may be lost.
//!
//! - Long polling (20 s, 10 messages), one batch handled while the next is received (at most
//!   [`IN_FLIGHT`] batches at once).
//! - A message is deleted only after the bindings it woke have refreshed, or when it was found
//!   irrelevant, a duplicate or unreadable; its visibility is extended while they refresh. A
//!   message whose check failed is left in the queue and comes back.
//! - Duplicates (EventBridge delivers at least once; one event id) are dropped for
//!   [`SEEN_FOR`]; a reordered or stale event costs one version check and changes nothing, since
//!   the check reads the current state.
//! - Only the leader consumes: the consumer runs inside `controller::run`, which runs only
//!   while holding the Lease.
//! - Only the secret's id is ever logged; events carry no values, and nothing of a message body
//!   beyond the id is logged.

pub mod parse;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName,
};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::AirflowSecretBinding;
use crate::controller::Context;
use crate::controller::index::Key;
use crate::metrics::EventLabels;
use crate::plan::workload::{Delivery, pod_annotation_key};
use crate::secretsmanager::Described;
use crate::source::Origin;
use parse::{Change, Parsed};

/// Long-polling wait of one receive (SQS's maximum).
pub const WAIT_TIME_SECONDS: i32 = 20;
/// Messages per receive (SQS's maximum).
pub const MAX_MESSAGES: i32 = 10;
/// Visibility of a received message while it is handled; extended every [`EXTEND_EVERY`].
pub const VISIBILITY: Duration = Duration::from_secs(60);
pub const EXTEND_EVERY: Duration = Duration::from_secs(20);
/// How long the consumer waits for woken bindings to refresh before it leaves the messages to
/// come back.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(300);
/// Per-attempt timeout of an SQS call: longer than a long poll.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);
/// How long an event id is remembered to drop its duplicates.
pub const SEEN_FOR: Duration = Duration::from_secs(600);
const SEEN_MAX: usize = 100_000;
/// Batches handled at once.
pub const IN_FLIGHT: usize = 4;
/// How long a rollout is watched for the latency metric.
const ROLLOUT_WATCH: Duration = Duration::from_secs(60);

/// Where the events come from (`--sqs-queue-url`, `--sqs-region`, `--sqs-role-arn`).
#[derive(Debug, Clone, Default)]
pub struct SqsConfig {
    pub queue_url: String,
    /// Default: the queue URL's region (`https://sqs.<region>.amazonaws.com/...`), else the AWS
    /// SDK's default chain.
    pub region: Option<String>,
    /// A role to assume for the queue (default: the operator's own identity).
    pub role_arn: Option<String>,
}

/// The region of a standard SQS queue URL.
pub fn region_of_queue_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    match (parts.next()?, parts.next()?) {
        ("sqs", region) if !region.is_empty() && host.contains(".amazonaws.") => {
            Some(region.to_string())
        }
        _ => None,
    }
}

async fn client(cfg: &SqsConfig) -> Client {
    let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = cfg
        .region
        .clone()
        .or_else(|| region_of_queue_url(&cfg.queue_url));
    let mut b = aws_sdk_sqs::config::Builder::from(&base)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(r) = &region {
        b = b.region(aws_config::Region::new(r.clone()));
    }
    if let Some(role) = &cfg.role_arn {
        let mut p = aws_config::sts::AssumeRoleProvider::builder(role.clone())
            .session_name("airflow-secrets-operator-events")
            .configure(&base);
        if let Some(r) = &region {
            p = p.region(aws_config::Region::new(r.clone()));
        }
        b = b.credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            p.build().await,
        ));
    }
    Client::from_conf(b.build())
}

/// The running consumer; dropping it stops it (with the controllers).
pub struct Running(tokio::task::JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts consuming the queue on its own task.
pub fn start(cfg: SqsConfig, ctx: Arc<Context>) -> Running {
    Running(tokio::spawn(run(cfg, ctx)))
}

/// Consumes the queue until the task is aborted (the controllers stopped).
pub async fn run(cfg: SqsConfig, ctx: Arc<Context>) {
    let consumer = Arc::new(Consumer {
        client: client(&cfg).await,
        queue: cfg.queue_url.clone(),
        ctx,
        seen: Mutex::default(),
    });
    info!(queue = %cfg.queue_url, "consuming Secrets Manager change events");
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    let mut failures = 0u32;
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = slots.clone().acquire_owned().await.expect("semaphore");
        match consumer.receive().await {
            Ok(messages) if messages.is_empty() => failures = 0,
            Ok(messages) => {
                failures = 0;
                let c = consumer.clone();
                tasks.spawn(async move {
                    c.handle(messages).await;
                    drop(permit);
                });
            }
            Err(e) => {
                failures += 1;
                let delay = crate::controller::backoff(failures).min(Duration::from_secs(60));
                warn!(error = %e, retry_in = ?delay, "receiving change events failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Where a message stands.
struct Received {
    receipt: String,
    message_id: String,
    /// When SQS received it (its `SentTimestamp`), or when it was received here.
    sent: SystemTime,
}

struct Consumer {
    client: Client,
    queue: String,
    ctx: Arc<Context>,
    /// Event ids handled or in hand, and since when (duplicates are dropped).
    seen: Mutex<HashMap<String, Instant>>,
}

/// What one batch's checks found.
#[derive(Default)]
struct Outcome {
    /// Per change: whether some binding reads its secret.
    relevant: Vec<bool>,
    /// Bindings woken, with the earliest arrival of an event that woke them.
    woken: BTreeMap<Key, SystemTime>,
}

impl Consumer {
    fn count(&self, outcome: &'static str, n: u64) {
        if n > 0 {
            self.ctx
                .metrics
                .events
                .get_or_create(&EventLabels { outcome })
                .inc_by(n);
        }
    }

    async fn receive(&self) -> Result<Vec<Message>, String> {
        self.client
            .receive_message()
            .queue_url(&self.queue)
            .max_number_of_messages(MAX_MESSAGES)
            .wait_time_seconds(WAIT_TIME_SECONDS)
            .visibility_timeout(VISIBILITY.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map(|r| r.messages().to_vec())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }

    /// Whether an event id is new (then it is remembered); old ids are forgotten.
    fn first_sight(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().expect("seen");
        if seen.len() >= SEEN_MAX {
            seen.retain(|_, at| at.elapsed() < SEEN_FOR);
        }
        match seen.get(id) {
            Some(at) if at.elapsed() < SEEN_FOR => false,
            _ => {
                seen.insert(id.to_string(), Instant::now());
                true
            }
        }
    }

    fn forget(&self, ids: &[String]) {
        let mut seen = self.seen.lock().expect("seen");
        for id in ids {
            seen.remove(id);
        }
    }

    async fn handle(&self, messages: Vec<Message>) {
        let now = SystemTime::now();
        self.count("received", messages.len() as u64);
        let mut done: Vec<Received> = Vec::new();
        let mut work: Vec<(Received, Change, String)> = Vec::new();
        for m in messages {
            let Some(receipt) = m.receipt_handle() else {
                continue;
            };
            let r = Received {
                receipt: receipt.to_string(),
                message_id: m.message_id().unwrap_or_default().to_string(),
                sent: sent_at(&m).unwrap_or(now),
            };
            match parse::parse(m.body().unwrap_or_default()) {
                Parsed::Invalid(why) => {
                    warn!(message = %r.message_id, reason = why, "dropping a message that is not a Secrets Manager event");
                    self.count("invalid", 1);
                    done.push(r);
                }
                Parsed::Ignored(why) => {
                    debug!(message = %r.message_id, reason = why, "event ignored");
                    self.count("irrelevant", 1);
                    done.push(r);
                }
                Parsed::Change(c) => {
                    let key = c
                        .event_id
                        .clone()
                        .unwrap_or_else(|| format!("message:{}", r.message_id));
                    if self.first_sight(&key) {
                        work.push((r, c, key));
                    } else {
                        debug!(message = %r.message_id, event = %key, "duplicate event dropped");
                        self.count("duplicate", 1);
                        done.push(r);
                    }
                }
            }
        }
        if work.is_empty() {
            self.delete(&done).await;
            return;
        }
        let changes: Vec<(Change, SystemTime)> =
            work.iter().map(|(r, c, _)| (c.clone(), r.sent)).collect();
        let since = Instant::now();
        // What each binding delivers before the checks wake any (for the rollout latency).
        let before = {
            let keys: Vec<Key> = self
                .ctx
                .index
                .lock()
                .expect("index")
                .bindings
                .keys()
                .cloned()
                .collect();
            self.rollout_hashes(keys.iter())
        };
        match self.check(&changes).await {
            Ok(outcome) => {
                for (i, relevant) in outcome.relevant.iter().enumerate() {
                    let (r, c, _) = &work[i];
                    info!(
                        message = %r.message_id, action = %c.action, secret = %c.ids[0],
                        relevant, "change event"
                    );
                    self.count(if *relevant { "relevant" } else { "irrelevant" }, 1);
                }
                let handles: Vec<String> = work.iter().map(|(r, _, _)| r.receipt.clone()).collect();
                let refreshed = self.wait_refreshed(&outcome.woken, since, &handles).await;
                if refreshed {
                    done.extend(work.into_iter().map(|(r, _, _)| r));
                } else {
                    // Left to come back: the woken bindings retry with backoff meanwhile.
                    warn!(
                        bindings = outcome.woken.len(),
                        "woken bindings did not refresh in time; the events stay in the queue"
                    );
                    let keys: Vec<String> = work.iter().map(|(_, _, k)| k.clone()).collect();
                    self.forget(&keys);
                }
                self.delete(&done).await;
                self.watch_rollouts(&outcome.woken, before).await;
            }
            Err(e) => {
                warn!(error = %e, events = work.len(), "checking the secrets of change events failed; they stay in the queue");
                let keys: Vec<String> = work.iter().map(|(_, _, k)| k.clone()).collect();
                self.forget(&keys);
                self.delete(&done).await;
            }
        }
    }

    /// Re-checks the secrets the changes name, for the bindings that read them, and wakes the
    /// bindings whose secrets changed.
    async fn check(
        &self,
        changes: &[(Change, SystemTime)],
    ) -> Result<Outcome, crate::secretsmanager::ResolveError> {
        let ctx = &self.ctx;
        let bindings = ctx.bindings.state();
        let read: HashMap<Key, Vec<String>> = {
            let index = ctx.index.lock().expect("index");
            index
                .bindings
                .iter()
                .filter_map(|(k, s)| {
                    let r = s.resolved.as_ref()?;
                    Some((
                        k.clone(),
                        r.entries.iter().map(|e| e.secret_id.clone()).collect(),
                    ))
                })
                .collect()
        };
        let mut out = Outcome {
            relevant: vec![false; changes.len()],
            ..Default::default()
        };
        // Per source: the ids to check, the bindings whose discovery may list the secrets, the
        // bindings that read them at another stage.
        let mut groups: Vec<Group> = Vec::new();
        for (i, (change, sent)) in changes.iter().enumerate() {
            for b in bindings
                .iter()
                .filter(|b| b.meta().deletion_timestamp.is_none())
            {
                // A binding its source refuses reads nothing; one that reads is checked only
                // for ids its grant admits (no call names a refused secret).
                let Ok(grant) = ctx.sources.grant(b) else {
                    continue;
                };
                let key = key_of(b);
                let mut interest = parse::interest(
                    &b.spec,
                    read.get(&key).map(Vec::as_slice).unwrap_or_default(),
                    change,
                );
                interest.current.retain(|id| grant.admits(id).is_ok());
                let event_id = change.name.clone().unwrap_or_else(|| change.ids[0].clone());
                interest.discovery &= grant.admits(&event_id).is_ok();
                if !interest.any() {
                    continue;
                }
                out.relevant[i] = true;
                let g = match groups.iter().position(|g| g.origin == grant.origin) {
                    Some(p) => &mut groups[p],
                    None => {
                        groups.push(Group::new(grant.origin.clone()));
                        groups.last_mut().expect("pushed")
                    }
                };
                g.ids.extend(interest.current.iter().cloned());
                g.senders.push((key.clone(), *sent));
                if interest.direct {
                    g.direct.push(key.clone());
                }
                if interest.discovery {
                    g.discovery.push(key.clone());
                    // Checked by the event's exact name when it has one, else by its first id.
                    g.event_ids.insert(event_id);
                }
            }
        }
        let mut membership: Vec<Key> = Vec::new();
        for g in &groups {
            let mut described: Vec<Described> = Vec::new();
            let probes: Vec<&String> = g
                .ids
                .iter()
                .chain(g.event_ids.iter().filter(|e| !g.ids.contains(*e)))
                .collect();
            for p in probes {
                let covered = described.iter().any(|d| match (&d.name, &d.arn) {
                    (Some(n), Some(a)) => parse::names_exactly(p, n, a),
                    _ => &d.asked == p,
                });
                if covered {
                    continue;
                }
                let d = ctx.secrets_manager.describe(&g.origin, p).await?;
                let (aliases, names) = match (&d.name, &d.arn) {
                    (Some(n), Some(a)) => {
                        let mut aliases: Vec<String> = g
                            .ids
                            .iter()
                            .filter(|i| parse::names_exactly(i, n, a))
                            .cloned()
                            .collect();
                        for x in [n, p] {
                            if !aliases.contains(x) {
                                aliases.push(x.clone());
                            }
                        }
                        (aliases, vec![n.clone()])
                    }
                    // Not found: only what was asked for is known to be gone.
                    _ => (
                        vec![p.clone()],
                        if p.starts_with("arn:") {
                            vec![]
                        } else {
                            vec![p.clone()]
                        },
                    ),
                };
                debug!(secret = %p, gone = d.gone(), "checked a secret named by an event");
                if ctx
                    .secrets_manager
                    .apply_described(&g.origin, d.current_version.as_deref(), &aliases, &names)
                    .await
                {
                    membership.extend(g.discovery.iter().cloned());
                }
                described.push(d);
            }
        }
        // Secrets whose version changed (found now, or by a concurrent refresh): every binding
        // that read them refreshes now, as after any version check.
        let mut wake: BTreeSet<Key> = ctx.wake_changed();
        wake.extend(membership);
        for g in &groups {
            wake.extend(g.direct.iter().cloned());
        }
        let earliest = |k: &Key| {
            groups
                .iter()
                .flat_map(|g| g.senders.iter())
                .filter(|(s, _)| s == k)
                .map(|(_, t)| *t)
                .min()
                .unwrap_or_else(SystemTime::now)
        };
        for k in wake {
            ctx.wake(&k);
            out.woken.insert(k.clone(), earliest(&k));
        }
        Ok(out)
    }

    /// Whether a woken binding has read Secrets Manager since `since` (or is gone).
    fn refreshed(&self, key: &Key, since: Instant) -> bool {
        let exists = self
            .ctx
            .bindings
            .get(&ObjectRef::new(&key.1).within(&key.0))
            .is_some_and(|b| b.meta().deletion_timestamp.is_none());
        if !exists {
            return true;
        }
        let index = self.ctx.index.lock().expect("index");
        index
            .bindings
            .get(key)
            .is_none_or(|s| !s.stale && s.resolved.as_ref().is_some_and(|r| r.at >= since))
    }

    /// Waits until every woken binding refreshed, extending the messages' visibility meanwhile;
    /// false when [`REFRESH_DEADLINE`] passed first.
    async fn wait_refreshed(
        &self,
        woken: &BTreeMap<Key, SystemTime>,
        since: Instant,
        receipts: &[String],
    ) -> bool {
        let mut pending: Vec<(&Key, &SystemTime)> = woken.iter().collect();
        let mut extend_at = Instant::now() + EXTEND_EVERY;
        loop {
            pending.retain(|(k, sent)| {
                if !self.refreshed(k, since) {
                    return true;
                }
                let latency = SystemTime::now()
                    .duration_since(**sent)
                    .unwrap_or_default()
                    .as_secs_f64();
                self.ctx.metrics.event_to_secret.observe(latency);
                debug!(binding = %k.1, namespace = %k.0, latency, "refreshed after an event");
                false
            });
            if pending.is_empty() {
                return true;
            }
            if since.elapsed() > REFRESH_DEADLINE {
                return false;
            }
            if Instant::now() >= extend_at {
                self.extend(receipts).await;
                extend_at = Instant::now() + EXTEND_EVERY;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The rollout hash each binding delivers now.
    fn rollout_hashes<'a>(
        &self,
        keys: impl Iterator<Item = &'a Key>,
    ) -> HashMap<Key, Option<String>> {
        let index = self.ctx.index.lock().expect("index");
        keys.map(|k| {
            let hash = index.bindings.get(k).and_then(|s| match &s.delivery {
                Delivery::Inject { rollout_hash, .. } => rollout_hash.clone(),
                _ => None,
            });
            (k.clone(), hash)
        })
        .collect()
    }

    /// Observes, for the latency metric, when the Deployments of bindings whose content
    /// changed carry the new content (the Deployment controller then creates the ReplicaSet).
    async fn watch_rollouts(
        &self,
        woken: &BTreeMap<Key, SystemTime>,
        before: HashMap<Key, Option<String>>,
    ) {
        let started = Instant::now();
        let mut pending: Vec<(Key, SystemTime)> =
            woken.iter().map(|(k, t)| (k.clone(), *t)).collect();
        while !pending.is_empty() && started.elapsed() < ROLLOUT_WATCH {
            let now = self.rollout_hashes(pending.iter().map(|(k, _)| k));
            pending.retain(|(k, sent)| {
                let Some(Some(hash)) = now.get(k) else {
                    return false;
                };
                if before.get(k).cloned().flatten().as_ref() == Some(hash) {
                    return false;
                }
                let targets = {
                    let index = self.ctx.index.lock().expect("index");
                    index
                        .bindings
                        .get(k)
                        .map(|s| s.targets.clone())
                        .unwrap_or_default()
                };
                let annotation = pod_annotation_key(&k.1);
                let carried = targets.iter().all(|d| {
                    self.ctx
                        .deployments
                        .get(&ObjectRef::new(d).within(&k.0))
                        .is_some_and(|d| {
                            d.spec
                                .as_ref()
                                .and_then(|s| s.template.metadata.as_ref())
                                .and_then(|m| m.annotations.as_ref())
                                .and_then(|a| a.get(&annotation))
                                == Some(hash)
                        })
                });
                if carried && !targets.is_empty() {
                    let latency = SystemTime::now()
                        .duration_since(*sent)
                        .unwrap_or_default()
                        .as_secs_f64();
                    self.ctx.metrics.event_to_rollout.observe(latency);
                }
                !carried
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn delete(&self, messages: &[Received]) {
        for chunk in messages.chunks(MAX_MESSAGES as usize) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.receipt)
                        .build()
                        .ok()
                })
                .collect();
            match self
                .client
                .delete_message_batch()
                .queue_url(&self.queue)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(r) => {
                    for f in r.failed() {
                        warn!(code = %f.code(), "deleting a handled event failed; it will come back and be checked again");
                    }
                }
                Err(e) => {
                    warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "deleting handled events failed; they will come back and be checked again");
                }
            }
        }
    }

    async fn extend(&self, receipts: &[String]) {
        for chunk in receipts.chunks(MAX_MESSAGES as usize) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(VISIBILITY.as_secs() as i32)
                        .build()
                        .ok()
                })
                .collect();
            if let Err(e) = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.queue)
                .set_entries(Some(entries))
                .send()
                .await
            {
                warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "extending the visibility of events in hand failed");
            }
        }
    }
}

/// The bindings of one origin an event batch concerns.
struct Group {
    origin: Origin,
    /// Ids bindings read that may be the events' secrets (checked by version).
    ids: BTreeSet<String>,
    /// Ids from the events themselves, checked for discovery.
    event_ids: BTreeSet<String>,
    discovery: Vec<Key>,
    direct: Vec<Key>,
    senders: Vec<(Key, SystemTime)>,
}

impl Group {
    fn new(origin: Origin) -> Group {
        Group {
            origin,
            ids: BTreeSet::new(),
            event_ids: BTreeSet::new(),
            discovery: Vec::new(),
            direct: Vec::new(),
            senders: Vec::new(),
        }
    }
}

fn key_of(b: &AirflowSecretBinding) -> Key {
    (b.namespace().unwrap_or_default(), b.name_any())
}

/// When SQS received the message (`SentTimestamp`, ms since the epoch).
fn sent_at(m: &Message) -> Option<SystemTime> {
    let ms: u64 = m
        .attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_url_regions() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/aso-events")
                .as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_of_queue_url("https://sqs.cn-north-1.amazonaws.com.cn/1/q").as_deref(),
            Some("cn-north-1")
        );
        assert_eq!(
            region_of_queue_url("http://127.0.0.1:5000/123456789012/q"),
            None
        );
    }
}
