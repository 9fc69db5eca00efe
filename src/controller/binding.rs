//! The binding controller: observe (the binding, Secrets Manager, the caches) → plan
//! ([`crate::plan::binding`]) → act (write the Secrets that differ, hand the delivery to the
//! workload controller, write status when it changed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::info;

use super::index::{Key, Resolved};
use super::owners::SecretRef;
use super::{Context, Error, backoff, with_jitter};
use crate::api::{
    AirflowSecretBinding, EntryState, EntryStatus, Mode, WorkloadState, WorkloadStatus,
};
use crate::entries::{Fetched, ResolvedEntry};
use crate::metrics::{BindingLabels, EntryLabels};
use crate::plan::backend;
use crate::plan::binding::{BindingInput, BindingPlan, Problem, Read, plan_binding, verdict};
use crate::plan::content::{Content, SecretPart};
use crate::plan::held::{self, SOURCE_DIGEST_ANNOTATION};
use crate::plan::select::{SelectedWorkload, select_workloads};
use crate::plan::status::{self, ALL_STATES, StatusInput};
use crate::plan::workload::{
    Delivery, FIELD_MANAGER, carries_binding, legacy_managers, pod_annotation_key,
    template_annotations,
};
use crate::secretsmanager::{DiscoveryPatterns, Reader};
use crate::source::Grant;

/// Changing this annotation's value on a binding forces a re-read of Secrets Manager.
pub const FORCE_SYNC_ANNOTATION: &str = "airflow-secrets.io/force-sync";
/// Label on every managed Secret: the binding's name.
pub const BINDING_LABEL: &str = "airflow-secrets.io/binding";
/// Label on the objects a binding writes to another namespace (`spec.target.backendNamespace`),
/// where no owner reference can point to it: the binding's namespace.
pub const BINDING_NAMESPACE_LABEL: &str = "airflow-secrets.io/binding-namespace";
/// Label on every managed Secret: who manages it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Annotation of each managed Secret that carries the binding's content hash.
pub const HASH_ANNOTATION: &str = "airflow-secrets.io/content-hash";

/// Name of the managed Secret (its first part).
pub fn secret_name(binding: &AirflowSecretBinding) -> String {
    binding
        .spec
        .target
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-airflow", binding.name_any()))
}

pub(super) fn key_of(binding: &AirflowSecretBinding) -> Key {
    (binding.namespace().unwrap_or_default(), binding.name_any())
}

fn force_of(binding: &AirflowSecretBinding) -> Option<String> {
    binding.annotations().get(FORCE_SYNC_ANNOTATION).cloned()
}

/// The spec a delivery answers: the binding's generation and force-sync value.
pub(super) fn answer_of(binding: &AirflowSecretBinding) -> super::index::Answer {
    (binding.metadata.generation, force_of(binding))
}

/// Whether an object (a managed Secret) is controlled by the binding.
pub(super) fn controlled_by<K: Resource>(object: &K, binding: &AirflowSecretBinding) -> bool {
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == binding.uid().as_ref())
}

/// Whether a managed Secret is the binding's: controlled by it, or — in another namespace, where
/// no owner reference can point to it — labelled with its name and namespace.
pub(super) fn belongs_to<K: Resource>(object: &K, binding: &AirflowSecretBinding) -> bool {
    controlled_by(object, binding)
        || super::owners::labelled_for(object).is_some_and(|((ns, name), _)| {
            Some(ns) == binding.namespace() && name == binding.name_any()
        })
}

fn refresh_interval(binding: &AirflowSecretBinding) -> Duration {
    refresh_interval_of(&binding.spec.refresh_interval)
}

/// `spec.refreshInterval` as the controller uses it: at least 1 s; 1 h when it cannot be read.
/// Read as the CRD's pattern writes it (`1h30m`, `2.5s`, `500ms`) into a duration of at most
/// Go's (about 292 years; its CEL rule accepts no more), with checked arithmetic: kube's parser
/// panics on a term that overflows (`99999999999999999999999h`) or is negative.
pub fn refresh_interval_of(text: &str) -> Duration {
    parse_interval(text)
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(1))
}

fn parse_interval(text: &str) -> Option<Duration> {
    static TERM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)").expect("a valid regex")
    });
    // Go's largest duration, i64::MAX nanoseconds.
    let max = Duration::from_nanos(i64::MAX as u64);
    let (mut rest, mut total) = (text, Duration::ZERO);
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let term = TERM.captures(rest)?;
        let unit = match &term[2] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            _ => 3600.0,
        };
        let value: f64 = term[1].parse().ok()?;
        total = total.checked_add(Duration::try_from_secs_f64(value * unit).ok()?)?;
        rest = &rest[term[0].len()..];
    }
    (total <= max).then_some(total)
}

pub(super) fn labels(binding: &AirflowSecretBinding) -> BindingLabels {
    BindingLabels {
        namespace: binding.namespace().unwrap_or_default(),
        binding: binding.name_any(),
    }
}

