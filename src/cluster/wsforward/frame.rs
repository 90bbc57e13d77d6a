//! The frames of `v4.channel.k8s.io` from the server: decoding, port headers, error text, and
//! routing to the pairs.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, watch};

use super::stream::{Shared, EVICTED, UNCLAIMED};
use super::UNCLAIMED_LIMIT;

/// The channel of v5's close signal.
const CLOSE_SIGNAL: u8 = 255;

/// The socket task's side of a pair.
pub(super) struct Pair {
    pub(super) port: u16,
    /// `None` once the pair is done (error, eviction, reader gone).
    pub(super) data: Option<mpsc::Sender<Bytes>>,
    pub(super) error: watch::Sender<Option<String>>,
    pub(super) shared: Arc<Shared>,
    /// Port headers seen on the data and the error channel.
    pub(super) headers_seen: [bool; 2],
    pub(super) unclaimed_bytes: usize,
}

/// Splits a frame into its channel and payload.
fn decode(mut frame: Bytes) -> Option<(u8, Bytes)> {
    if frame.is_empty() {
        return None;
    }
    let channel = frame.get_u8();
    Some((channel, frame))
}

/// Takes the port header off the first frame of a channel.
fn port_header(payload: &mut Bytes, expected: u16) -> Result<(), String> {
    if payload.len() < 2 {
        return Err(format!(
            "port-forward protocol error: port header of {} bytes",
            payload.len()
        ));
    }
    let port = payload.get_u16_le();
    if port != expected {
        return Err(format!(
            "port-forward protocol error: port {port} announced, {expected} asked"
        ));
    }
    Ok(())
}

/// Routes one frame from the server; returns a frame to hold back when its pair is full.
pub(super) fn route(pairs: &mut [Pair], frame: Bytes) -> Result<Option<(usize, Bytes)>, String> {
    let Some((channel, mut payload)) = decode(frame) else {
        return Ok(None);
    };
    if channel == CLOSE_SIGNAL {
        // v5's `[255][channel]` (kube offers v5 too): the server closed that channel.
        let closed = payload.first().map(|&ch| usize::from(ch / 2));
        if let Some(pair) = closed.and_then(|i| pairs.get_mut(i)) {
            pair.data = None;
        }
        return Ok(None);
    }
    let index = usize::from(channel / 2);
    let Some(pair) = pairs.get_mut(index) else {
        return Err(format!(
            "port-forward protocol error: frame on channel {channel}"
        ));
    };
    let kind = usize::from(channel % 2);
    if !pair.headers_seen[kind] {
        pair.headers_seen[kind] = true;
        port_header(&mut payload, pair.port)?;
    }
    if payload.is_empty() {
        return Ok(None);
    }
    if kind == 1 {
        // The kubelet's error for this pair (e.g. connection refused in the pod); the pair is
        // done. The error is set before the data queue closes, so readers see it.
        let text = String::from_utf8_lossy(&payload).trim().to_string();
        pair.error.send_replace(Some(text));
        pair.data = None;
        return Ok(None);
    }
    Ok(deliver(pair, payload).map(|frame| (index, frame)))
}

/// Queues pod data for a pair; returns it back when a claimed pair's queue is full.
fn deliver(pair: &mut Pair, payload: Bytes) -> Option<Bytes> {
    let tx = pair.data.as_ref()?;
    let len = payload.len();
    let over = match tx.try_send(payload) {
        Ok(()) if pair.shared.claim.load(Ordering::Acquire) == UNCLAIMED => {
            pair.unclaimed_bytes += len;
            pair.unclaimed_bytes > UNCLAIMED_LIMIT
        }
        Ok(()) => false,
        Err(mpsc::error::TrySendError::Full(payload)) => {
            if !pair.evict() {
                return Some(payload);
            }
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            pair.data = None;
            false
        }
    };
    if over {
        pair.evict();
    }
    None
}

impl Pair {
    /// Ends a pair nobody has claimed; `false` if it is claimed (then it is kept).
    fn evict(&mut self) -> bool {
        let claim = &self.shared.claim;
        let evicted = claim
            .compare_exchange(UNCLAIMED, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            self.data = None;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_splits_channel_and_payload() {
        let (channel, payload) = decode(Bytes::from_static(&[3, b'h', b'i'])).unwrap();
        assert_eq!((channel, &payload[..]), (3, &b"hi"[..]));
        assert!(decode(Bytes::new()).is_none());
    }

    #[test]
    fn port_header_is_u16_little_endian_and_checked() {
        let mut payload = Bytes::from_static(&[0xeb, 0x18, b'x']);
        assert_eq!(port_header(&mut payload, 6379), Ok(()));
        assert_eq!(&payload[..], b"x", "the rest of the frame is data");
        let err = port_header(&mut Bytes::from_static(&[0xeb, 0x18]), 80).unwrap_err();
        assert!(err.contains("port 6379 announced, 80 asked"), "{err}");
        let err = port_header(&mut Bytes::from_static(&[0xeb]), 6379).unwrap_err();
        assert!(err.contains("port header of 1 bytes"), "{err}");
    }
}
