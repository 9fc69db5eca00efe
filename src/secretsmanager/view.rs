//! One source's shared view of Secrets Manager: listings, current versions and values, shared by
//! every binding that reads the source.
//!
//! - A listing (by name filter) is made once per refresh window for all bindings that need it;
//!   concurrent requests for the same listing wait for the one in flight (single-flight).
//! - Explicit secret names learn their current version from listings, not from value reads:
//!   names sharing a prefix are checked by listing that prefix when it holds few other secrets,
//!   else by name (10 per `ListSecrets` filter). Every listing refreshes the versions it shows.
//!   The exception is a reader that holds no value yet (a new binding): it must read every
//!   value anyway, so its names never checked are read at once, the read telling the version.
//! - A value is read once per (secret, version) for all bindings and kept only while some binding
//!   still refers to that version.
//! - In the controller, a background refresh ([`View::refresh`]) keeps the versions and listings
//!   within their readers' intervals and reports what changed: a binding is reconciled when a
//!   secret it reads changed, not on every interval. What it could not check is recorded and
//!   reported to the readers (an error in their status), and retried with backoff.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;

use super::ResolveError;
use super::calls::{Api, FILTER_VALUES, LIST_PAGE, Listed};
use super::limit::TokenBucket;
use crate::entries::Fetched;
use crate::metrics::Calls;

/// Who reads through the view: a binding's (namespace, name).
pub type ReaderKey = (String, String);

/// How one set of explicit names is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// List everything under the prefix (one call per 100 secrets); the names are checked by
    /// name instead if the prefix turns out to hold too many others.
    Prefix(String, Vec<String>),
    /// List by up to 10 exact names.
    Names(Vec<String>),
}

/// Chooses, per prefix (up to the last `/`), the cheaper way to learn the current versions of
/// `names`: listing the prefix costs ⌈m/100⌉ calls when it holds m secrets (unknown before the
/// first listing: tried when more than 10 names share it), listing by name ⌈n/10⌉.
pub fn plan_checks(names: &BTreeSet<String>, prefix_sizes: &HashMap<String, usize>) -> Vec<Check> {
    let mut groups: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for n in names {
        let prefix = n.rfind('/').map(|i| &n[..=i]).unwrap_or("");
        groups.entry(prefix).or_default().push(n);
    }
    let mut out = Vec::new();
    for (prefix, group) in groups {
        let by_name = group.len().div_ceil(FILTER_VALUES);
        let by_prefix = match prefix_sizes.get(prefix) {
            Some(m) => (*m).max(1).div_ceil(LIST_PAGE as usize) <= by_name,
            None => group.len() > FILTER_VALUES,
        };
        if !prefix.is_empty() && by_prefix {
            out.push(Check::Prefix(
                prefix.to_string(),
                group.iter().map(|s| s.to_string()).collect(),
            ));
        } else {
            for chunk in group.chunks(FILTER_VALUES) {
                out.push(Check::Names(chunk.iter().map(|s| s.to_string()).collect()));
            }
        }
    }
    out
}

#[derive(Debug)]
struct Listing {
    at: Instant,
    secrets: Arc<Vec<Listed>>,
}

/// A (secret name, version) pair. One allocation serves the value cache and every reader that
/// refers to it: at 10,000 entries, a copy per map was megabytes.
pub type Pair = Arc<(String, String)>;

/// A value some reader refers to.
#[derive(Debug, Default)]
struct Slot {
    readers: usize,
    /// None until it is read.
    value: Option<Fetched>,
}

#[derive(Debug, Default)]
struct State {
    listings: HashMap<String, Listing>,
    /// Name → (current version, or None when no such secret; when it was learnt).
    versions: HashMap<String, (Option<String>, Instant)>,
    prefix_sizes: HashMap<String, usize>,
    /// The values readers refer to, by (name, version), with how many readers refer to each: a
    /// value leaves when no reader does.
    values: HashMap<Pair, Slot>,
    /// Per reader: the (name, version) values it refers to (the keys of `values`, shared).
    refs: HashMap<ReaderKey, HashSet<Pair>>,
    /// Per reader: the explicit names it checks.
    names: HashMap<ReaderKey, BTreeSet<String>>,
    /// Names whose values readers are waiting for.
    pending: BTreeSet<String>,
    /// Names never checked that readers holding no value yet read instead ([`View::first_read`]),
    /// and values such a read stored before their readers claimed them (with when: a reader
    /// that went away meanwhile never claims; [`View::refresh`] drops them).
    first_reads: BTreeSet<String>,
    unclaimed: Vec<(Pair, Instant)>,
    /// Names whose current version changed since it was last learnt, or whose check began or
    /// stopped failing, not yet reported.
    changed: BTreeSet<String>,
    /// Per reader: its refresh interval, and the listing filters it reads (discovery).
    intervals: HashMap<ReaderKey, Duration>,
    filters: HashMap<ReaderKey, BTreeSet<String>>,
    /// Listings whose members changed (a secret came or went), or whose refresh began or
    /// stopped failing, not yet reported.
    changed_filters: BTreeSet<String>,
    /// What the background refresh could not check, and why: its readers get the error (in
    /// their status) instead of versions that may be outdated.
    failing_names: HashMap<String, ResolveError>,
    failing_filters: HashMap<String, ResolveError>,
    /// Consecutive failed background refreshes, and when the next may run.
    failures: u32,
    next_try: Option<Instant>,
    /// Checking by name was refused (no `secretsmanager:ListSecrets`): explicit names are read
    /// directly, so their readers poll on their own interval.
    listing_denied: bool,
}