/// The Deployments of the binding's namespace it selects now, from the cache.
pub(super) fn selected(
    ctx: &Context,
    binding: &AirflowSecretBinding,
) -> Vec<(Arc<Deployment>, SelectedWorkload)> {
    let Some(selector) = &binding.spec.target.workloads else {
        return vec![];
    };
    let ns = binding.namespace();
    ctx.deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .filter_map(|d| {
            let w = select_workloads(
                std::slice::from_ref(&*d),
                selector,
                &binding.spec.target.components,
                &binding.spec.target.containers,
            )
            .pop()?;
            Some((d, w))
        })
        .collect()
}

/// Secrets of a binding in the cache, by (namespace, name): those it controls, and those it
/// wrote to another namespace, labelled for it (looked up by the names the watch noted under
/// the binding, not by a scan of every Secret; see [`super::owners`]).
pub(super) fn owned_secrets(
    ctx: &Context,
    binding: &AirflowSecretBinding,
) -> BTreeMap<SecretRef, Arc<kube::core::PartialObjectMeta<Secret>>> {
    let Some(uid) = binding.uid() else {
        return BTreeMap::new();
    };
    let (ns, name) = key_of(binding);
    ctx.owners
        .candidates(&uid, &ns, &name)
        .into_iter()
        .filter_map(|(ns, name)| {
            let s = ctx.secrets.get(&ObjectRef::new(&name).within(&ns))?;
            belongs_to(&*s, binding).then_some(((ns, name), s))
        })
        .collect()
}

/// The names of the binding's Secrets in its own namespace (those its workloads may refer to).
pub(super) fn own_secret_names(ctx: &Context, binding: &AirflowSecretBinding) -> BTreeSet<String> {
    let ns = binding.namespace().unwrap_or_default();
    owned_secrets(ctx, binding)
        .into_keys()
        .filter(|(at, _)| *at == ns)
        .map(|(_, name)| name)
        .collect()
}

/// Reconciles a binding that is not being deleted.
pub(super) async fn apply(binding: &AirflowSecretBinding, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(binding);
    let grant = ctx.sources.grant(binding);
    let (patterns, mut pattern_problems) = DiscoveryPatterns::compile(&binding.spec);
    if let Ok(g) = &grant {
        pattern_problems.extend(crate::secretsmanager::refused_listings(g, &binding.spec));
    }
    // A force-sync value this binding has not read with yet: see the current state, and accept
    // what it shows (the emptied-source guard steps aside).
    let forced = {
        let index = ctx.index.lock().expect("index");
        index
            .bindings
            .get(&key)
            .and_then(|s| s.resolved.as_ref())
            .is_some_and(|r| r.force != force_of(binding))
    };
    let backend_ns = super::labelled::admission(ctx, binding);
    let read = match (&grant, backend_ns) {
        (Ok(g), Ok(())) => observe(binding, ctx, &key, g, &patterns, forced).await,
        (Err(refusal), _) => {
            ctx.secrets_manager.forget(&key);
            Read::Refused(Problem {
                reason: refusal.reason,
                message: refusal.message.clone(),
            })
        }
        // Nothing is read for a delivery that cannot land: once the namespace admits the
        // binding (its annotation's change wakes it), it reads.
        (Ok(_), Err(refused)) => {
            ctx.secrets_manager.forget(&key);
            Read::Refused(refused)
        }
    };
    let failed = matches!(read, Read::Failed(_));
    let origin = grant.as_ref().map(|g| g.origin.clone()).unwrap_or_default();
    let mut plan = plan(binding, ctx, &key, read, pattern_problems, forced, &origin).await?;
    // Namespaces the binding's labelled Secrets were in before this write: where a grant to
    // list them may have to go.
    let labelled_in = super::labelled::labelled_namespaces(ctx, binding);
    // A failed write reaches status (and an Event) in this reconcile; the agents keep what they
    // have, and the error is retried with backoff.
    let written = write_secrets(binding, ctx, &key, &plan).await;
    if let Err(e) = &written {
        plan.delivery = Delivery::Hold;
        plan.problem = Some(match e {
            Error::NotOwned(name) => Problem {
                reason: status::reason::SECRET_NOT_OWNED,
                message: format!(
                    "Secret {name} exists and is not managed by this binding; it is left untouched (choose another spec.target.secretName or delete that Secret)"
                ),
            },
            other => Problem {
                reason: status::reason::WRITE_FAILED,
                message: format!("writing the managed Secret failed: {other}"),
            },
        });
    }
    let targets = selected(ctx, binding);
    if plan.content.is_some()
        && let Err(e) =
            super::labelled::grant_access(binding, ctx, &key, &targets, &labelled_in).await
    {
        plan.delivery = Delivery::Hold;
        plan.problem = Some(Problem {
            reason: status::reason::WRITE_FAILED,
            message: format!(
                "granting the workloads' ServiceAccounts list on Secrets in namespace {} (Role and RoleBinding {}) failed: {e}",
                crate::plan::labelled::target_namespace(binding),
                super::labelled::access_name_at(
                    binding,
                    &crate::plan::labelled::target_namespace(binding)
                )
            ),
        });
    }
    hand_over(binding, ctx, &key, &plan, &targets);
    write_status(binding, ctx, &key, &plan, &targets).await?;
    written?;
    // A foreign Secret in the way is looked at again with backoff, not only at the next refresh.
    let not_owned = plan
        .problem
        .as_ref()
        .is_some_and(|p| p.reason == status::reason::SECRET_NOT_OWNED);
    let polls = grant
        .as_ref()
        .is_ok_and(|g| ctx.secrets_manager.polls(&g.origin, &binding.spec));
    Ok(next_reconcile(binding, ctx, &key, failed, not_owned, polls))
}

