//! The one protobuf body clients send the test cluster: kubectl (from 1.33) posts its
//! SelfSubjectAccessReview (`kubectl auth can-i`) as `application/vnd.kubernetes.protobuf`.
//! This reads it into the JSON the review handler takes; the answer goes back as JSON, which
//! the client accepts too.

use serde_json::{json, Value};

/// `k8s\0`: the prefix of every Kubernetes protobuf body (a `runtime.Unknown` follows).
const MAGIC: &[u8] = b"k8s\0";

/// The content type of Kubernetes protobuf bodies.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Field number and value of each field of one message (length-delimited values as bytes,
/// varints skipped).
fn fields(mut buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            0 => {
                varint(&mut buf)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                if len > buf.len() {
                    return None;
                }
                let (value, rest) = buf.split_at(len);
                out.push((key >> 3, value));
                buf = rest;
            }
            _ => return None,
        }
    }
    Some(out)
}

fn field(message: &[u8], number: u64) -> Option<&[u8]> {
    fields(message)?
        .into_iter()
        .find(|(n, _)| *n == number)
        .map(|(_, v)| v)
}

fn text(message: &[u8], number: u64) -> String {
    field(message, number)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

/// A protobuf SelfSubjectAccessReview as its JSON form, or `None` if it is not one.
pub(crate) fn self_subject_access_review(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(MAGIC)?;
    let type_meta = field(unknown, 1)?;
    if text(type_meta, 2) != "SelfSubjectAccessReview" {
        return None;
    }
    let review = field(unknown, 2)?;
    let spec = field(review, 2).unwrap_or_default();
    let mut json_spec = json!({});
    if let Some(attrs) = field(spec, 1) {
        let names = [
            "namespace",
            "verb",
            "group",
            "version",
            "resource",
            "subresource",
            "name",
        ];
        let map: serde_json::Map<String, Value> = names
            .iter()
            .zip(1..)
            .map(|(name, n)| (name.to_string(), json!(text(attrs, n))))
            .filter(|(_, v)| v != "")
            .collect();
        json_spec["resourceAttributes"] = Value::Object(map);
    }
    if let Some(attrs) = field(spec, 2) {
        json_spec["nonResourceAttributes"] =
            json!({"path": text(attrs, 1), "verb": text(attrs, 2)});
    }
    Some(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": text(type_meta, 1),
        "metadata": {"creationTimestamp": null},
        "spec": json_spec,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(fields: &[(u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, value) in fields {
            out.push(n << 3 | 2);
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        out
    }

    #[test]
    fn reads_what_kubectl_auth_can_i_sends() {
        let attrs = message(&[(1, b"demo"), (2, b"create"), (5, b"pods")]);
        let spec = message(&[(1, &attrs)]);
        let review = message(&[(1, b""), (2, &spec)]);
        let type_meta = message(&[
            (1, b"authorization.k8s.io/v1"),
            (2, b"SelfSubjectAccessReview"),
        ]);
        let mut body = MAGIC.to_vec();
        body.extend(message(&[(1, &type_meta), (2, &review)]));
        let json = self_subject_access_review(&body).expect("a review");
        assert_eq!(
            json["spec"]["resourceAttributes"],
            json!({"namespace": "demo", "verb": "create", "resource": "pods"})
        );
        assert_eq!(json["apiVersion"], "authorization.k8s.io/v1");
        assert!(self_subject_access_review(b"{}").is_none());
    }
}
