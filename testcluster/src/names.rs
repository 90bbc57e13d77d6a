//! Random names, uids and tokens, spelled the way Kubernetes spells them.

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        // The OS RNG failing is next to impossible; a time-seeded fallback keeps names unique.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    buf
}

/// A suffix like the one `generateName` and ReplicaSets append (`x7k2q`).
pub(crate) fn suffix(len: usize) -> String {
    random_bytes::<32>()
        .iter()
        .take(len)
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// A hash-like name part derived from `data` (the `pod-template-hash` of a Deployment).
pub(crate) fn stable_suffix(data: &str, len: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut hasher);
    let mut h = hasher.finish();
    (0..len)
        .map(|_| {
            let c = SUFFIX_ALPHABET[(h % SUFFIX_ALPHABET.len() as u64) as usize] as char;
            h /= SUFFIX_ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// A random UUID (version 4), as object uids are.
pub(crate) fn uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A bearer token: 32 random bytes as hex.
pub(crate) fn token() -> String {
    random_bytes::<32>()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_has_uuid_shape() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
    }

    #[test]
    fn suffixes_use_the_kubernetes_alphabet() {
        let s = suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|c| SUFFIX_ALPHABET.contains(&c)));
        assert_eq!(stable_suffix("x", 10), stable_suffix("x", 10));
    }
}
