//! The login host's podtun from the release archives, for when this podtun cannot run there
//! (another OS or architecture, or a build whose libc the login host does not have).
//!
//! A release is a folder holding `podtun-VERSION-TARGET.tar.gz` (with
//! `podtun-VERSION-TARGET/podtun` inside) and `SHA256SUMS` (`sha256sum`'s format): the
//! project's GitHub release of this version by default, or [`RELEASES_URL_ENV`] for a mirror
//! (`https://`, `http://`) or a local folder (`file://`). The archive is checked against
//! `SHA256SUMS` before anything is taken from it; the binary is kept in the laptop's cache
//! (a 0700 directory per version and target, with its checksum, checked again on every use).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tracing::{debug, info, warn};

use super::tar::{tar_file, MAX_BINARY};
use crate::proto::wire::VERSION;

/// Environment variable naming the folder releases are fetched from.
pub const RELEASES_URL_ENV: &str = "PODTUN_RELEASES_URL";

/// Testing knob: with `PODTUN_TEST_FOREIGN_BUILD=1` this podtun behaves as if it were built
/// for another OS than the login host's, so that it never uploads itself and takes the
/// release download path instead. Not meant for users.
pub const FOREIGN_BUILD_ENV: &str = "PODTUN_TEST_FOREIGN_BUILD";

/// Bound on what a download may weigh (a release archive is a few MiB).
const MAX_DOWNLOAD: usize = 256 << 20;
/// Bound on one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one whole download, redirects included.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Redirects followed at most (GitHub sends one, to its object store).
const MAX_REDIRECTS: usize = 10;

/// Whether [`FOREIGN_BUILD_ENV`] is set to `1`.
pub fn foreign_build() -> bool {
    std::env::var_os(FOREIGN_BUILD_ENV).is_some_and(|v| v == "1")
}

/// The release target of a machine whose `uname -sm` prints `uname`.
pub fn target_for(uname: &str) -> Option<&'static str> {
    let mut words = uname.split_whitespace();
    match (words.next(), words.next()) {
        (Some("Linux"), Some("x86_64" | "amd64")) => Some("x86_64-unknown-linux-gnu"),
        (Some("Linux"), Some("aarch64" | "arm64")) => Some("aarch64-unknown-linux-gnu"),
        _ => None,
    }
}

/// The folder releases come from, ending in `/`.
pub fn releases_url() -> String {
    let url = std::env::var(RELEASES_URL_ENV)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            format!("https://github.com/podtun/podtun/releases/download/v{VERSION}/")
        });
    if url.ends_with('/') {
        url
    } else {
        format!("{url}/")
    }
}

/// `podtun-VERSION-TARGET.tar.gz`.
pub fn archive_name(target: &str) -> String {
    format!("podtun-{VERSION}-{target}.tar.gz")
}

/// A podtun binary for the login host, checked against the release's checksum.
pub struct Build {
    /// The binary.
    pub bytes: Vec<u8>,
    /// Where it came from: the archive's URL or the cached file.
    pub from: String,
}

/// The release build of this version for `target`: from the laptop's cache when a checked
/// copy is there, else downloaded, checked and cached.
pub async fn agent_build(target: &str) -> anyhow::Result<Build> {
    let dir = cache_dir(target);
    if let Some(dir) = &dir {
        if let Some(bytes) = cached(dir) {
            let from = dir.join("podtun").display().to_string();
            debug!(%from, "release build from the laptop's cache");
            return Ok(Build { bytes, from });
        }
    }
    let base = releases_url();
    let name = archive_name(target);
    let sums_url = format!("{base}SHA256SUMS");
    let archive_url = format!("{base}{name}");
    info!(url = %archive_url, "downloading podtun for the login host");
    let sums = fetch(&sums_url)
        .await
        .with_context(|| format!("could not download {sums_url}"))?;
    let sums = String::from_utf8_lossy(&sums);
    let want = sum_for(&sums, &name).ok_or_else(|| anyhow!("{sums_url} lists no {name}"))?;
    let archive = fetch(&archive_url)
        .await
        .with_context(|| format!("could not download {archive_url}"))?;
    let got = sha256_hex(&archive);
    if got != want {
        bail!(
            "{archive_url} does not match its checksum: SHA256SUMS has {want}, the download {got}"
        );
    }
    let inner = format!("podtun-{VERSION}-{target}/podtun");
    let bytes = tokio::task::spawn_blocking(move || unpack(&archive, &inner))
        .await
        .context("unpacking the archive")?
        .with_context(|| format!("could not unpack {archive_url}"))?;
    if let Some(dir) = &dir {
        match store(dir, &bytes) {
            Ok(()) => debug!(dir = %dir.display(), "release build cached"),
            Err(e) => warn!(dir = %dir.display(), "could not cache the release build: {e:#}"),
        }
    }
    Ok(Build {
        bytes,
        from: archive_url,
    })
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum `SHA256SUMS` gives for file `name` (`HEX  NAME` or `HEX *NAME`, where NAME may
/// carry a directory).
fn sum_for(sums: &str, name: &str) -> Option<String> {
    sums.lines().find_map(|line| {
        let (hex, file) = line.trim().split_once(char::is_whitespace)?;
        let file = file.trim_start().trim_start_matches('*');
        let base = file.rsplit('/').next().unwrap_or(file);
        let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && base == name).then(|| hex.to_ascii_lowercase())
    })
}

/// The bytes at `url`: `http://`, `https://` or `file://`.
async fn fetch(url: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        let path = file_url_path(path)?;
        let bytes = tokio::fs::read(&path)
            .await
            .with_context(|| format!("could not read {}", path.display()))?;
        return Ok(bytes);
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("{RELEASES_URL_ENV} must start with https://, http:// or file://");
    }
    tokio::time::timeout(DOWNLOAD_TIMEOUT, get(url))
        .await
        .map_err(|_| anyhow!("no complete answer within {}s", DOWNLOAD_TIMEOUT.as_secs()))?
}