impl State {
    /// Adds to what a reader refers to.
    fn claim<'a>(&mut self, reader: &ReaderKey, keys: impl Iterator<Item = &'a (String, String)>) {
        let mine = self.refs.entry(reader.clone()).or_default();
        for k in keys {
            if mine.contains(k) {
                continue;
            }
            let pair = match self.values.get_key_value(k) {
                Some((pair, _)) => pair.clone(),
                None => Arc::new(k.clone()),
            };
            self.values.entry(pair.clone()).or_default().readers += 1;
            mine.insert(pair);
        }
    }

    /// Drops a reader's references; values no reader refers to any more leave.
    fn release(&mut self, reader: &ReaderKey, keep: &HashSet<(String, String)>) {
        let old = self.refs.remove(reader).unwrap_or_default();
        let mut kept = HashSet::new();
        for pair in old {
            if keep.contains(&*pair) {
                kept.insert(pair);
                continue;
            }
            if let Some(slot) = self.values.get_mut(&*pair) {
                slot.readers -= 1;
                if slot.readers == 0 {
                    self.values.remove(&*pair);
                }
            }
        }
        if !kept.is_empty() {
            self.refs.insert(reader.clone(), kept);
        }
    }

    /// The value of a pair, if it was read.
    fn value(&self, pair: &(String, String)) -> Option<&Fetched> {
        self.values.get(pair).and_then(|slot| slot.value.as_ref())
    }

    /// Records how a check of `names` ended: a failure that begins or ends is a change for
    /// their readers.
    fn record_names<'a>(
        &mut self,
        names: impl Iterator<Item = &'a String>,
        result: &Result<(), ResolveError>,
    ) {
        for n in names {
            let flipped = match result {
                Ok(()) => self.failing_names.remove(n).is_some(),
                Err(e) => self.failing_names.insert(n.clone(), e.clone()).is_none(),
            };
            if flipped {
                self.changed.insert(n.clone());
            }
        }
    }

    /// Records how a listing's refresh ended (see [`State::record_names`]).
    fn record_filter(&mut self, filter: &str, result: &Result<(), ResolveError>) {
        let flipped = match result {
            Ok(()) => self.failing_filters.remove(filter).is_some(),
            Err(e) => self
                .failing_filters
                .insert(filter.to_string(), e.clone())
                .is_none(),
        };
        if flipped {
            self.changed_filters.insert(filter.to_string());
        }
    }

    /// The recorded failure of any of `names`.
    fn failure_of(&self, names: &BTreeSet<String>) -> Option<ResolveError> {
        names
            .iter()
            .find_map(|n| self.failing_names.get(n))
            .cloned()
    }

    /// Records a name's current version, noting a change.
    fn learn_version(&mut self, name: &str, version: Option<String>, at: Instant) {
        if let Some((before, _)) = self.versions.get(name)
            && *before != version
        {
            self.changed.insert(name.to_string());
        }
        self.versions.insert(name.to_string(), (version, at));
    }
}

/// The names one check covers. A refresh (the reader knows every version) takes along every
/// registered name at least half its way to due, so that idle refreshes share one check per
/// interval. A first sync (some name never checked) takes only the names never checked, and
/// the reader's own that are half due: it must not wait for a re-check of everything known
/// (at 10,000 names, a listing of 100 pages).
fn due_names(s: &State, names: &BTreeSet<String>, max_age: Duration) -> BTreeSet<String> {
    let half_due = |n: &String| {
        s.versions
            .get(n)
            .is_none_or(|(_, at)| at.elapsed() >= max_age / 2)
    };
    let first_sync = names.iter().any(|n| !s.versions.contains_key(n));
    let registered = s.names.values().flatten();
    if first_sync {
        registered
            .filter(|n| !s.versions.contains_key(*n))
            .chain(names.iter().filter(|n| half_due(n)))
            .cloned()
            .collect()
    } else {
        registered.filter(|n| half_due(n)).cloned().collect()
    }
}

/// How often the controller runs the background refresh ([`View::refresh`]). A check is made
/// at the first run where what it refreshes is at least its interval less half a tick old, so
/// that it is never more than half a tick late.
pub const REFRESH_TICK: Duration = Duration::from_secs(1);

/// How long a value a first read stored for another reader waits for that reader to claim it
/// (it does as soon as it holds the read lock; a reader deleted meanwhile never does).
const UNCLAIMED_GRACE: Duration = Duration::from_secs(30);

/// Whether something learnt `age` ago is due for the background refresh on `interval`.
fn due(age: Duration, interval: Duration) -> bool {
    age + REFRESH_TICK / 2 >= interval
}

/// The interval of each registered name: the shortest of its readers'.
fn name_intervals(s: &State) -> HashMap<&str, Duration> {
    let mut out: HashMap<&str, Duration> = HashMap::new();
    for (reader, names) in &s.names {
        let Some(interval) = s.intervals.get(reader) else {
            continue;
        };
        for n in names {
            out.entry(n)
                .and_modify(|d| *d = (*d).min(*interval))
                .or_insert(*interval);
        }
    }
    out
}

/// The names the background refresh checks now: none unless a name checked before is due (its
/// version learnt at least its interval ago); then every checked name at least half its way to
/// due, so that one check per interval serves all. Names never checked are left to their first
/// sync.
fn refresh_names(s: &State) -> BTreeSet<String> {
    let intervals = name_intervals(s);
    let age = |n: &str| s.versions.get(n).map(|(_, at)| at.elapsed());
    let any_due = intervals
        .iter()
        .any(|(n, d)| age(n).is_some_and(|a| due(a, *d)));
    if !any_due {
        return BTreeSet::new();
    }
    intervals
        .iter()
        .filter(|(n, d)| age(n).is_some_and(|a| a >= **d / 2))
        .map(|(n, _)| n.to_string())
        .collect()
}

