//! `pods/log`: the merged output of a container run, with `follow`, `container`, `previous`,
//! `tailLines`, `sinceSeconds` and `timestamps`, and the API server's errors word for word.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::logs::LogBuffer;
use crate::respond::{self, Body, Query};
use crate::store::Key;

/// Chunks buffered towards a slow log reader.
const LOG_BUFFER: usize = 64;

fn container_names(pod: &Value) -> Vec<String> {
    pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn render(lines: Vec<(Timestamp, Bytes)>, timestamps: bool) -> Bytes {
    let mut out = BytesMut::new();
    for (t, line) in lines {
        if timestamps {
            out.extend_from_slice(format!("{t:.9} ").as_bytes());
        }
        out.extend_from_slice(&line);
    }
    out.freeze()
}

/// Serves `GET .../pods/NAME/log` for a pod that exists (`pod` is its object).
pub(crate) fn serve(
    cluster: &Arc<Cluster>,
    key: &Key,
    pod: &Value,
    query: &Query,
) -> hyper::Response<Body> {
    let names = container_names(pod);
    let container = match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.iter().any(|n| n == c) => c.to_string(),
        Some(c) => {
            return respond::bad_request(&format!(
                "container {c} is not valid for pod {}",
                key.name
            ))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return respond::bad_request(&format!(
                "a container name must be specified for pod {}, choose one of: [{}]",
                key.name,
                names.join(" ")
            ))
        }
    };
    let runtime = cluster.pods.get(key);
    let logs = runtime
        .as_ref()
        .and_then(|rt| rt.logs(&container))
        .unwrap_or_default();
    let buffer: Arc<LogBuffer> = if query.flag("previous") {
        match logs.previous {
            Some(b) => b,
            None => {
                return respond::bad_request(&format!(
                    "previous terminated container \"{container}\" in pod \"{}\" not found",
                    key.name
                ))
            }
        }
    } else {
        match logs.current {
            Some(b) => b,
            None => {
                let reason = runtime
                    .and_then(|rt| rt.waiting_reason(&container))
                    .unwrap_or_else(|| "ContainerCreating".into());
                let reason = match reason.as_str() {
                    "ErrImagePull" => "image can't be pulled".into(),
                    "ImagePullBackOff" => "trying and failing to pull image".into(),
                    _ => reason,
                };
                return respond::bad_request(&format!(
                    "container \"{container}\" in pod \"{}\" is waiting to start: {reason}",
                    key.name
                ));
            }
        }
    };
    let mut start = 0;
    if let Some(secs) = query.number("sinceSeconds") {
        let since = Timestamp::now() - SignedDuration::from_secs(secs.max(0));
        start = buffer.since_start(since);
    }
    if let Some(n) = query.number("tailLines") {
        start = start.max(buffer.tail_start(u64::try_from(n).unwrap_or(0)));
    }
    let timestamps = query.flag("timestamps");
    let follow = query.flag("follow");
    let (tx, rx) = mpsc::channel(LOG_BUFFER);
    let shutdown = cluster.shutdown.clone();
    cluster.tasks.spawn(async move {
        let mut updates = buffer.subscribe();
        let mut next = start;
        loop {
            updates.borrow_and_update();
            let chunk = buffer.read_from(next);
            next = chunk.next;
            if !chunk.lines.is_empty() && tx.send(render(chunk.lines, timestamps)).await.is_err() {
                return;
            }
            if !follow || (chunk.closed && buffer.read_from(next).lines.is_empty()) {
                return;
            }
            tokio::select! {
                changed = updates.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            }
        }
    });
    respond::stream(rx, "text/plain")
}
