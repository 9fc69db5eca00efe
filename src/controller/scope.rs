//! Which namespaces the operator watches, and the caches of a watch over several of them.
//!
//! A reflector store must not be fed by several watchers merged into one stream: each watcher's
//! (re)list (`Init`, `InitApply`…, `InitDone`) replaces the whole store, so after any of them
//! relists the store would hold that one namespace's objects only. [`reflect`] runs one watcher
//! per namespace into one store and gives each namespace's relist its own bookkeeping
//! ([`PerNamespace`]): the objects it lists are applied, and at its `InitDone` the objects of
//! that namespace it did not list are deleted; other namespaces' objects are never touched. The
//! store turns ready once every namespace has been listed.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use futures::stream::{BoxStream, StreamExt, select_all};
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{Lookup, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

/// The namespaces whose bindings, Deployments and managed Secrets the operator watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (cluster-wide rights).
    All,
    /// These namespaces only, sorted, without duplicates, never empty (rights in each).
    Namespaces(Vec<String>),
}

impl Scope {
    /// The scope of these namespace names (blank ones ignored); none at all: every namespace.
    pub fn new(namespaces: impl IntoIterator<Item = String>) -> Scope {
        let mut names: Vec<String> = namespaces
            .into_iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(names)
        }
    }

    /// Whether the operator watches `namespace`.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Namespaces(names) => names
                .binary_search_by(|n| n.as_str().cmp(namespace))
                .is_ok(),
        }
    }

    /// One API handle per watched namespace, or one for all namespaces.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match self {
            Scope::All => vec![Api::all(client.clone())],
            Scope::Namespaces(names) => names
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("<all>"),
            Scope::Namespaces(names) => f.write_str(&names.join(",")),
        }
    }
}

/// Shortest and longest wait before a watch is retried after an error.
pub const WATCH_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(800), Duration::from_secs(5));
/// Errors further apart than this start the backoff afresh.
const WATCH_BACKOFF_RESET: Duration = Duration::from_secs(30);

/// How a watch waits after an error before it is polled again (it then re-watches or re-lists).
///
/// Unlike kube's `default_backoff` (0.8 s doubling to 30 s, forgotten only after 2 minutes
/// without an error), the wait stops growing at 5 s, so that the caches catch up within seconds
/// of an API server coming back, and a watch that expired (410 Gone: the watcher re-lists next)
/// re-lists at once, unless it expired already in the last 30 s. A watch still makes at most one
/// request per 5 s while the API server is away.
pub trait BackoffErrors<T>: futures::Stream<Item = Result<T, watcher::Error>> + Sized {
    fn backoff_errors(self) -> BoxStream<'static, Result<T, watcher::Error>>
    where
        Self: Send + 'static,
        T: Send + 'static,
    {
        struct State<S> {
            stream: S,
            wait: Option<Duration>,
            next: Duration,
            last_error: Option<Instant>,
            last_gone: Option<Instant>,
        }
        let state = State {
            stream: self.boxed(),
            wait: None,
            next: WATCH_BACKOFF.0,
            last_error: None,
            last_gone: None,
        };
        futures::stream::unfold(state, |mut st| async move {
            if let Some(wait) = st.wait.take() {
                tokio::time::sleep(wait).await;
            }
            let item = st.stream.next().await?;
            if let Err(e) = &item {
                let now = Instant::now();
                let recent = |at: Option<Instant>| {
                    at.is_some_and(|at| now.duration_since(at) < WATCH_BACKOFF_RESET)
                };
                let gone = matches!(e, watcher::Error::WatchError(s) if s.code == 410);
                if gone && !recent(st.last_gone) {
                    st.last_gone = Some(now);
                } else {
                    if !recent(st.last_error) {
                        st.next = WATCH_BACKOFF.0;
                    }
                    st.last_error = Some(now);
                    st.wait = Some(st.next.mul_f64(0.5 + fastrand::f64() * 0.5));
                    st.next = (st.next * 2).min(WATCH_BACKOFF.1);
                }
            }
            Some((item, st))
        })
        .boxed()
    }
}

impl<T, S: futures::Stream<Item = Result<T, watcher::Error>>> BackoffErrors<T> for S {}