/// When the binding is reconciled next: with backoff after a failure; else on its interval when
/// it reads what the shared view cannot check for it (`polls`: direct reads; or entries that
/// failed), else rarely, for safety (the view's background refresh wakes it on a change).
fn next_reconcile(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    unavailable: bool,
    not_owned: bool,
    polls: bool,
) -> Action {
    let mut index = ctx.index.lock().expect("index");
    let state = index.binding(key);
    if unavailable || not_owned {
        state.failures += 1;
        // While Secrets Manager fails, the backoff stops growing at 4 steps (≤ 8.2 s), so that a
        // binding notices its source's return within seconds; the source's rate limit and the
        // SDK's retry quota bound what many failing bindings send meanwhile.
        let steps = if unavailable {
            state.failures.min(4)
        } else {
            state.failures
        };
        return Action::requeue(backoff(steps));
    }
    state.failures = 0;
    let interval = refresh_interval(binding);
    let Some(resolved) = &state.resolved else {
        return Action::requeue(with_jitter(interval));
    };
    let problems = resolved
        .entries
        .iter()
        .any(|e| matches!(e.outcome, Fetched::Problem(..)));
    let wait = if polls || problems {
        interval
            .saturating_sub(resolved.at.elapsed())
            .max(Duration::from_millis(200))
    } else {
        safety_resync(interval)
    };
    Action::requeue(with_jitter(wait))
}

/// How often a binding the shared view watches for it is reconciled anyway: ten refresh
/// intervals, at least 5 minutes and at most 10 hours.
pub(super) fn safety_resync(interval: Duration) -> Duration {
    (interval * 10).clamp(Duration::from_secs(300), Duration::from_secs(36_000))
}

/// Reads Secrets Manager unless what was read within the refresh interval still answers this
/// spec; tells other bindings that read a secret whose version changed.
async fn observe(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    grant: &Grant,
    patterns: &DiscoveryPatterns,
    forced: bool,
) -> Read {
    if binding.spec.mode == Mode::Backend {
        return Read::Entries(Arc::new(backend::backend_entries(
            &binding.spec,
            &grant.origin,
        )));
    }
    let force = force_of(binding);
    let interval = refresh_interval(binding);
    let fresh = {
        let index = ctx.index.lock().expect("index");
        index.bindings.get(key).and_then(|s| {
            let r = s.resolved.as_ref()?;
            (!s.stale
                && r.generation == binding.metadata.generation
                && r.force == force
                && r.at.elapsed() < interval)
                .then(|| r.entries.clone())
        })
    };
    if let Some(entries) = fresh {
        return Read::Entries(entries);
    }
    // A forced sync reads explicit entries directly and lists anew; otherwise what the shared
    // view learnt within the interval serves, and values the managed Secret holds for the
    // current versions are not read again.
    let holding = if forced {
        None
    } else {
        holding(binding, ctx, key).await
    };
    let reader = Reader {
        key: key.clone(),
        max_age: if forced { Duration::ZERO } else { interval },
        direct: forced,
        reads_values: holding.is_none(),
    };
    let conversion = held::Conversion::of(&binding.spec);
    let held = |entries: &[ResolvedEntry]| match &holding {
        Some(Holding::Written(versions, data)) => held::held_by_versions(entries, versions, data),
        Some(Holding::Found(digest, data)) => held::held(entries, digest, data, conversion),
        None => vec![false; entries.len()],
    };
    match ctx
        .secrets_manager
        .resolve_for(&reader, grant, &binding.spec, patterns, &held)
        .await
    {
        Ok(mut entries) => {
            // Kept until the next read: without the spare capacity the list grew with.
            entries.shrink_to_fit();
            let entries = Arc::new(entries);
            remember(ctx, key, binding, force, entries.clone());
            // Secrets whose version the shared view found changed (by this read or a
            // concurrent one): every binding that read them refreshes now, together.
            ctx.wake_changed();
            Read::Entries(entries)
        }
        Err(e) => Read::Failed(e.to_string()),
    }
}