/// The local path of a `file://` URL's rest (`/abs/path`, `localhost/abs/path`), with `%XX`
/// escapes decoded.
fn file_url_path(rest: &str) -> anyhow::Result<PathBuf> {
    let rest = rest.strip_prefix("localhost").unwrap_or(rest);
    if !rest.starts_with('/') {
        bail!("a file:// URL needs an absolute path (file:///path/to/folder/)");
    }
    let mut bytes = Vec::with_capacity(rest.len());
    let raw = rest.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (raw[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                bytes.push(b);
                i += 3;
            }
            (b, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    let path = String::from_utf8(bytes).context("a file:// URL that is not UTF-8")?;
    // file:///C:/dir on Windows.
    #[cfg(windows)]
    let path = match path.as_bytes() {
        [b'/', _, b':', ..] => path[1..].to_string(),
        _ => path,
    };
    Ok(PathBuf::from(path))
}

/// GET over HTTP(S), following redirects (never from https to http); the body of the 200.
async fn get(url: &str) -> anyhow::Result<Vec<u8>> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client};

    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?;
    let tls = rustls_platform_verifier::BuilderVerifierExt::with_platform_verifier(tls)
        .context("could not load the system's certificate roots")?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client: Client<_, Empty<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);

    let mut url = url.to_string();
    for _ in 0..=MAX_REDIRECTS {
        let uri: http::Uri = url.parse().with_context(|| format!("bad URL `{url}`"))?;
        let request = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, format!("podtun/{VERSION}"))
            .body(Empty::new())
            .context("building the request")?;
        let response = client.request(request).await.map_err(|e| {
            // hyper-util's error says only "client error (Connect)": the cause says why.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            anyhow!(message)
        })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| anyhow!("HTTP {status} without a Location"))?;
            let next = resolve(&uri, location);
            if url.starts_with("https://") && !next.starts_with("https://") {
                bail!("refusing a redirect from https to `{next}`");
            }
            debug!(from = %url, to = %next, "redirected");
            url = next;
            continue;
        }
        if status != http::StatusCode::OK {
            bail!("HTTP {status}");
        }
        let body = Limited::new(response.into_body(), MAX_DOWNLOAD)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the answer: {e}"))?;
        return Ok(body.to_bytes().to_vec());
    }
    bail!("more than {MAX_REDIRECTS} redirects")
}

/// `location` (absolute, or relative to `base`) as an absolute URL.
fn resolve(base: &http::Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    if location.starts_with('/') {
        return format!("{scheme}://{authority}{location}");
    }
    let dir = base.path().rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!("{scheme}://{authority}{dir}/{location}")
}

/// The file `inner` from gzip-compressed tar `archive`.
fn unpack(archive: &[u8], inner: &str) -> anyhow::Result<Vec<u8>> {
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(archive)
        .take(MAX_BINARY * 2)
        .read_to_end(&mut tar)
        .context("not a gzip archive")?;
    tar_file(&tar, inner)
}

/// Where the release build of this version for `target` is cached.
fn cache_dir(target: &str) -> Option<PathBuf> {
    crate::dirs::cache_dir().map(|root| root.join("releases").join(format!("{VERSION}-{target}")))
}

/// The cached binary in `dir`, if it is there and matches the checksum stored beside it.
fn cached(dir: &Path) -> Option<Vec<u8>> {
    let sum = std::fs::read_to_string(dir.join("podtun.sha256")).ok()?;
    let bytes = std::fs::read(dir.join("podtun")).ok()?;
    if sha256_hex(&bytes) == sum.trim() {
        return Some(bytes);
    }
    warn!(dir = %dir.display(), "the cached release build does not match its checksum: fetching it again");
    std::fs::remove_file(dir.join("podtun.sha256")).ok();
    std::fs::remove_file(dir.join("podtun")).ok();
    None
}