/// The listings the background refresh makes now: those listed at least the shortest interval
/// of their readers ago (a listing never made is left to its first reader).
fn refresh_filters(s: &State) -> Vec<String> {
    let mut intervals: HashMap<&str, Duration> = HashMap::new();
    for (reader, filters) in &s.filters {
        let Some(interval) = s.intervals.get(reader) else {
            continue;
        };
        for f in filters {
            intervals
                .entry(f)
                .and_modify(|d| *d = (*d).min(*interval))
                .or_insert(*interval);
        }
    }
    intervals
        .into_iter()
        .filter(|(f, d)| s.listings.get(*f).is_some_and(|l| due(l.at.elapsed(), *d)))
        .map(|(f, _)| f.to_string())
        .collect()
}

/// How long the background refresh waits after `failures` failed refreshes in a row: 1, 2, 4,
/// then 8 s (jittered), so that recovery is seen within seconds; 5 minutes when refused by
/// policy (that does not pass by itself).
fn retry_delay(failures: u32, denied: bool) -> Duration {
    if denied {
        return Duration::from_secs(300);
    }
    let base = Duration::from_secs(1 << failures.saturating_sub(1).min(3));
    base.mul_f64(0.75 + fastrand::f64() * 0.25)
}

/// The shared view of one source.
pub struct View {
    client: Client,
    value_bytes: prometheus_client::metrics::counter::Counter,
    limiter: TokenBucket,
    state: Mutex<State>,
    listing_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    check_lock: tokio::sync::Mutex<()>,
    first_sync_lock: tokio::sync::Mutex<()>,
    read_lock: tokio::sync::Mutex<()>,
    /// A background refresh keeps versions and listings fresh: readers are served what is
    /// known, whatever its age.
    background: AtomicBool,
}

impl View {
    pub fn new(
        client: Client,
        limiter: TokenBucket,
        value_bytes: prometheus_client::metrics::counter::Counter,
    ) -> View {
        View {
            client,
            value_bytes,
            limiter,
            state: Mutex::default(),
            listing_locks: Mutex::default(),
            check_lock: tokio::sync::Mutex::new(()),
            first_sync_lock: tokio::sync::Mutex::new(()),
            read_lock: tokio::sync::Mutex::new(()),
            background: AtomicBool::new(false),
        }
    }