/// What the managed Secrets hold, and how to tell which of it is current.
enum Holding {
    /// Written by this process: the version behind each value (entry by entry).
    Written(Arc<held::Versions>, Arc<BTreeMap<String, String>>),
    /// Found after a restart: the digest of the reads behind the data (all or nothing).
    Found(String, Arc<BTreeMap<String, String>>),
}

/// What the managed Secrets hold: from memory, or after a restart from the Secrets themselves
/// (their digest annotation, then their data).
async fn holding(binding: &AirflowSecretBinding, ctx: &Context, key: &Key) -> Option<Holding> {
    {
        let index = ctx.index.lock().expect("index");
        if let Some(s) = index.bindings.get(key)
            && let Some(data) = &s.last_good
        {
            if let Some(v) = &s.last_versions {
                return Some(Holding::Written(v.clone(), data.clone()));
            }
            if let Some(d) = &s.last_digest {
                return Some(Holding::Found(d.clone(), data.clone()));
            }
        }
    }
    let digests: BTreeSet<Option<String>> = owned_secrets(ctx, binding)
        .values()
        .filter(|s| crate::plan::labelled::labelled_id(s.labels()).is_none())
        .map(|s| s.annotations().get(SOURCE_DIGEST_ANNOTATION).cloned())
        .collect();
    let digest = match digests.len() {
        1 => digests.into_iter().next().flatten()?,
        _ => return None,
    };
    let data = Arc::new(read_secret_data(binding, ctx).await.ok()?);
    let mut index = ctx.index.lock().expect("index");
    let state = index.binding(key);
    state.last_good = Some(data.clone());
    state.last_digest = Some(digest.clone());
    Some(Holding::Found(digest, data))
}

/// Stores a successful read.
fn remember(
    ctx: &Context,
    key: &Key,
    binding: &AirflowSecretBinding,
    force: Option<String>,
    entries: Arc<Vec<ResolvedEntry>>,
) {
    let mut index = ctx.index.lock().expect("index");
    let state = index.binding(key);
    state.stale = false;
    state.resolved = Some(Resolved {
        generation: binding.metadata.generation,
        force,
        at: Instant::now(),
        when: Timestamp::now(),
        entries,
    });
}

/// Gathers the plan's other inputs (last good values, denial times) and plans.
async fn plan(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    read: Read,
    pattern_problems: Vec<crate::api::EntryStatus>,
    forced: bool,
    origin: &crate::source::Origin,
) -> Result<BindingPlan, Error> {
    let (last_good, foreign) = {
        let mut index = ctx.index.lock().expect("index");
        let state = index.binding(key);
        (state.last_good.clone(), state.foreign_secret.take())
    };
    let needs_last_good = matches!(&read, Read::Entries(e) if e.iter().any(|e| matches!(e.outcome, Fetched::Held | Fetched::Problem(EntryState::AccessDenied | EntryState::Error, _))));
    let last_good = match last_good {
        Some(l) => Some(l),
        None if needs_last_good => Some(Arc::new(read_secret_data(binding, ctx).await?)),
        None => None,
    };
    Ok(plan_binding(BindingInput {
        binding,
        secret_name: secret_name(binding),
        read,
        pattern_problems,
        last_good: last_good.as_deref(),
        foreign_secret: foreign,
        forced,
        taken: &super::labelled::taken_ids(ctx, binding),
        origin,
    }))
}

/// The data of the binding's managed Secrets as they are now, keyed as in its content (read
/// when nothing was remembered, e.g. after a restart): a GET of each when the binding owns a
/// few (the cache knows which), else one LIST by the binding's label. A LIST by label costs
/// the API server a scan of every Secret in the namespace: thousands of bindings restarting
/// together must not make one each.
async fn read_secret_data(
    binding: &AirflowSecretBinding,
    ctx: &Context,
) -> Result<BTreeMap<String, String>, Error> {
    const GET_UP_TO: usize = 4;
    let own_ns = binding.namespace().unwrap_or_default();
    let owned = owned_secrets(ctx, binding);
    let secrets = if owned.len() <= GET_UP_TO {
        let mut found = Vec::new();
        for (ns, name) in owned.keys() {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            found.extend(api.get_opt(name).await?);
        }
        found
    } else {
        // The binding's namespace, and the one its labelled Secrets go to.
        let mut found = Vec::new();
        let mut places: BTreeSet<String> = owned.keys().map(|(ns, _)| ns.clone()).collect();
        places.insert(own_ns.clone());
        for ns in places {
            let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            let mut selector = format!("{BINDING_LABEL}={}", binding.name_any());
            if ns != own_ns {
                selector.push_str(&format!(",{BINDING_NAMESPACE_LABEL}={own_ns}"));
            }
            found.extend(
                api.list(&ListParams::default().labels(&selector))
                    .await?
                    .items,
            );
        }
        found
    };
    let mut out = BTreeMap::new();
    for s in secrets {
        if !belongs_to(&s, binding) {
            continue;
        }
        let relabel = crate::plan::labelled::content_key(s.labels());
        for (k, v) in s.data.unwrap_or_default() {
            let Ok(text) = String::from_utf8(v.0) else {
                continue;
            };
            match &relabel {
                Some(key) if k == crate::plan::labelled::DATA_KEY => out.insert(key.clone(), text),
                Some(_) => None,
                None => out.insert(k, text),
            };
        }
    }
    Ok(out)
}

