//! The object store: every object as JSON, one global resourceVersion counter, and an event log
//! that watches replay from.
//!
//! Writes happen under one mutex and are broadcast while it is held, so a watcher that subscribes
//! under the same lock sees every later event exactly once. The lock is never held across `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use tokio::sync::{broadcast, Notify};

use crate::kinds::Kind;
use crate::names;

/// How many events the log keeps for watch replay; older resourceVersions get 410 Gone.
const EVENT_LOG_LEN: usize = 4096;
/// Buffer of the live event channel; a watcher that falls further behind is ended (and re-lists).
const EVENT_CHANNEL_LEN: usize = 4096;

/// Where an object lives: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub kind: Kind,
    pub ns: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, ns: &str, name: &str) -> Key {
        let ns = if kind.info().namespaced { ns } else { "" };
        Key {
            kind,
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object, with the object as it was after the change.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub key: Key,
    pub kind: EventType,
    pub object: Value,
}

/// Why a write was refused.
#[derive(Debug)]
pub(crate) enum WriteError {
    AlreadyExists,
    /// 400: the body is not an object of the kind.
    BadRequest(String),
    /// 422: the object is not valid.
    Invalid(crate::admission::Invalid),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::AlreadyExists => f.write_str("already exists"),
            WriteError::BadRequest(message) => f.write_str(message),
            WriteError::Invalid(invalid) => f.write_str(&invalid.message()),
        }
    }
}

/// A watch starting point: either replayed events, or the state of the store at a version.
pub(crate) struct Subscription {
    pub replay: Vec<Arc<Event>>,
    pub rx: broadcast::Receiver<Arc<Event>>,
    pub rv: u64,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
    /// The highest resourceVersion that fell out of the log.
    compacted: u64,
}

/// The shared object store.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    /// Woken on every write, for the workload controllers.
    pub changed: Notify,
}

/// A timestamp as Kubernetes writes it (`2024-01-02T03:04:05Z`).
pub(crate) fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

impl Store {
    pub fn new() -> Store {
        let (events, _) = broadcast::channel(EVENT_CHANNEL_LEN);
        Store {
            // Versions start at 1000; anything older predates the log and gets 410.
            inner: Mutex::new(Inner {
                rv: 1000,
                compacted: 1000,
                ..Inner::default()
            }),
            events,
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Objects of `kind`, in `ns` or everywhere, and the resourceVersion of the list.
    pub fn list(&self, kind: Kind, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.kind == kind && ns.is_none_or(|ns| k.ns == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    fn record(&self, inner: &mut Inner, key: Key, kind: EventType, object: Value) {
        let event = Arc::new(Event {
            rv: inner.rv,
            key,
            kind,
            object,
        });
        if inner.log.len() >= EVENT_LOG_LEN {
            if let Some(old) = inner.log.pop_front() {
                inner.compacted = old.rv;
            }
        }
        inner.log.push_back(event.clone());
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
        self.changed.notify_waiters();
    }

    /// Stores a new object, filling in the metadata the API server owns.
    pub fn create(&self, kind: Kind, ns: &str, mut object: Value) -> Result<Value, WriteError> {
        let info = kind.info();
        let meta = object
            .as_object_mut()
            .ok_or_else(|| WriteError::BadRequest("object is not a JSON map".into()))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let meta = meta
            .as_object_mut()
            .ok_or_else(|| WriteError::BadRequest("metadata is not a map".into()))?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{}", names::suffix(5)),
                None => {
                    return Err(WriteError::Invalid(crate::admission::Invalid {
                        kind,
                        name: String::new(),
                        causes: vec![crate::admission::Cause::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    }))
                }
            },
        };
        let key = Key::new(kind, ns, &name);
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(WriteError::AlreadyExists);
        }
        inner.rv += 1;
        meta.insert("name".into(), json!(name));
        if info.namespaced {
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(names::uid()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.insert("resourceVersion".into(), json!(inner.rv.to_string()));
        if matches!(
            kind,
            Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet
        ) {
            meta.insert("generation".into(), json!(1));
        }
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(info.kind);
        inner.objects.insert(key.clone(), object.clone());
        self.record(&mut inner, key, EventType::Added, object.clone());
        Ok(object)
    }

    /// Changes an object in place; records a MODIFIED event only when something changed.
    pub fn update(&self, key: &Key, change: impl FnOnce(&mut Value)) -> Option<Value> {
        let mut inner = self.lock();
        let old = inner.objects.get(key)?;
        let mut new = old.clone();
        change(&mut new);
        if &new == old {
            return Some(new);
        }
        inner.rv += 1;
        new["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        inner.objects.insert(key.clone(), new.clone());
        self.record(&mut inner, key.clone(), EventType::Modified, new.clone());
        Some(new)
    }

    /// Removes an object; the DELETED event carries it with a fresh resourceVersion.
    pub fn remove(&self, key: &Key) -> Option<Value> {
        let mut inner = self.lock();
        let mut old = inner.objects.remove(key)?;
        inner.rv += 1;
        old["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        self.record(&mut inner, key.clone(), EventType::Deleted, old.clone());
        Some(old)
    }

    /// Starts a watch of `kind` after resourceVersion `since`, or at the current state when
    /// `since` is `None` (the caller then sends the current objects as ADDED).
    /// Returns `Err(compacted)` when `since` is older than the log remembers.
    pub fn subscribe(
        &self,
        kind: Kind,
        since: Option<u64>,
    ) -> Result<(Subscription, Vec<Value>), u64> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        match since {
            Some(rv) => {
                if rv < inner.compacted {
                    return Err(inner.compacted);
                }
                let replay = inner
                    .log
                    .iter()
                    .filter(|e| e.rv > rv && e.key.kind == kind)
                    .cloned()
                    .collect();
                Ok((
                    Subscription {
                        replay,
                        rx,
                        rv: inner.rv,
                    },
                    Vec::new(),
                ))
            }
            None => {
                let current = inner
                    .objects
                    .iter()
                    .filter(|(k, _)| k.kind == kind)
                    .map(|(_, v)| v.clone())
                    .collect();
                Ok((
                    Subscription {
                        replay: Vec::new(),
                        rx,
                        rv: inner.rv,
                    },
                    current,
                ))
            }
        }
    }

    /// Every key of `kind`.
    pub fn keys(&self, kind: Kind) -> Vec<Key> {
        self.lock()
            .objects
            .keys()
            .filter(|k| k.kind == kind)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_remove_bump_the_version() {
        let store = Store::new();
        let pod = store
            .create(
                Kind::Pod,
                "default",
                json!({"metadata": {"generateName": "web-"}}),
            )
            .expect("create");
        let name = pod["metadata"]["name"].as_str().expect("name").to_string();
        assert!(name.starts_with("web-") && name.len() == 9);
        let key = Key::new(Kind::Pod, "default", &name);
        let rv1 = store.list(Kind::Pod, None).1;
        store.update(&key, |p| p["status"] = json!({"phase": "Running"}));
        let rv2 = store.list(Kind::Pod, None).1;
        assert_eq!(rv2, rv1 + 1);
        // An update that changes nothing records nothing.
        store.update(&key, |p| p["status"] = json!({"phase": "Running"}));
        assert_eq!(store.list(Kind::Pod, None).1, rv2);
        let (sub, _) = store
            .subscribe(Kind::Pod, Some(rv1 - 1))
            .expect("subscribe");
        assert_eq!(sub.replay.len(), 2);
        assert!(store.remove(&key).is_some());
        assert!(store.get(&key).is_none());
    }
}