    pub fn api<'a>(&'a self, calls: &'a Calls) -> Api<'a> {
        Api {
            client: &self.client,
            limiter: &self.limiter,
            calls,
            value_bytes: &self.value_bytes,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("view state")
    }

    /// The secrets whose names start with `filter`, listed at most `max_age` ago (or, under a
    /// background refresh, as last listed). `reader` reads the listing on its interval.
    pub async fn listing(
        &self,
        calls: &Calls,
        reader: Option<&ReaderKey>,
        filter: &str,
        max_age: Duration,
    ) -> Result<Arc<Vec<Listed>>, ResolveError> {
        if let Some(r) = reader {
            let mut s = self.state();
            s.filters
                .entry(r.clone())
                .or_default()
                .insert(filter.to_string());
            if let Some(e) = s.failing_filters.get(filter) {
                return Err(e.clone());
            }
        }
        if let Some(l) = self.fresh_listing(filter, self.served_age(max_age)) {
            return Ok(l);
        }
        self.relist(calls, filter, max_age).await
    }

    /// Lists `filter` unless a listing at most `max_age` old is there (single-flight).
    async fn relist(
        &self,
        calls: &Calls,
        filter: &str,
        max_age: Duration,
    ) -> Result<Arc<Vec<Listed>>, ResolveError> {
        let lock = self
            .listing_locks
            .lock()
            .expect("listing locks")
            .entry(filter.to_string())
            .or_default()
            .clone();
        let _flight = lock.lock().await;
        if let Some(l) = self.fresh_listing(filter, max_age) {
            return Ok(l);
        }
        let filter_values = if filter.is_empty() {
            vec![]
        } else {
            vec![filter.to_string()]
        };
        let listed = Arc::new(self.api(calls).list(&filter_values).await?);
        self.learn(Some(filter), &listed);
        Ok(listed)
    }

    /// How old what a reader asking for `max_age` is served may be: anything known, when a
    /// background refresh keeps it fresh.
    fn served_age(&self, max_age: Duration) -> Duration {
        match self.background.load(Ordering::Relaxed) {
            true => Duration::MAX,
            false => max_age,
        }
    }

    fn fresh_listing(&self, filter: &str, max_age: Duration) -> Option<Arc<Vec<Listed>>> {
        let s = self.state();
        let l = s.listings.get(filter)?;
        (l.at.elapsed() <= max_age).then(|| l.secrets.clone())
    }

    /// Records what a listing showed: its versions, and (for a prefix listing) its size and the
    /// registered names under it that it did not show (they do not exist).
    fn learn(&self, prefix: Option<&str>, listed: &Arc<Vec<Listed>>) {
        let now = Instant::now();
        let mut s = self.state();
        for l in listed.iter() {
            s.learn_version(&l.name, l.current_version.clone(), now);
        }
        let Some(prefix) = prefix else { return };
        s.prefix_sizes.insert(prefix.to_string(), listed.len());
        let members = |l: &[Listed]| l.iter().map(|x| x.name.clone()).collect::<BTreeSet<_>>();
        if let Some(before) = s.listings.get(prefix)
            && members(&before.secrets) != members(listed)
        {
            s.changed_filters.insert(prefix.to_string());
        }
        s.listings.insert(
            prefix.to_string(),
            Listing {
                at: now,
                secrets: listed.clone(),
            },
        );
        let shown: HashSet<&str> = listed.iter().map(|l| l.name.as_str()).collect();
        let missing: Vec<String> = s
            .names
            .values()
            .flatten()
            .filter(|n| n.starts_with(prefix) && !shown.contains(n.as_str()))
            .cloned()
            .collect();
        for n in missing {
            s.learn_version(&n, None, now);
        }
    }

    /// The current version of each of `names` (None: no such secret), learnt at most `max_age`
    /// ago (or, under a background refresh, as last learnt). One check serves every reader:
    /// names of all readers that are due are checked together.
    ///
    /// A reader that holds no value yet (`reads_values`: it reads every value it locates) reads
    /// its names never checked instead ([`View::first_read`]).
    pub async fn versions(
        &self,
        calls: &Calls,
        reader: &ReaderKey,
        names: &BTreeSet<String>,
        max_age: Duration,
        reads_values: bool,
    ) -> Result<BTreeMap<String, Option<String>>, ResolveError> {
        {
            let mut s = self.state();
            s.names.insert(reader.clone(), names.clone());
            if let Some(e) = s.failure_of(names) {
                return Err(e);
            }
        }
        if let Some(v) = self.known_versions(names, self.served_age(max_age)) {
            return Ok(v);
        }
        if reads_values {
            self.first_read(calls, reader, names).await?;
            // What the read could not place (an error for that id) is checked as usual.
            if let Some(v) = self.known_versions(names, Duration::MAX) {
                return Ok(v);
            }
        }
        // First syncs check their new names among themselves: they never wait behind a
        // refresh's check of everything known (at 10,000 names, 100 pages).
        let first_sync = {
            let s = self.state();
            names.iter().any(|n| !s.versions.contains_key(n))
        };
        let _flight = if first_sync {
            self.first_sync_lock.lock().await
        } else if let Ok(g) = self.check_lock.try_lock() {
            g
        } else {
            // A check is under way (at scale it can take longer than an interval). A reader
            // that knows every version already is served what is known instead of holding a
            // reconcile slot while it waits: that check, or the next one, finds any change,
            // and the readers of a changed secret are woken then.
            match self.known_versions(names, Duration::MAX) {
                Some(v) => return Ok(v),
                None => self.check_lock.lock().await,
            }
        };
        if let Some(v) = self.known_versions(names, max_age) {
            return Ok(v);
        }
        // Waiting for the rate limit before taking the names: those registered meanwhile (by
        // readers now waiting for this lock) are checked in the same calls.
        self.limiter.ready().await;
        let due = due_names(&self.state(), names, max_age);
        tracing::debug!(names = due.len(), first_sync, "checking versions");
        self.check(calls, &due).await?;
        // The names are readable again: a failure the background refresh recorded ends.
        self.state().record_names(due.iter(), &Ok(()));
        let s = self.state();
        Ok(names
            .iter()
            .map(|n| (n.clone(), s.versions.get(n).and_then(|(v, _)| v.clone())))
            .collect())
    }

    /// Reads the values of `names` never checked: `BatchGetSecretValue` answers with the
    /// current version, so a reader that holds no value yet (a new binding) needs one call, not
    /// a version check and then a read. The names go with the other readers' value reads
    /// (whoever holds the read lock reads everything queued); the values are kept until the
    /// reader claims them ([`View::values`]).
    async fn first_read(
        &self,
        calls: &Calls,
        reader: &ReaderKey,
        names: &BTreeSet<String>,
    ) -> Result<(), ResolveError> {
        let unknown = |s: &State| -> BTreeSet<String> {
            names
                .iter()
                .filter(|n| !s.versions.contains_key(*n))
                .cloned()
                .collect()
        };
        {
            let mut s = self.state();
            let mine = unknown(&s);
            s.first_reads.extend(mine.iter().cloned());
            s.pending.extend(mine);
        }
        let _flight = self.read_lock.lock().await;
        self.limiter.ready().await;
        let still = unknown(&self.state());
        let result = match still.is_empty() {
            // Learnt meanwhile (another reader's read, a check or a listing): nothing to read.
            true => Ok(()),
            false => self
                .read_queued(calls, still.iter().cloned())
                .await
                .map(drop),
        };
        // The reader claims what it now knows at once (its values are not left to the grace
        // of unclaimed ones); its names leave the queues whatever happened (a failed read is
        // retried by its reconcile).
        let mut s = self.state();
        let known: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| Some((n.clone(), s.versions.get(n)?.0.clone()?)))
            .collect();
        s.claim(reader, known.iter());
        for n in names {
            s.first_reads.remove(n);
            s.pending.remove(n);
        }
        result
    }

    /// Reads `ids` and every name other readers queued (`pending`), in one batch read, and keeps
    /// what was read. The caller holds the read lock and has waited for the rate limit.
    async fn read_queued(
        &self,
        calls: &Calls,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<super::calls::Read, ResolveError> {
        let ids: Vec<String> = {
            let mut s = self.state();
            let mut all = std::mem::take(&mut s.pending);
            all.extend(ids);
            all.into_iter().collect()
        };
        tracing::debug!(ids = ids.len(), "reading values");
        let read = self.api(calls).batch_get(&ids).await?;
        self.keep_read(&read);
        Ok(read)
    }

    /// Drops values a first read stored that no reader claimed within `grace` (their reader
    /// went away before it could).
    fn drop_unclaimed(&self, grace: Duration) {
        let mut s = self.state();
        let now = Instant::now();
        let (old, young): (Vec<_>, Vec<_>) = std::mem::take(&mut s.unclaimed)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= grace);
        s.unclaimed = young;
        for (pair, _) in old {
            if s.values.get(&*pair).is_some_and(|slot| slot.readers == 0) {
                s.values.remove(&*pair);
            }
        }
    }