/// Deletes the owned Secrets the content no longer has: parts, and labelled Secrets — in the
/// namespace the backend reads, and in any other (the binding's own, or a backend namespace it
/// left).
async fn remove_unneeded(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    content: &Content,
    owned: impl Iterator<Item = &(String, String)>,
) -> Result<(), Error> {
    let target = crate::plan::labelled::target_namespace(binding);
    let keep = |ns: &String, n: &String| {
        (*ns == key.0 && content.parts.iter().any(|p| &p.name == n))
            || (*ns == target && content.labelled.iter().any(|l| &l.name == n))
    };
    for (ns, name) in owned.filter(|(ns, n)| !keep(ns, n)) {
        Api::<Secret>::namespaced(ctx.client.clone(), ns)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
            .or_else(ignore_404)?;
    }
    Ok(())
}

/// Writes the Secrets whose content, ownership or resource version differ from the plan; removes
/// parts the content no longer needs.
async fn write_secrets(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    plan: &BindingPlan,
) -> Result<(), Error> {
    let Some(content) = &plan.content else {
        return Ok(());
    };
    let owned = owned_secrets(ctx, binding);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.0);
    let mut wrote: Vec<(&SecretPart, bool)> = Vec::new();
    for part in &content.parts {
        let current = owned.get(&(key.0.clone(), part.name.clone()));
        let known = {
            let index = ctx.index.lock().expect("index");
            index
                .bindings
                .get(key)
                .and_then(|s| s.secret_versions.get(&part.name).cloned())
        };
        if let Some(current) = current
            && up_to_date(current, binding, content, known.as_deref())
        {
            if known.is_none() {
                remember_version(ctx, key, &part.name, current.resource_version());
            }
            continue;
        }
        let body = secret_object(binding, part, content);
        match write_secret(binding, &api, body, current.is_some()).await? {
            Written::Version(rv) => {
                remember_version(ctx, key, &part.name, rv);
                wrote.push((part, current.is_none()));
            }
            Written::Foreign => {
                ctx.index.lock().expect("index").binding(key).foreign_secret =
                    Some(part.name.clone());
                return Err(Error::NotOwned(part.name.clone()));
            }
        }
    }
    let labelled = super::labelled::write_all(binding, ctx, &content.labelled).await?;
    remove_unneeded(binding, ctx, key, content, owned.keys()).await?;
    remember_written(
        ctx,
        key,
        content,
        plan.entries.as_deref().unwrap_or_default(),
    );
    for (part, created) in wrote {
        let verb = if created { "Created" } else { "Updated" };
        let name = &part.name;
        info!(binding = %key.1, namespace = %key.0, secret = %name, hash = %content.content_hash, "{verb} managed Secret");
        ctx.publish(
            binding,
            EventType::Normal,
            verb,
            "WriteSecret",
            &format!("{verb} Secret {name} ({} keys)", part.data.len()),
        )
        .await;
    }
    if labelled > 0 {
        info!(binding = %key.1, namespace = %key.0, secrets = labelled, "Wrote labelled Secrets for KubernetesSecretsBackend");
        ctx.publish(
            binding,
            EventType::Normal,
            "Updated",
            "WriteSecret",
            &format!("Wrote {labelled} Secrets labelled for KubernetesSecretsBackend"),
        )
        .await;
    }
    Ok(())
}

/// What the binding's Secrets hold now: the data by content key, the digest and the version
/// behind each value (from the entries' status lines).
fn remember_written(ctx: &Context, key: &Key, content: &Content, entries: &[EntryStatus]) {
    let mut index = ctx.index.lock().expect("index");
    let state = index.binding(key);
    state.foreign_secret = None;
    state.last_good = Some(Arc::new(
        content
            .parts
            .iter()
            .flat_map(|p| p.data.clone())
            .chain(
                content
                    .labelled
                    .iter()
                    .map(|l| (l.content_key.clone(), l.value.clone())),
            )
            .collect(),
    ));
    state.last_digest = Some(content.source_digest.clone());
    state.last_versions = Some(Arc::new(held::versions_of_content(entries)));
}

pub(super) fn ignore_404(e: kube::Error) -> Result<(), kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => Ok(()),
        e => Err(e),
    }
}

fn remember_version(ctx: &Context, key: &Key, name: &str, rv: Option<String>) {
    if let Some(rv) = rv {
        ctx.index
            .lock()
            .expect("index")
            .binding(key)
            .secret_versions
            .insert(name.to_string(), rv);
    }
}

