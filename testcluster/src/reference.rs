//! Image references as container runtimes read them: `redis:7-alpine` is
//! `docker.io/library/redis:7-alpine`, a name without tag or digest means `:latest`.

/// The parts of an image reference.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reference {
    /// `docker.io/library/redis`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// Splits `image` into repository, tag and digest, adding the registry (`docker.io`) and the
/// `library/` namespace as the runtime does for short names.
pub(crate) fn parse(image: &str) -> Reference {
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d.to_string())),
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_string()),
        ),
        None => (rest, None),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repository = if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    Reference {
        repository,
        tag,
        digest,
    }
}

impl Reference {
    /// The fully qualified reference, `:latest` added when there is neither tag nor digest.
    pub fn full(&self) -> String {
        let mut s = self.repository.clone();
        match (&self.tag, &self.digest) {
            (None, None) => s.push_str(":latest"),
            (tag, digest) => {
                if let Some(t) = tag {
                    s.push(':');
                    s.push_str(t);
                }
                if let Some(d) = digest {
                    s.push('@');
                    s.push_str(d);
                }
            }
        }
        s
    }

    /// The image id a runtime reports for it: `repository@sha256:...` (made up, but the same
    /// for the same reference).
    pub fn image_id(&self) -> String {
        if let Some(d) = &self.digest {
            return format!("{}@{d}", self.repository);
        }
        use std::hash::{Hash, Hasher};
        let hex: String = (0..4u8)
            .map(|seed| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (seed, self.full()).hash(&mut h);
                format!("{:016x}", h.finish())
            })
            .collect();
        format!("{}@sha256:{hex}", self.repository)
    }
}

/// The image as the kubelet names it in messages: `:latest` appended when untagged.
pub(crate) fn with_default_tag(image: &str) -> String {
    let r = parse(image);
    if r.tag.is_none() && r.digest.is_none() {
        format!("{image}:latest")
    } else {
        image.to_string()
    }
}

/// The pull policy the API server defaults to: `Always` for `:latest` (or no tag),
/// `IfNotPresent` otherwise.
pub(crate) fn default_pull_policy(image: &str) -> &'static str {
    let r = parse(image);
    let latest = match (&r.tag, &r.digest) {
        (Some(t), _) => t == "latest",
        (None, None) => true,
        (None, Some(_)) => false,
    };
    if latest {
        "Always"
    } else {
        "IfNotPresent"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_qualified_as_the_runtime_does() {
        assert_eq!(
            parse("redis:7-alpine").repository,
            "docker.io/library/redis"
        );
        assert_eq!(parse("me/app").repository, "docker.io/me/app");
        assert_eq!(parse("localhost:5000/app:1").tag.as_deref(), Some("1"));
        assert_eq!(default_pull_policy("redis"), "Always");
        assert_eq!(default_pull_policy("redis:latest"), "Always");
        assert_eq!(default_pull_policy("redis:7"), "IfNotPresent");
    }
}