    /// Learns the current versions of `names`, each set the cheaper way ([`plan_checks`]).
    async fn check(&self, calls: &Calls, names: &BTreeSet<String>) -> Result<(), ResolveError> {
        let sizes = self.state().prefix_sizes.clone();
        let result = self.check_planned(calls, names, &sizes).await;
        let denied = matches!(result, Err(ResolveError::Denied { .. }));
        self.state().listing_denied = denied;
        result
    }

    async fn check_planned(
        &self,
        calls: &Calls,
        names: &BTreeSet<String>,
        sizes: &HashMap<String, usize>,
    ) -> Result<(), ResolveError> {
        for check in plan_checks(names, sizes) {
            match check {
                Check::Prefix(p, names) => {
                    // A prefix of unknown size is listed only as long as that stays cheaper
                    // than checking its names by name; then by name (and its size is known).
                    let cap = match sizes.contains_key(&p) {
                        true => usize::MAX,
                        false => names.len().div_ceil(FILTER_VALUES),
                    };
                    if !self.list_prefix(calls, &p, cap).await? {
                        for chunk in names.chunks(FILTER_VALUES) {
                            self.check_names(calls, chunk).await?;
                        }
                    }
                }
                Check::Names(chunk) => self.check_names(calls, &chunk).await?,
            }
        }
        Ok(())
    }

    /// The background refresh: checks the names and relists the listings that are due (see
    /// [`refresh_names`], [`refresh_filters`]). What fails is recorded for its readers and
    /// retried with backoff ([`retry_delay`]); its readers are told when it starts and stops
    /// failing ([`View::take_changed`], [`View::take_woken`]).
    pub async fn refresh(&self, calls: &Calls) {
        self.background.store(true, Ordering::Relaxed);
        self.drop_unclaimed(UNCLAIMED_GRACE);
        let (names, filters) = {
            let s = self.state();
            if s.next_try.is_some_and(|t| Instant::now() < t) {
                return;
            }
            (refresh_names(&s), refresh_filters(&s))
        };
        // The names and every listing at the same time: a hung endpoint costs one timeout,
        // not one per listing, before the readers hear of it.
        let check_names = async {
            if names.is_empty() {
                return None;
            }
            let _flight = self.check_lock.lock().await;
            let result = self.check(calls, &names).await;
            self.state().record_names(names.iter(), &result);
            result.err()
        };
        let relists = futures::future::join_all(filters.iter().map(|f| async move {
            let result = self.relist(calls, f, Duration::ZERO).await.map(|_| ());
            self.state().record_filter(f, &result);
            result.err()
        }));
        let (failed_names, failed_lists) = futures::join!(check_names, relists);
        let failed = failed_names.or(failed_lists.into_iter().flatten().next());
        let mut s = self.state();
        match failed {
            None => {
                s.failures = 0;
                s.next_try = None;
            }
            Some(e) => {
                s.failures += 1;
                let denied = matches!(e, ResolveError::Denied { .. });
                s.next_try = Some(Instant::now() + retry_delay(s.failures, denied));
            }
        }
    }

    /// Whether checking by name was refused at the last check: explicit names are then read
    /// directly, and their readers poll on their own interval.
    pub fn listing_denied(&self) -> bool {
        self.state().listing_denied
    }

    /// Registers a reader's refresh interval (the background refresh keeps what it reads at
    /// most that old).
    pub fn set_interval(&self, reader: &ReaderKey, interval: Duration) {
        self.state().intervals.insert(reader.clone(), interval);
    }

    /// Lists a prefix for a version check, in at most `max_pages` pages: false (and the prefix
    /// remembered as larger than that) when it holds more.
    async fn list_prefix(
        &self,
        calls: &Calls,
        prefix: &str,
        max_pages: usize,
    ) -> Result<bool, ResolveError> {
        let filter = [prefix.to_string()];
        match self.api(calls).list_upto(&filter, max_pages).await? {
            Some(listed) => {
                self.learn(Some(prefix), &Arc::new(listed));
                Ok(true)
            }
            None => {
                let at_least = max_pages.saturating_mul(LIST_PAGE as usize) + 1;
                self.state()
                    .prefix_sizes
                    .insert(prefix.to_string(), at_least);
                Ok(false)
            }
        }
    }

    /// Checks up to 10 names with one listing by name (prefix matches, kept when exact).
    async fn check_names(&self, calls: &Calls, chunk: &[String]) -> Result<(), ResolveError> {
        let listed = self.api(calls).list(chunk).await?;
        let now = Instant::now();
        let mut s = self.state();
        for n in chunk {
            let v = listed
                .iter()
                .find(|l| &l.name == n)
                .and_then(|l| l.current_version.clone());
            s.learn_version(n, v, now);
        }
        Ok(())
    }

    /// Registers the explicit names a reader checks (see [`View::versions`]).
    pub fn register(&self, reader: &ReaderKey, names: BTreeSet<String>) {
        self.state().names.insert(reader.clone(), names);
    }

    fn known_versions(
        &self,
        names: &BTreeSet<String>,
        max_age: Duration,
    ) -> Option<BTreeMap<String, Option<String>>> {
        let s = self.state();
        names
            .iter()
            .map(|n| {
                let (v, at) = s.versions.get(n)?;
                (at.elapsed() <= max_age).then(|| (n.clone(), v.clone()))
            })
            .collect()
    }