/// Whether a cached managed Secret already holds the content: same hashes, our labels, no
/// first-version field manager, and nobody else wrote it since we did.
fn up_to_date(
    current: &kube::core::PartialObjectMeta<Secret>,
    binding: &AirflowSecretBinding,
    content: &Content,
    known_version: Option<&str>,
) -> bool {
    let annotation = |k: &str| current.annotations().get(k).map(String::as_str);
    annotation(HASH_ANNOTATION) == Some(&content.content_hash)
        && annotation(SOURCE_DIGEST_ANNOTATION) == Some(&content.source_digest)
        && current.labels().get(BINDING_LABEL) == Some(&binding.name_any())
        && legacy_managers(&current.metadata).is_empty()
        && known_version.is_none_or(|v| current.resource_version().as_deref() == Some(v))
}

pub(super) enum Written {
    Version(Option<String>),
    Foreign,
}

fn secret_object(binding: &AirflowSecretBinding, part: &SecretPart, content: &Content) -> Secret {
    let owner = binding
        .controller_owner_ref(&())
        .expect("a stored binding has a uid");
    Secret {
        metadata: ObjectMeta {
            name: Some(part.name.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
                (BINDING_LABEL.to_string(), binding.name_any()),
            ])),
            annotations: Some(BTreeMap::from([
                (HASH_ANNOTATION.to_string(), content.content_hash.clone()),
                (
                    SOURCE_DIGEST_ANNOTATION.to_string(),
                    content.source_digest.clone(),
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            part.data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// What the operator reads from the answer to a write of a managed Secret: its resource
/// version, its field managers and its data keys. The API server answers with the whole Secret;
/// its values and the sets of its managed fields (at 10,000 keys, megabytes once parsed) are
/// skipped.
#[derive(Debug, Default, serde::Deserialize)]
struct WrittenSecret {
    #[serde(default)]
    metadata: WrittenMeta,
    data: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WrittenMeta {
    resource_version: Option<String>,
    managed_fields: Option<Vec<FieldManager>>,
}

#[derive(Debug, serde::Deserialize)]
struct FieldManager {
    manager: Option<String>,
}

impl WrittenSecret {
    /// The field managers, as [`legacy_managers`] reads them.
    fn managers(&self) -> ObjectMeta {
        ObjectMeta {
            managed_fields: self.metadata.managed_fields.as_ref().map(|fields| {
                fields
                    .iter()
                    .map(|f| ManagedFieldsEntry {
                        manager: f.manager.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }
}

/// Creates a managed Secret (never taking over a same-named one) or applies it, then releases the
/// first version's field managers and removes keys that are not in `body`. The body is
/// serialised once and dropped, and answers are read as [`WrittenSecret`]: a write of a large
/// Secret holds one copy of it, not four.
pub(super) async fn write_secret(
    binding: &AirflowSecretBinding,
    api: &Api<Secret>,
    mut body: Secret,
    exists: bool,
) -> Result<Written, Error> {
    let name = body
        .metadata
        .name
        .clone()
        .expect("a managed Secret has a name");
    let keys: BTreeSet<String> = body.data.iter().flatten().map(|(k, _)| k.clone()).collect();
    body.metadata.managed_fields = None;
    let json = serde_json::value::to_raw_value(&body).map_err(kube::Error::SerdeError)?;
    drop(body);
    let client = api.clone().into_client();
    let request = kube::core::Request::new(api.resource_url());
    let mut written = if exists {
        None
    } else {
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let create = request
            .create(&pp, json.get().as_bytes().to_vec())
            .map_err(kube::Error::BuildRequest)?;
        match client.request::<WrittenSecret>(create).await {
            Ok(s) => Some(s),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                if !belongs_to(&api.get(&name).await?, binding) {
                    return Ok(Written::Foreign);
                }
                None
            }
            Err(e) => return Err(e.into()),
        }
    };
    if written.is_none() {
        let apply = request
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&*json),
            )
            .map_err(kube::Error::BuildRequest)?;
        let mut applied: WrittenSecret = client.request(apply).await?;
        for legacy in legacy_managers(&applied.managers()) {
            let release = request
                .patch(
                    &name,
                    &PatchParams::apply(&legacy).force(),
                    &Patch::Apply(
                        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}),
                    ),
                )
                .map_err(kube::Error::BuildRequest)?;
            applied = client.request(release).await?;
        }
        written = Some(applied);
    }
    drop(json);
    let s = written.expect("written above");
    let s = remove_other_keys(&client, &request, &name, &keys, s).await?;
    Ok(Written::Version(s.metadata.resource_version))
}

/// Removes the data keys a written Secret has beyond `keys` (a removed entry's, or keys another
/// field manager wrote).
async fn remove_other_keys(
    client: &kube::Client,
    request: &kube::core::Request,
    name: &str,
    keys: &BTreeSet<String>,
    written: WrittenSecret,
) -> Result<WrittenSecret, kube::Error> {
    let stale: serde_json::Map<String, serde_json::Value> = written
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .filter(|k| !keys.contains(*k))
        .map(|k| (k.clone(), serde_json::Value::Null))
        .collect();
    if stale.is_empty() {
        return Ok(written);
    }
    let remove = request
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": stale})),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request(remove).await
}

/// Publishes the binding's delivery for the workload controller and wakes the Deployments it
/// selects now or selected before.
fn hand_over(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    plan: &BindingPlan,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
) {
    let targets: BTreeSet<String> = selected.iter().map(|(_, w)| w.name.clone()).collect();
    let answer = answer_of(binding);
    let wake: BTreeSet<String> = {
        let mut index = ctx.index.lock().expect("index");
        let state = index.binding(key);
        let mut names: BTreeSet<String> = BTreeSet::from([secret_name(binding)]);
        if let Some(c) = &plan.content {
            names.extend(c.parts.iter().map(|p| p.name.clone()));
        } else {
            names.extend(state.secret_names.iter().cloned());
        }
        let changed = state.delivery != plan.delivery
            || state.answered.as_ref() != Some(&answer)
            || state.targets != targets
            || state.secret_names != names;
        let wake = if changed {
            state.targets.union(&targets).cloned().collect()
        } else {
            BTreeSet::new()
        };
        state.delivery = plan.delivery.clone();
        state.answered = Some(answer);
        state.secret_names = names;
        state.targets = targets;
        wake
    };
    for d in wake {
        let _ = ctx
            .to_workloads
            .unbounded_send(ObjectRef::new(&d).within(&key.0));
    }
}

/// What the binding's Deployments carry of it, with Pending where the current delivery has not
/// been written yet.
fn workloads(
    ctx: &Context,
    key: &Key,
    plan: &BindingPlan,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
) -> (Vec<WorkloadStatus>, Vec<String>) {
    let outcomes = ctx.index.lock().expect("index").outcomes_of(&key.0, &key.1);
    let mut out = Vec::new();
    let mut shadowing = Vec::new();
    if matches!(plan.delivery, Delivery::Release) {
        return (out, shadowing);
    }
    let want = match &plan.delivery {
        Delivery::Inject { rollout_hash, .. } => rollout_hash.clone(),
        _ => None,
    };
    for (d, w) in selected {
        // Before the workload controller has looked at a Deployment (e.g. right after a
        // restart), what it carries is read from the cache, so that Ready does not flap.
        let mut status = outcomes
            .get(&w.name)
            .cloned()
            .unwrap_or_else(|| live_outcome(d, w, &key.1, want.as_deref()));
        if want.is_some()
            && status.state == Some(WorkloadState::Injected)
            && status.content_hash != want
        {
            status.state = Some(WorkloadState::Pending);
        }
        status.name = w.name.clone();
        status.component = w.component;
        if let Some(entries) = &plan.entries
            && let Some(warning) = backend::backend_shadowing(d, &w.containers, entries)
        {
            shadowing.push(format!("Deployment {}: {warning}", w.name));
        }
        out.push(status);
    }
    (out, shadowing)
}

/// The status this reconcile computes.
fn compute_status(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    plan: &BindingPlan,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
) -> crate::api::AirflowSecretBindingStatus {
    let (workloads, shadowing) = workloads(ctx, key, plan, selected);
    let previous = binding.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let name = secret_name(binding);
    let Some(entries) = &plan.entries else {
        let v = verdict(
            plan.problem.as_ref(),
            &previous.entries,
            &workloads,
            &shadowing,
            &name,
        );
        return status::with_verdict(&previous, v, workloads, binding.metadata.generation, &now);
    };
    let v = verdict(
        plan.problem.as_ref(),
        entries,
        &workloads,
        &shadowing,
        &name,
    );
    let synced_at = ctx
        .index
        .lock()
        .expect("index")
        .bindings
        .get(key)
        .and_then(|s| s.resolved.as_ref().map(|r| r.when.to_string()));
    let content = plan.content.as_ref();
    let status = status::build(
        StatusInput {
            generation: binding.metadata.generation,
            secret_name: name,
            extra_secret_names: content
                .map(|c| c.parts.iter().skip(1).map(|p| p.name.clone()).collect())
                .unwrap_or_else(|| previous.extra_secret_names.clone()),
            content_hash: content
                .map(|c| c.content_hash.clone())
                .or_else(|| previous.content_hash.clone()),
            last_sync_time: synced_at,
            entries,
            workloads,
            verdict: v,
        },
        &previous,
        &now,
    );
    status::quiet_sync_time(status, &previous, &now)
}

fn record_entry_metrics(ctx: &Context, key: &Key, status: &crate::api::AirflowSecretBindingStatus) {
    // A series per state the binding has entries in (and `Synced` always, so that every
    // binding has one): at 10,000 bindings, seven series each would be most of the memory.
    for state in ALL_STATES {
        let state = format!("{state:?}");
        let n = status.entry_counts.get(&state).copied().unwrap_or(0);
        let labels = EntryLabels {
            namespace: key.0.clone(),
            binding: key.1.clone(),
            state,
        };
        if n == 0 && labels.state != "Synced" {
            ctx.metrics.entries.remove(&labels);
        } else {
            ctx.metrics.entries.get_or_create(&labels).set(n);
        }
    }
}

/// What a Deployment carries of a binding, read from the Deployment itself.
fn live_outcome(
    d: &Deployment,
    w: &SelectedWorkload,
    binding: &str,
    want: Option<&str>,
) -> WorkloadStatus {
    let live = template_annotations(d).remove(&pod_annotation_key(binding));
    let current = want.is_some() && live.as_deref() == want;
    WorkloadStatus {
        name: w.name.clone(),
        component: w.component,
        containers: w.containers.clone(),
        state: Some(if current {
            WorkloadState::Injected
        } else {
            WorkloadState::Pending
        }),
        content_hash: live,
        message: None,
    }
}

/// Writes status when it differs from what is stored, keeps the entry metrics, and publishes
/// an Event when the binding runs into a new problem.
async fn write_status(
    binding: &AirflowSecretBinding,
    ctx: &Context,
    key: &Key,
    plan: &BindingPlan,
    selected: &[(Arc<Deployment>, SelectedWorkload)],
) -> Result<(), Error> {
    let status = compute_status(binding, ctx, key, plan, selected);
    record_entry_metrics(ctx, key, &status);
    let previous_reason = binding.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::reason::READY)
            .map(|c| c.reason.clone())
    });
    if let Some(p) = &plan.problem
        && previous_reason.as_deref() != Some(p.reason)
    {
        ctx.publish(
            binding,
            EventType::Warning,
            p.reason,
            "Reconcile",
            &p.message,
        )
        .await;
    }
    if binding.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<AirflowSecretBinding> = Api::namespaced(ctx.client.clone(), &key.0);
    api.patch_status(
        &key.1,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(status::merge_patch(&status)),
    )
    .await?;
    Ok(())
}

/// Releases the binding: its entries leave every Deployment (through the workload controller),
/// then its Secrets are deleted or kept without owner.
pub(super) async fn cleanup(
    binding: &AirflowSecretBinding,
    ctx: &Context,
) -> Result<Action, Error> {
    let key = key_of(binding);
    {
        let mut index = ctx.index.lock().expect("index");
        let state = index.binding(&key);
        state.delivery = Delivery::Release;
        state.answered = Some(answer_of(binding));
        let mut names = state.secret_names.clone();
        names.insert(secret_name(binding));
        names.extend(own_secret_names(ctx, binding));
        state.secret_names = names;
    }
    let carrying = || carrying(ctx, &key);
    let started = Instant::now();
    let mut woken = BTreeSet::new();
    loop {
        let left = carrying();
        if left.is_empty() {
            break;
        }
        // Each Deployment is woken once: the workload controller debounces, and a request
        // repeated within the debounce time would keep postponing the write.
        for d in left.iter().filter(|d| woken.insert((*d).clone())) {
            let _ = ctx
                .to_workloads
                .unbounded_send(ObjectRef::new(d).within(&key.0));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(Error::Pending(format!(
                "waiting for Deployments {} to release the binding's entries",
                left.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The grant in another namespace has no owner reference for the garbage collector.
    super::labelled::revoke_elsewhere(binding, ctx).await?;
    release_secrets(binding, ctx).await?;
    if let Some(uid) = binding.uid() {
        ctx.owners.forget(&uid, &key.0, &key.1);
    }
    ctx.index.lock().expect("index").bindings.remove(&key);
    ctx.secrets_manager.forget(&key);
    ctx.metrics.forget(&labels(binding));
    info!(binding = %key.1, namespace = %key.0, "released");
    Ok(Action::await_change())
}

/// The Deployments of the binding's namespace that still carry its entries or its rollout
/// annotation (from the cache).
pub(super) fn carrying(ctx: &Context, key: &Key) -> Vec<String> {
    let names = ctx
        .index
        .lock()
        .expect("index")
        .bindings
        .get(key)
        .map(|s| s.secret_names.clone())
        .unwrap_or_default();
    let annotation = pod_annotation_key(&key.1);
    ctx.deployments
        .state()
        .into_iter()
        .filter(|d| d.namespace().as_deref() == Some(key.0.as_str()))
        .filter(|d| carries_binding(d, &names, &annotation))
        .map(|d| d.name_any())
        .collect()
}

async fn release_secrets(binding: &AirflowSecretBinding, ctx: &Context) -> Result<(), Error> {
    for (ns, name) in owned_secrets(ctx, binding).into_keys() {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        match binding.spec.deletion_policy {
            crate::api::DeletionPolicy::Delete => {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
                    .or_else(ignore_404)?;
            }
            crate::api::DeletionPolicy::Retain => {
                let patch = json!({"metadata": {"ownerReferences": null, "labels": {BINDING_LABEL: null, BINDING_NAMESPACE_LABEL: null}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
        }
    }
    Ok(())
}