type Events<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Watches `K` in every namespace of `scope` (backed off, each object passed through `modify`)
/// and keeps `writer`'s store complete: the watcher's events, after they reached the store.
/// One namespace (or all) is one plain watcher; several are one watcher each, merged by
/// [`PerNamespace`].
pub fn reflect<K, F>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
    modify: F,
    writer: Writer<K>,
) -> Events<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Lookup<DynamicType = <K as Resource>::DynamicType>
        + Clone
        + fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    <K as Resource>::DynamicType: Default + Clone + Eq + std::hash::Hash,
    F: FnMut(&mut K) + Clone + Send + 'static,
{
    reflect_as::<K, K, F>(client, scope, config, modify, writer)
}

/// [`reflect`], with the objects decoded as `D` and turned into `K`: a `D` whose decoding
/// never fails (such as [`super::lenient::Lenient`]) keeps one object this version cannot read
/// from failing the list, and so the watch, of every other object.
pub fn reflect_as<D, K, F>(
    client: &Client,
    scope: &Scope,
    config: watcher::Config,
    modify: F,
    writer: Writer<K>,
) -> Events<K>
where
    D: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    <D as Resource>::DynamicType: Default,
    K: From<D>
        + Lookup<DynamicType = <K as Resource>::DynamicType>
        + Resource
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + 'static,
    <K as Resource>::DynamicType: Default + Clone + Eq + std::hash::Hash,
    F: FnMut(&mut K) + Clone + Send + 'static,
{
    let apis = scope.apis::<D>(client);
    let decoded =
        |api: Api<D>, config: watcher::Config| watcher(api, config).map_ok(convert::<D, K>);
    let Scope::Namespaces(names) = scope else {
        let api = apis.into_iter().next().expect("one API for all namespaces");
        return decoded(api, config)
            .backoff_errors()
            .modify(modify)
            .reflect(writer)
            .boxed();
    };
    if let [api] = &apis[..] {
        return decoded(api.clone(), config)
            .backoff_errors()
            .modify(modify)
            .reflect(writer)
            .boxed();
    }
    let tagged = apis.into_iter().enumerate().map(|(i, api)| {
        decoded(api, config.clone())
            .backoff_errors()
            .modify(modify.clone())
            .map(move |event| (i, event))
            .boxed()
    });
    let mut merge = PerNamespace::new(names.clone(), writer);
    select_all(tagged)
        .map(move |(i, event)| event.map(|e| merge.apply(i, e)))
        .boxed()
}

/// A watcher event of `D` as one of `K`.
fn convert<D, K: From<D>>(event: watcher::Event<D>) -> watcher::Event<K> {
    use watcher::Event;
    match event {
        Event::Apply(o) => Event::Apply(o.into()),
        Event::Delete(o) => Event::Delete(o.into()),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(o.into()),
        Event::InitDone => Event::InitDone,
    }
}

/// One store fed by one watcher per namespace: each namespace's relist replaces only that
/// namespace's objects. Plain data, no API calls.
pub struct PerNamespace<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    namespaces: Vec<String>,
    writer: Writer<K>,
    store: Store<K>,
    /// Per namespace: the names listed so far while a relist is under way.
    relisting: Vec<Option<HashSet<String>>>,
    /// Per namespace: whether its first listing is complete.
    listed: Vec<bool>,
    ready: bool,
}

