//! Watches: JSON lines `{"type":..., "object":...}` streamed from the store's event log, with
//! the API server's resourceVersion semantics (replay after a version, 410 Expired when it is
//! too old, initial events and the `k8s.io/initial-events-end` bookmark for streaming lists).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::cluster::Cluster;
use crate::kinds::Kind;
use crate::respond::{self, Body, Query};
use crate::selector::{FieldSelector, LabelSelector};

/// Watch length when the client names none; the API server picks 30–60 min.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Lines buffered towards a slow watcher.
const WATCH_BUFFER: usize = 256;

/// What a watch selects.
pub(crate) struct Filter {
    pub kind: Kind,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Send each object as a one-row Table (`kubectl get -w`).
    pub as_table: bool,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        let ns_ok = self
            .ns
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns));
        ns_ok && self.labels.matches_object(object) && self.fields.matches_object(object)
    }
}

fn line(kind: &str, object: &Value, table: Option<Kind>) -> Bytes {
    let object = match table {
        Some(k) => crate::table::render(k, std::slice::from_ref(object), None),
        None => object.clone(),
    };
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(kind: Kind, rv: u64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": kind.info().kind, "apiVersion": kind.api_version(), "metadata": meta})
}

/// Serves `?watch=true`.
pub(crate) fn serve(
    cluster: &Arc<Cluster>,
    filter: Filter,
    query: &Query,
) -> hyper::Response<Body> {
    let since = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => return respond::bad_request(&format!("invalid resource version: {rv}")),
        },
    };
    let send_initial = query.flag("sendInitialEvents");
    let since = if send_initial { None } else { since };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .number("timeoutSeconds")
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let subscription = cluster.store.subscribe(filter.kind, since);
    let shutdown = cluster.shutdown.clone();
    let table = filter.as_table.then_some(filter.kind);
    let task = async move {
        let (sub, current) = match subscription {
            Ok(s) => s,
            Err(compacted) => {
                let message = format!(
                    "too old resource version: {} ({compacted})",
                    since.unwrap_or(0)
                );
                let status = respond::status_object(410, "Expired", &message, None);
                let _ = tx.send(line("ERROR", &status, None)).await;
                return;
            }
        };
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let key_of = |o: &Value| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        };
        for object in current.iter().filter(|o| filter.matches(o)) {
            seen.insert(key_of(object));
            if tx.send(line("ADDED", object, table)).await.is_err() {
                return;
            }
        }
        if send_initial && bookmarks {
            let mark = bookmark(filter.kind, sub.rv, true);
            if tx.send(line("BOOKMARK", &mark, None)).await.is_err() {
                return;
            }
        }
        let mut last = since.unwrap_or(sub.rv);
        let mut rx = sub.rx;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut replay = sub.replay.into_iter();
        loop {
            let event = match replay.next() {
                Some(event) => event,
                None => tokio::select! {
                    event = rx.recv() => match event {
                        Ok(event) => event,
                        // A watcher that fell behind is ended; the client re-watches from its
                        // last version, as after any watch timeout.
                        Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = &mut deadline => return,
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                },
            };
            if event.rv <= last || event.key.kind != filter.kind {
                continue;
            }
            last = event.rv;
            let key = key_of(&event.object);
            let matches = filter.matches(&event.object);
            let kind = match (matches, seen.contains(&key)) {
                (true, _) => event.kind.as_str(),
                // Changed so that it no longer matches: gone, as far as this watch goes.
                (false, true) => "DELETED",
                (false, false) => continue,
            };
            if kind == "DELETED" {
                seen.remove(&key);
            } else {
                seen.insert(key);
            }
            if tx.send(line(kind, &event.object, table)).await.is_err() {
                return;
            }
        }
    };
    cluster.tasks.spawn(task);
    respond::stream(rx, "application/json")
}