    /// The values of (name, version) pairs, read once for all readers (by name, in batches of 20,
    /// only those not held yet), keyed by the pairs the cache holds (not copies).
    pub async fn values(
        &self,
        calls: &Calls,
        reader: &ReaderKey,
        wanted: &BTreeSet<(String, String)>,
    ) -> Result<HashMap<Pair, Fetched>, ResolveError> {
        // Claimed before reading, so that another reader's cleanup cannot drop them meanwhile.
        self.state().claim(reader, wanted.iter());
        let missing = |s: &State| -> Vec<String> {
            wanted
                .iter()
                .filter(|k| s.value(k).is_none())
                .map(|(n, _)| n.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut read = super::calls::Read::new();
        let mine = missing(&self.state());
        if !mine.is_empty() {
            // Readers that need values at the same time are served by one read: each queues
            // what it misses, and whoever holds the read lock reads everything queued.
            self.state().pending.extend(mine);
            let _flight = self.read_lock.lock().await;
            // As for version checks: what queues while the rate limit holds this read back
            // goes in the same read.
            self.limiter.ready().await;
            let still = missing(&self.state());
            if !still.is_empty() {
                read = self.read_queued(calls, still).await?;
            }
        }
        let s = self.state();
        Ok(wanted
            .iter()
            .map(|k| {
                // Rotated between the listing and the read: the newer value is served.
                let v = s
                    .value(k)
                    .cloned()
                    .or_else(|| read.get(&k.0).map(|(_, f)| f.clone()))
                    .unwrap_or_else(|| {
                        Fetched::Problem(
                            crate::api::EntryState::Error,
                            "the value was not returned; it is read again at the next refresh"
                                .into(),
                        )
                    });
                let pair = s
                    .values
                    .get_key_value(k)
                    .map(|(pair, _)| pair.clone())
                    .unwrap_or_else(|| Arc::new(k.clone()));
                (pair, v)
            })
            .collect())
    }

    /// Learns the versions a read returned, and keeps the values some reader has claimed.
    pub fn keep_read(&self, read: &super::calls::Read) {
        let now = Instant::now();
        let mut s = self.state();
        for (id, (version, fetched)) in read {
            let first = s.first_reads.remove(id);
            // Without a version (an error for that id) nothing is learnt: a check decides
            // whether the secret exists.
            let Some(v) = version else { continue };
            let key = (id.clone(), v.clone());
            if let Some(slot) = s.values.get_mut(&key) {
                slot.value = Some(fetched.clone());
            } else if first {
                let pair = Arc::new(key);
                let value = Some(fetched.clone());
                s.values.insert(pair.clone(), Slot { readers: 0, value });
                s.unclaimed.push((pair, now));
            }
            s.learn_version(id, Some(v.clone()), now);
        }
    }

    /// Records what a reader refers to now and drops values no reader refers to.
    pub fn set_refs(&self, reader: &ReaderKey, refs: HashSet<(String, String)>) {
        let mut s = self.state();
        s.release(reader, &refs);
        s.claim(reader, refs.iter());
    }

    /// Forgets a reader (its binding was deleted): its values and the versions only it needed.
    /// Whether the reader reads through this view (names, listings or values).
    pub fn knows(&self, reader: &ReaderKey) -> bool {
        let s = self.state();
        s.names.contains_key(reader)
            || s.refs.contains_key(reader)
            || s.intervals.contains_key(reader)
            || s.filters.contains_key(reader)
    }

    pub fn forget(&self, reader: &ReaderKey) {
        let mut s = self.state();
        s.release(reader, &HashSet::new());
        s.names.remove(reader);
        s.intervals.remove(reader);
        if let Some(gone) = s.filters.remove(reader) {
            let used: HashSet<&String> = s.filters.values().flatten().collect();
            let unused: Vec<String> = gone.into_iter().filter(|f| !used.contains(f)).collect();
            for f in unused {
                s.listings.remove(&f);
                s.failing_filters.remove(&f);
            }
        }
        let names: BTreeSet<String> = s.names.values().flatten().cloned().collect();
        // Listings made to check names (not a reader's discovery) go with the last name under
        // them.
        let used: HashSet<String> = s.filters.values().flatten().cloned().collect();
        let needed = |prefix: &String| {
            used.contains(prefix)
                || names
                    .range(prefix.clone()..)
                    .next()
                    .is_some_and(|n| n.starts_with(prefix.as_str()))
        };
        s.listings.retain(|prefix, _| needed(prefix));
        s.prefix_sizes.retain(|prefix, _| needed(prefix));
        let listed: HashSet<String> = s
            .listings
            .values()
            .flat_map(|l| l.secrets.iter().map(|x| x.name.clone()))
            .collect();
        s.versions
            .retain(|n, _| names.contains(n) || listed.contains(n));
        s.failing_names.retain(|n, _| names.contains(n));
    }

    /// Records what a direct check (an event's) found, so that readers see it without waiting
    /// for a listing (which may lag by minutes): the current version under each id in
    /// `aliases` (noting a change), and each cached listing that covers one of `names` gains,
    /// updates or loses it. Returns whether a listing gained or lost a secret.
    pub fn apply_described(
        &self,
        current: Option<&str>,
        aliases: &[String],
        names: &[String],
    ) -> bool {
        let now = Instant::now();
        let mut s = self.state();
        for a in aliases {
            s.learn_version(a, current.map(str::to_string), now);
        }
        let mut membership = false;
        for (filter, listing) in s.listings.iter_mut() {
            for n in names.iter().filter(|n| n.starts_with(filter.as_str())) {
                let pos = listing.secrets.iter().position(|l| &l.name == n);
                let secrets = Arc::make_mut(&mut listing.secrets);
                match (pos, current) {
                    (Some(i), Some(v)) => secrets[i].current_version = Some(v.to_string()),
                    (Some(i), None) => {
                        secrets.remove(i);
                        membership = true;
                    }
                    (None, Some(v)) => {
                        secrets.push(Listed {
                            name: n.clone(),
                            current_version: Some(v.to_string()),
                        });
                        membership = true;
                    }
                    (None, None) => {}
                }
            }
        }
        membership
    }

    /// Names whose version changed since the last call (a listing or check found it), or whose
    /// check began or stopped failing.
    pub fn take_changed(&self) -> BTreeSet<String> {
        std::mem::take(&mut self.state().changed)
    }

    /// Readers of the listings whose members changed since the last call, or whose refresh
    /// began or stopped failing.
    pub fn take_woken(&self) -> BTreeSet<ReaderKey> {
        let mut s = self.state();
        let filters = std::mem::take(&mut s.changed_filters);
        if filters.is_empty() {
            return BTreeSet::new();
        }
        s.filters
            .iter()
            .filter(|(_, fs)| fs.iter().any(|f| filters.contains(f)))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Sizes of the caches: (listings, versions, values).
    pub fn sizes(&self) -> (usize, usize, usize) {
        let s = self.state();
        let values = s.values.values().filter(|v| v.value.is_some()).count();
        (s.listings.len(), s.versions.len(), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[String]) -> BTreeSet<String> {
        names.iter().cloned().collect()
    }

    fn reader(name: &str) -> ReaderKey {
        ("ns".into(), name.into())
    }

    /// A view whose client is never called.
    fn offline_view() -> View {
        let conf = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .build();
        View::new(
            Client::from_conf(conf),
            TokenBucket::new(super::super::RateLimit::default(), Default::default()),
            Default::default(),
        )
    }

    #[test]
    fn the_background_refresh_checks_due_names_with_their_half_due_companions() {
        let mut s = State::default();
        let now = Instant::now();
        let aged = |secs| (Some("v".to_string()), now - Duration::from_secs(secs));
        for (name, interval) in [("a", 20), ("b", 20), ("c", 20), ("d", 60)] {
            s.intervals
                .insert(reader(name), Duration::from_secs(interval));
            s.names.insert(reader(name), set(&[format!("p/{name}")]));
        }
        // A second reader of p/d with a shorter interval: p/d is due on that one.
        s.intervals.insert(reader("d2"), Duration::from_secs(20));
        s.names.insert(reader("d2"), set(&["p/d".to_string()]));
        s.versions.insert("p/a".into(), aged(15));
        s.versions.insert("p/b".into(), aged(5));
        s.versions.insert("p/d".into(), aged(12));
        // p/c was never checked: its first sync does that. Nothing is due yet.
        assert!(refresh_names(&s).is_empty());
        s.versions.insert("p/a".into(), aged(21));
        // p/a is due; p/d (12 s of 20) comes along; p/b (5 s) and p/c (never) do not.
        assert_eq!(
            refresh_names(&s),
            set(&["p/a".to_string(), "p/d".to_string()])
        );
    }

    #[test]
    fn a_listing_is_due_on_its_shortest_readers_interval() {
        let mut s = State::default();
        let now = Instant::now();
        let listing = |secs| Listing {
            at: now - Duration::from_secs(secs),
            secrets: Arc::new(vec![]),
        };
        s.intervals.insert(reader("slow"), Duration::from_secs(60));
        s.intervals.insert(reader("fast"), Duration::from_secs(20));
        s.filters
            .insert(reader("slow"), set(&["x/".to_string(), "y/".to_string()]));
        s.filters.insert(reader("fast"), set(&["y/".to_string()]));
        s.filters.insert(reader("new"), set(&["z/".to_string()]));
        s.listings.insert("x/".into(), listing(30));
        s.listings.insert("y/".into(), listing(30));
        // x/ waits for its only reader's 60 s; z/ has never been listed (its reader lists it).
        assert_eq!(refresh_filters(&s), ["y/".to_string()]);
    }

    #[test]
    fn a_failure_is_a_change_when_it_begins_and_when_it_ends() {
        let mut s = State::default();
        let names = set(&["a".to_string(), "b".to_string()]);
        let err = Err(ResolveError::Call {
            operation: "ListSecrets",
            message: "timeout".into(),
        });
        s.record_names(names.iter(), &err);
        assert_eq!(std::mem::take(&mut s.changed), names);
        assert!(s.failure_of(&set(&["b".to_string()])).is_some());
        s.record_names(names.iter(), &err);
        assert!(s.changed.is_empty(), "still failing is no news");
        s.record_names(names.iter(), &Ok(()));
        assert_eq!(std::mem::take(&mut s.changed), names);
        assert!(s.failure_of(&names).is_none());
        s.record_filter("p/", &err);
        s.record_filter("p/", &Ok(()));
        assert_eq!(s.changed_filters, set(&["p/".to_string()]));
    }

    #[test]
    fn a_value_is_kept_once_while_any_reader_refers_to_it() {
        let mut s = State::default();
        let pair = ("p/a".to_string(), "v1".to_string());
        s.claim(&reader("a"), [&pair].into_iter());
        s.claim(&reader("b"), [&pair].into_iter());
        s.claim(&reader("b"), [&pair].into_iter());
        assert!(s.value(&pair).is_none(), "claimed, not read yet");
        s.values.get_mut(&pair).unwrap().value = Some(Fetched::Value("x".into()));
        // One copy of the pair, shared by the cache and both readers.
        assert_eq!(s.values.len(), 1);
        assert_eq!(s.values[&pair].readers, 2);
        let shared = s.values.keys().next().unwrap().clone();
        assert!(s.refs.values().flatten().all(|p| Arc::ptr_eq(p, &shared)));
        // A reader that keeps it keeps it; the value leaves with its last reader.
        s.release(&reader("a"), &HashSet::from([pair.clone()]));
        assert_eq!(s.values[&pair].readers, 2);
        s.release(&reader("a"), &HashSet::new());
        assert_eq!(s.value(&pair), Some(&Fetched::Value("x".into())));
        s.release(&reader("b"), &HashSet::new());
        assert!(s.values.is_empty() && s.refs.is_empty());
    }

    #[test]
    fn retries_after_failures_stay_within_seconds_unless_refused() {
        assert!(retry_delay(1, false) <= Duration::from_secs(1));
        assert!(retry_delay(3, false) >= Duration::from_secs(3));
        assert!(retry_delay(30, false) <= Duration::from_secs(8));
        assert_eq!(retry_delay(1, true), Duration::from_secs(300));
    }

    #[test]
    fn readers_of_a_listing_are_woken_when_its_members_change() {
        let view = offline_view();
        {
            let mut s = view.state();
            s.filters.insert(reader("a"), set(&["p/".to_string()]));
            s.filters.insert(reader("b"), set(&["q/".to_string()]));
        }
        let listed = |names: &[&str]| {
            Arc::new(
                names
                    .iter()
                    .map(|n| Listed {
                        name: n.to_string(),
                        current_version: Some("v1".into()),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        view.learn(Some("p/"), &listed(&["p/x"]));
        assert!(view.take_woken().is_empty(), "a first listing is no change");
        view.learn(Some("p/"), &listed(&["p/x"]));
        assert!(view.take_woken().is_empty());
        view.learn(Some("p/"), &listed(&["p/x", "p/y"]));
        assert_eq!(view.take_woken(), BTreeSet::from([reader("a")]));
        assert!(view.take_woken().is_empty());
    }

    #[test]
    fn values_a_first_read_stored_leave_unless_claimed() {
        let view = offline_view();
        view.state().first_reads = set(&["a".to_string(), "b".to_string(), "c".to_string()]);
        let value = |v: &str| (Some(v.to_string()), Fetched::Value(format!("value-{v}")));
        let missing = (
            None,
            super::super::calls::problem("ResourceNotFoundException"),
        );
        let read = BTreeMap::from([
            ("a".to_string(), value("1")),
            ("b".to_string(), value("2")),
            ("c".to_string(), missing),
        ]);
        view.keep_read(&read);
        assert_eq!(view.sizes().2, 2, "both values kept for their readers");
        assert_eq!(
            view.known_versions(&set(&["a".into()]), Duration::MAX),
            Some(BTreeMap::from([("a".into(), Some("1".into()))])),
            "the read taught the version"
        );
        assert_eq!(
            view.known_versions(&set(&["c".into()]), Duration::MAX),
            None,
            "an error for an id teaches nothing: a check decides"
        );
        view.state()
            .claim(&reader("x"), [("a".to_string(), "1".to_string())].iter());
        view.drop_unclaimed(Duration::ZERO);
        assert_eq!(
            view.sizes().2,
            1,
            "the unclaimed value left, the claimed one stays"
        );
        assert!(view.state().first_reads.is_empty());
        view.forget(&reader("x"));
        assert_eq!(view.sizes().2, 0);
    }

    #[test]
    fn a_first_sync_checks_only_what_was_never_checked() {
        let mut s = State::default();
        let now = Instant::now();
        let old = now - Duration::from_secs(15);
        for i in 0..100 {
            let n = format!("p/known{i}");
            s.versions.insert(n.clone(), (Some("v".into()), old));
            s.names.insert(("ns".into(), format!("b{i}")), set(&[n]));
        }
        s.names
            .insert(("ns".into(), "new".into()), set(&["p/new".to_string()]));
        let max_age = Duration::from_secs(20);
        // The new binding's check: its own name only, not the 100 half-due ones.
        assert_eq!(
            due_names(&s, &set(&["p/new".to_string()]), max_age),
            set(&["p/new".to_string()])
        );
        // A refresh takes every half-due name along (and the one never checked).
        assert_eq!(
            due_names(&s, &set(&["p/known0".to_string()]), max_age).len(),
            101
        );
    }

    #[test]
    fn checks_pick_the_cheaper_way() {
        let thousand: Vec<String> = (0..1000)
            .map(|i| format!("bench/connections/c{i:05}"))
            .collect();
        // Never listed: many names under one prefix are checked by listing it.
        assert_eq!(
            plan_checks(&set(&thousand), &HashMap::new()),
            [Check::Prefix("bench/connections/".into(), thousand.clone())]
        );
        // The prefix turned out to hold 10,000 others: by name is cheaper (100 < 110 calls).
        let sizes = HashMap::from([("bench/connections/".to_string(), 11_000)]);
        let checks = plan_checks(&set(&thousand), &sizes);
        assert_eq!(checks.len(), 100);
        assert!(
            checks
                .iter()
                .all(|c| matches!(c, Check::Names(n) if n.len() == 10))
        );
        // A few names: by name; names without a prefix: always by name.
        let few = vec!["a/x".to_string(), "a/y".to_string(), "plain".to_string()];
        assert_eq!(
            plan_checks(&set(&few), &HashMap::new()),
            [
                Check::Names(vec!["plain".into()]),
                Check::Names(vec!["a/x".into(), "a/y".into()])
            ]
        );
    }
}