impl<K> PerNamespace<K>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// `namespaces[i]` is what the watcher tagged `i` watches.
    pub fn new(namespaces: Vec<String>, writer: Writer<K>) -> Self {
        let n = namespaces.len();
        PerNamespace {
            store: writer.as_reader(),
            namespaces,
            writer,
            relisting: vec![None; n],
            listed: vec![false; n],
            ready: false,
        }
    }

    /// Applies one event of the watcher of namespace `i` to the store and hands it back.
    pub fn apply(&mut self, i: usize, event: watcher::Event<K>) -> watcher::Event<K> {
        use watcher::Event;
        match event {
            Event::Apply(_) | Event::Delete(_) => {
                self.writer.apply_watcher_event(&event);
                event
            }
            Event::Init => {
                self.relisting[i] = Some(HashSet::new());
                event
            }
            Event::InitApply(obj) => {
                if let Some(seen) = self.relisting[i].as_mut() {
                    seen.extend(Lookup::name(&obj).map(|n| n.into_owned()));
                }
                // Applied at once: the store stays complete for every other namespace.
                let applied = Event::Apply(obj);
                self.writer.apply_watcher_event(&applied);
                let Event::Apply(obj) = applied else {
                    unreachable!()
                };
                Event::InitApply(obj)
            }
            Event::InitDone => {
                // A watcher always starts a listing with Init; without one, nothing is known to
                // be gone.
                if let Some(seen) = self.relisting[i].take() {
                    let ns = self.namespaces[i].as_str();
                    for gone in self.store.state_filter(|o| {
                        Lookup::namespace(o).as_deref() == Some(ns)
                            && !Lookup::name(o).is_some_and(|n| seen.contains(n.as_ref()))
                    }) {
                        self.writer
                            .apply_watcher_event(&Event::Delete((*gone).clone()));
                    }
                }
                self.listed[i] = true;
                if !self.ready && self.listed.iter().all(|l| *l) {
                    self.mark_ready();
                }
                event
            }
        }
    }

    /// A writer's store turns ready at its first `InitDone`, which also replaces its content
    /// with what followed `Init`: so the complete content is listed into it once more (a
    /// one-time copy at start).
    fn mark_ready(&mut self) {
        use watcher::Event;
        let all = self.store.state();
        self.writer.apply_watcher_event(&Event::Init);
        for obj in all {
            self.writer
                .apply_watcher_event(&Event::InitApply((*obj).clone()));
        }
        self.writer.apply_watcher_event(&Event::InitDone);
        self.ready = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some(ns.into());
        c
    }

    fn content(store: &Store<ConfigMap>) -> Vec<String> {
        let mut v: Vec<String> = store
            .state()
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.metadata.namespace.as_ref().unwrap(),
                    c.name_any()
                )
            })
            .collect();
        v.sort();
        v
    }

    fn ready(store: &Store<ConfigMap>) -> bool {
        store.wait_until_ready().now_or_never().is_some()
    }

    fn list(m: &mut PerNamespace<ConfigMap>, i: usize, ns: &str, names: &[&str]) {
        m.apply(i, Event::Init);
        for n in names {
            m.apply(i, Event::InitApply(cm(ns, n)));
        }
        m.apply(i, Event::InitDone);
    }

    #[test]
    fn scope_of_names() {
        assert_eq!(Scope::new(Vec::<String>::new()), Scope::All);
        assert_eq!(Scope::new(["".to_string(), " ".into()]), Scope::All);
        let s = Scope::new(["b".to_string(), " a".into(), "b".into()]);
        assert_eq!(s, Scope::Namespaces(vec!["a".into(), "b".into()]));
        assert_eq!(s.to_string(), "a,b");
        assert_eq!(Scope::All.to_string(), "<all>");
    }

    #[test]
    fn ready_only_when_every_namespace_is_listed() {
        let (store, writer) = reflector::store();
        let mut m = PerNamespace::new(vec!["a".into(), "b".into()], writer);
        list(&mut m, 0, "a", &["x", "y"]);
        assert!(!ready(&store), "b is not listed yet");
        // Events of a listed namespace land while the other still lists.
        m.apply(1, Event::Init);
        m.apply(0, Event::Apply(cm("a", "w")));
        m.apply(1, Event::InitApply(cm("b", "z")));
        assert!(!ready(&store));
        m.apply(1, Event::InitDone);
        assert!(ready(&store));
        assert_eq!(content(&store), ["a/w", "a/x", "a/y", "b/z"]);
    }

    #[test]
    fn a_relist_replaces_only_its_own_namespace() {
        let (store, writer) = reflector::store();
        let mut m = PerNamespace::new(vec!["a".into(), "b".into()], writer);
        list(&mut m, 0, "a", &["x", "y"]);
        list(&mut m, 1, "b", &["x", "z"]);
        // a's watch restarts: y was deleted meanwhile, v created.
        list(&mut m, 0, "a", &["x", "v"]);
        assert_eq!(content(&store), ["a/v", "a/x", "b/x", "b/z"]);
        // b's relist finds nothing: only b empties.
        list(&mut m, 1, "b", &[]);
        assert_eq!(content(&store), ["a/v", "a/x"]);
        m.apply(0, Event::Delete(cm("a", "x")));
        m.apply(1, Event::Apply(cm("b", "q")));
        assert_eq!(content(&store), ["a/v", "b/q"]);
        assert!(ready(&store));
    }

    /// Why [`PerNamespace`] exists: the same events fed straight into one writer lose every
    /// namespace but the one that relisted last.
    #[test]
    fn a_plain_merge_would_lose_the_other_namespaces() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        for (ns, names) in [("a", ["x", "y"]), ("b", ["x", "z"])] {
            writer.apply_watcher_event(&Event::Init);
            for n in names {
                writer.apply_watcher_event(&Event::InitApply(cm(ns, n)));
            }
            writer.apply_watcher_event(&Event::InitDone);
        }
        assert_eq!(content(&store), ["b/x", "b/z"]);
    }
}