/// Keeps `bytes` in `dir` (0700) as `podtun` (0700) with its checksum beside it, each written
/// under a temp name and renamed; the checksum last, so a half-done store counts as absent.
fn store(dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::dirs::private_dir(dir)?;
    crate::dirs::write_private_mode(&dir.join("podtun"), bytes, 0o700)?;
    crate::dirs::write_private(
        &dir.join("podtun.sha256"),
        format!("{}\n", sha256_hex(bytes)).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_uname() {
        assert_eq!(target_for("Linux x86_64"), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(
            target_for("Linux aarch64\n"),
            Some("aarch64-unknown-linux-gnu")
        );
        assert_eq!(target_for("Darwin arm64"), None);
        assert_eq!(target_for("Linux ppc64le"), None);
        assert_eq!(target_for(""), None);
    }

    #[test]
    fn checksums_in_sha256sum_format() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let sums = format!(
            "{a}  podtun-1-x.tar.gz\n{b} *dist/podtun-1-y.tar.gz\nnot a line\n{}  short\n",
            "c".repeat(10)
        );
        assert_eq!(sum_for(&sums, "podtun-1-x.tar.gz"), Some(a));
        assert_eq!(sum_for(&sums, "podtun-1-y.tar.gz"), Some("b".repeat(64)));
        assert_eq!(sum_for(&sums, "short"), None);
        assert_eq!(sum_for(&sums, "podtun-1-z.tar.gz"), None);
    }

    #[test]
    fn file_urls_and_redirects() {
        assert_eq!(
            file_url_path("/srv/my%20releases/").unwrap(),
            PathBuf::from("/srv/my releases/")
        );
        assert_eq!(
            file_url_path("localhost/srv/r").unwrap(),
            PathBuf::from("/srv/r")
        );
        assert!(file_url_path("relative/dir").is_err());
        let base: http::Uri = "https://github.com/o/r/releases/download/v1/x.tar.gz"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "https://cdn.example/a"),
            "https://cdn.example/a"
        );
        assert_eq!(resolve(&base, "/a/b"), "https://github.com/a/b");
        assert_eq!(resolve(&base, "//cdn.example/a"), "https://cdn.example/a");
        assert_eq!(
            resolve(&base, "y.tar.gz"),
            "https://github.com/o/r/releases/download/v1/y.tar.gz"
        );
    }

    /// An archive as `tar czf` writes it (GNU format, a directory entry first), and one with a
    /// name longer than ustar's 100 bytes.
    #[cfg(unix)]
    #[test]
    fn unpacks_the_binary_from_a_tar_gz() {
        let work = tempfile::tempdir().unwrap();
        let long = "d".repeat(120);
        for (format, dir) in [
            ("gnu", "podtun-1-t"),
            ("pax", "podtun-1-t"),
            ("gnu", &*long),
        ] {
            let stage = work.path().join(format!("stage-{format}-{}", dir.len()));
            std::fs::create_dir_all(stage.join(dir)).unwrap();
            let binary: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
            std::fs::write(stage.join(dir).join("podtun"), &binary).unwrap();
            std::fs::write(stage.join(dir).join("README.md"), "readme").unwrap();
            let archive = stage.with_extension("tar.gz");
            let status = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-C")
                .arg(&stage)
                .arg("-czf")
                .arg(&archive)
                .arg(dir)
                .status()
                .unwrap();
            assert!(status.success());
            let bytes = std::fs::read(&archive).unwrap();
            let inner = format!("{dir}/podtun");
            assert_eq!(unpack(&bytes, &inner).unwrap(), binary, "{format} {dir}");
            let missing = unpack(&bytes, "podtun-2-t/podtun").unwrap_err();
            assert_eq!(missing.to_string(), "the archive has no podtun-2-t/podtun");
            let truncated = unpack(&bytes[..bytes.len() / 2], &inner);
            assert!(truncated.is_err(), "{format}: a truncated archive unpacked");
        }
        assert!(unpack(b"not gzip", "x").is_err());
    }

    #[test]
    fn the_cache_is_private_and_checked_on_use() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("podtun/releases/1-t");
        assert_eq!(cached(&dir), None);
        store(&dir, b"the binary").unwrap();
        assert_eq!(cached(&dir).as_deref(), Some(&b"the binary"[..]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("podtun")), 0o700);
            assert_eq!(mode(&dir.join("podtun.sha256")), 0o600);
        }
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no temp files");
        std::fs::write(dir.join("podtun"), b"the binarY").unwrap();
        assert_eq!(cached(&dir), None, "a changed file is not used");
        assert!(!dir.join("podtun").exists(), "and is removed");
    }
}
