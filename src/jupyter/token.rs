//! The Jupyter URL in a pod's log: token, base path and the page to open, in every form Jupyter
//! Server 1.x/2.x, JupyterLab 3/4 and Notebook 5/6/7 print it. Log text is untrusted: a line whose
//! token or path could make a bad URL is skipped, never repaired.

use std::fmt;

/// Jupyter's generated tokens are 48 hex digits; anything past this is not a token.
const MAX_TOKEN_LEN: usize = 256;
/// Paths longer than this in a log line are not Jupyter's.
const MAX_PATH_LEN: usize = 1024;
/// What Jupyter prints instead of a token it did not generate (set by config or env).
const MASKED_TOKEN: &str = "...";

/// A Jupyter login token. `Debug` redacts it and there is no `Display`: the secret only leaves
/// through [`Token::expose`]. It is URL-safe by construction (`[A-Za-z0-9_-]`, at most 256).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// A token, if `value` is a plausible one.
    pub fn new(value: &str) -> Option<Token> {
        let plausible = !value.is_empty()
            && value.len() <= MAX_TOKEN_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        plausible.then(|| Token(value.to_string()))
    }

    /// The secret itself, for building the URL.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// A Jupyter URL as the server printed it (host dropped: podtun serves it on its own address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JupyterUrl {
    /// The login token.
    pub token: Option<Token>,
    /// The server's base URL (`/`, `/user/alice/`): starts and ends with `/`.
    pub base_path: String,
    /// The page to open (`/lab`, `/tree`, `/user/alice/lab`).
    pub path: String,
    /// The port the server printed.
    pub port: Option<u16>,
}

/// What a log says about reaching Jupyter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFind {
    /// A URL with a token.
    Found(JupyterUrl),
    /// `?token=...`: the token came from config or env (see `cluster::discover::token_from_env`).
    Masked {
        /// The server's base URL, as in [`JupyterUrl::base_path`].
        base_path: String,
        /// The page to open.
        path: String,
    },
    /// A URL without a token: password or no authentication.
    NoAuth {
        /// The server's base URL, as in [`JupyterUrl::base_path`].
        base_path: String,
        /// The page to open.
        path: String,
    },
    /// No Jupyter URL yet.
    NotYet,
}

/// The newest (last) Jupyter URL in `log`, which may be one line or many.
pub fn find_token(log: &str) -> TokenFind {
    // From the end: the newest URL is the one that counts, and the scan stops at it.
    log.lines()
        .rev()
        .find_map(url_in_line)
        .unwrap_or(TokenFind::NotYet)
}

/// The last qualifying URL on one log line.
fn url_in_line(line: &str) -> Option<TokenFind> {
    let line = strip_colors_before_url(line);
    let body = strip_log_prefix(&line);
    let mut found = None;
    let mut from = 0;
    while let Some(start) = next_http(&body[from..]).map(|i| from + i) {
        let Some((url, end)) = parse_url(&body[start..]) else {
            from = start + 1;
            continue;
        };
        from = start + end;
        if let Some(find) = qualify(&url, &body[..start], &body[from..]) {
            found = Some(find);
        }
    }
    found
}

/// Jupyter colours its log prefix when the container has a TTY (`tty: true`): drop the colour
/// codes before the first URL, where they would hide the prefix. A URL with codes inside it is
/// left as it is, and so rejected.
fn strip_colors_before_url(line: &str) -> std::borrow::Cow<'_, str> {
    let url_at = next_http(line).unwrap_or(line.len());
    let (head, tail) = line.split_at(url_at);
    if !head.contains('\u{1b}') {
        return line.into();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = head.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            // CSI: parameters and intermediates up to a final byte in @..~.
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out.push_str(tail);
    out.into()
}

/// Drops a kubelet timestamp (`--timestamps`) and Jupyter's `[I 2024-01-01 12:00:00.000 ServerApp]`.
fn strip_log_prefix(line: &str) -> &str {
    let mut body = line.trim_start();
    if let Some((first, rest)) = body.split_once(' ') {
        if first.starts_with(|c: char| c.is_ascii_digit())
            && first.contains('T')
            && first.ends_with('Z')
        {
            body = rest.trim_start();
        }
    }
    if body.starts_with('[') {
        if let Some((_, rest)) = body.split_once("] ") {
            body = rest;
        }
    }
    body
}

fn next_http(s: &str) -> Option<usize> {
    match (s.find("http://"), s.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct RawUrl<'a> {
    port: Option<u16>,
    path: &'a str,
    query: &'a str,
}

/// `scheme://host[:port][/path][?query]` at the start of `s`, and where it ends. The host may be
/// Notebook 5's `(hostname or 127.0.0.1)` or `[all ip addresses on your system]`.
fn parse_url(s: &str) -> Option<(RawUrl<'_>, usize)> {
    let after_scheme = s.find("://")? + 3;
    let rest = &s[after_scheme..];
    let host_len = match rest.chars().next()? {
        '(' => rest.find(')')? + 1,
        '[' => rest.find(']')? + 1,
        _ => rest
            .find(|c: char| matches!(c, ':' | '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(rest.len()),
    };
    let host = &rest[..host_len];
    if host.is_empty() {
        return None;
    }
    let mut i = after_scheme + host_len;
    let mut port = None;
    if s[i..].starts_with(':') {
        let digits = s[i + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(s.len() - i - 1);
        port = Some(s[i + 1..i + 1 + digits].parse::<u16>().ok()?);
        i += 1 + digits;
    }
    let stop = |c: char| c.is_whitespace() || c == '#';
    let path_end = s[i..]
        .find(|c: char| stop(c) || c == '?')
        .map_or(s.len(), |n| i + n);
    let path = &s[i..path_end];
    i = path_end;
    let mut query = "";
    if s[i..].starts_with('?') {
        let end = s[i..].find(stop).map_or(s.len(), |n| i + n);
        query = &s[i + 1..end];
        i = end;
    }
    Some((RawUrl { port, path, query }, i))
}

/// What a URL means, or `None` if it is not (safely) a Jupyter URL.
fn qualify(url: &RawUrl<'_>, before: &str, after: &str) -> Option<TokenFind> {
    let path = if url.path.is_empty() { "/" } else { url.path };
    if !safe_path(path) {
        return None;
    }
    let base_path = base_of(path);
    let path = path.to_string();
    let token = url
        .query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    match token {
        Some(MASKED_TOKEN) => Some(TokenFind::Masked { base_path, path }),
        Some(value) => Some(TokenFind::Found(JupyterUrl {
            token: Some(Token::new(value)?),
            base_path,
            path,
            port: url.port,
        })),
        None => {
            // Without a token, only a URL that Jupyter prints on its own line counts, so links
            // in warnings (docs, the Notebook 7 migration banner) are not taken for the server.
            let before = before.trim();
            let alone = before.is_empty() || before == "or" || before.ends_with("running at:");
            (alone && after.trim().is_empty() && url.port.is_some())
                .then_some(TokenFind::NoAuth { base_path, path })
        }
    }
}

/// A path podtun may append to its own address: plain characters, no `..` or empty segments.
fn safe_path(path: &str) -> bool {
    path.len() <= MAX_PATH_LEN
        && path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%@+,".contains(&b))
        && !path.split('/').any(|seg| seg == "..")
        && !path.contains("//")
        && safe_escapes(path)
}

/// JupyterHub escapes user names in paths (`/user/a%40b.org/`); an escape must be `%XX` and must
/// not hide a separator, a dot, a control character or a space.
fn safe_escapes(path: &str) -> bool {
    path.split('%').skip(1).all(|after| {
        let hex = after.get(..2).and_then(|h| u8::from_str_radix(h, 16).ok());
        hex.is_some_and(|b| b > b' ' && b != 0x7f && !b"./\\".contains(&b))
    })
}

/// The server's base URL: the path without the app page at its end (`lab`, `tree`, or a
/// `notebooks/…`, `lab/tree/…`, `lab/workspaces/…` document), ending in `/`.
fn base_of(path: &str) -> String {
    let page_suffix = ["/lab", "/lab/", "/tree", "/tree/"]
        .iter()
        .find(|s| path.ends_with(*s))
        .map(|s| path.len() - s.len() + 1);
    let document = ["/notebooks/", "/lab/tree/", "/lab/workspaces/"]
        .iter()
        .filter_map(|s| path.find(s).map(|i| i + 1))
        .min();
    let cut = page_suffix.or(document).unwrap_or(path.len());
    let mut base = path[..cut].to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(token: &str, base: &str, path: &str, port: u16) -> TokenFind {
        TokenFind::Found(JupyterUrl {
            token: Token::new(token),
            base_path: base.into(),
            path: path.into(),
            port: Some(port),
        })
    }

    fn masked(base: &str, path: &str) -> TokenFind {
        TokenFind::Masked {
            base_path: base.into(),
            path: path.into(),
        }
    }

    fn no_auth(base: &str, path: &str) -> TokenFind {
        TokenFind::NoAuth {
            base_path: base.into(),
            path: path.into(),
        }
    }

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../tests/fixtures/logs/", $name))
        };
    }

    /// Every log fixture with what it must give.
    fn fixtures() -> Vec<(&'static str, &'static str, TokenFind)> {
        vec![
            (
                "server2-lab4",
                fixture!("server2-lab4.log"),
                found(
                    "c90598785a05ebf953687d61e06e5736540bb93102edd826",
                    "/",
                    "/lab",
                    8888,
                ),
            ),
            (
                "server2-base-url",
                fixture!("server2-base-url.log"),
                found(
                    "98502ce6a840100b917016c4356997973314e852594ba50d",
                    "/user/alice/",
                    "/user/alice/lab",
                    8888,
                ),
            ),
            (
                "server2-masked",
                fixture!("server2-masked.log"),
                masked("/", "/lab"),
            ),
            (
                "server2-no-token",
                fixture!("server2-no-token.log"),
                no_auth("/", "/lab"),
            ),
            (
                "server1-lab3",
                fixture!("server1-lab3.log"),
                found(
                    "f9903fc9de807c4aac7ebc3a80bab1c7e8aaea2ff323b99f",
                    "/",
                    "/lab",
                    8888,
                ),
            ),
            (
                "notebook6",
                fixture!("notebook6.log"),
                found(
                    "e85a73496891cda48a9843eba096b923cec58040060c3f2d",
                    "/",
                    "/",
                    8888,
                ),
            ),
            (
                "notebook7",
                fixture!("notebook7.log"),
                found(
                    "55c29ac44159171999717d293dfc01799c06fa82950e0008",
                    "/",
                    "/tree",
                    8888,
                ),
            ),
            (
                "restart",
                fixture!("restart.log"),
                found(
                    "7d1e0f3b6a2c49e58f0b1a9c3d5e7f2a4b6c8d0e1f3a5b7c",
                    "/",
                    "/lab",
                    8888,
                ),
            ),
            (
                "docker-stacks",
                fixture!("docker-stacks.log"),
                found(
                    "0c6b1d4e9f2a47b8a3c5d7e9f1a2b4c6d8e0f2a4b6c8d0e2",
                    "/",
                    "/lab",
                    8888,
                ),
            ),
            (
                "notebook5-docker-stacks",
                fixture!("notebook5-docker-stacks.log"),
                found(
                    "3f9a1c7e5b2d48a6b0c4e8f2a6d0b4c8e2f6a0b4c8d2e6f0",
                    "/",
                    "/",
                    8888,
                ),
            ),
            ("starting", fixture!("starting.log"), TokenFind::NotYet),
        ]
    }

    #[test]
    fn every_fixture() {
        for (name, log, want) in fixtures() {
            assert_eq!(find_token(log), want, "{name}");
        }
    }

    #[test]
    fn line_by_line_gives_the_same_answer() {
        // `resolve` feeds followed logs one line at a time: the last line with a URL must agree.
        for (name, log, want) in fixtures() {
            let newest = log
                .lines()
                .rev()
                .map(find_token)
                .find(|f| *f != TokenFind::NotYet)
                .unwrap_or(TokenFind::NotYet);
            assert_eq!(newest, want, "{name}");
        }
    }

    #[test]
    fn a_restart_replaces_the_token() {
        let log = fixture!("restart.log");
        let first_run = &log[..log.find("restarting in").expect("restart line")];
        assert_eq!(
            find_token(first_run),
            found(
                "c90598785a05ebf953687d61e06e5736540bb93102edd826",
                "/",
                "/lab",
                8888
            )
        );
    }

    #[test]
    fn every_printed_form() {
        let t = "abc123";
        let cases = [
            ("http://127.0.0.1:8888/lab?token=abc123", "/", "/lab"),
            ("    or http://127.0.0.1:8888/lab?token=abc123", "/", "/lab"),
            ("http://hostname:8888/?token=abc123", "/", "/"),
            ("http://(hostname or 127.0.0.1):8888/?token=abc123", "/", "/"),
            ("[I 12:00:00.000 NotebookApp] http://[all ip addresses on your system]:8888/?token=abc123", "/", "/"),
            ("[I 2024-01-01 12:00:00.000 ServerApp] http://jupyter-0:8888/lab?token=abc123", "/", "/lab"),
            ("http://127.0.0.1:8888/user/alice/lab?token=abc123", "/user/alice/", "/user/alice/lab"),
            ("http://127.0.0.1:8888/user/alice/lab/?token=abc123", "/user/alice/", "/user/alice/lab/"),
            ("http://127.0.0.1:8888/tree?token=abc123", "/", "/tree"),
            ("http://127.0.0.1:8888/user/bob/tree/?token=abc123", "/user/bob/", "/user/bob/tree/"),
            ("http://127.0.0.1:8888/notebooks/work/a.ipynb?token=abc123", "/", "/notebooks/work/a.ipynb"),
            ("http://127.0.0.1:8888/user/bob/lab/tree/a.ipynb?token=abc123", "/user/bob/", "/user/bob/lab/tree/a.ipynb"),
            ("http://127.0.0.1:8888/proxy/?token=abc123", "/proxy/", "/proxy/"),
            ("http://127.0.0.1:8888/lab?foo=1&token=abc123", "/", "/lab"),
            ("2024-01-01T12:00:00.123456789Z [I ServerApp] http://[::1]:8888/lab?token=abc123", "/", "/lab"),
            ("https://127.0.0.1:8888/lab?token=abc123", "/", "/lab"),
        ];
        for (line, base, path) in cases {
            assert_eq!(find_token(line), found(t, base, path, 8888), "{line}");
        }
        assert_eq!(
            find_token("http://127.0.0.1:8888/user/a%40b.org/lab?token=abc123"),
            found(t, "/user/a%40b.org/", "/user/a%40b.org/lab", 8888)
        );
        // A JupyterHub single-user server: no token in the URL (the hub logs the user in).
        let hub = "[I 2024-06-01 09:00:00.000 SingleUserLabApp serverapp:2923] Jupyter Server 2.14.0 is running at:\n\
                   [I 2024-06-01 09:00:00.000 SingleUserLabApp serverapp:2923] http://jupyter-alice:8888/user/alice/lab";
        assert_eq!(find_token(hub), no_auth("/user/alice/", "/user/alice/lab"));
        // Coloured prefixes (a container with a TTY) still count as Jupyter's own line.
        assert_eq!(
            find_token("\u{1b}[32m[I 2024-01-01 12:00:00.000 ServerApp]\u{1b}[0m     http://127.0.0.1:8888/lab"),
            no_auth("/", "/lab")
        );
        assert_eq!(
            find_token("Jupyter Server 2.0.0 is running at: http://127.0.0.1:8888/lab"),
            no_auth("/", "/lab")
        );
        assert_eq!(
            find_token("http://127.0.0.1:8888/lab?token=..."),
            masked("/", "/lab")
        );
    }

    #[test]
    fn links_that_are_not_the_server_are_ignored() {
        for line in [
            "https://jupyter-notebook.readthedocs.io/en/latest/migrate_to_notebook7.html",
            "[W ServerApp] see http://127.0.0.1:8888/lab for details",
            "        file:///home/jovyan/.local/share/jupyter/runtime/jpserver-7-open.html",
            "[I ServerApp] Jupyter Server 2.14.2 is running at:",
            "http://",
            "http://:8888/?token=abc",
            "http://host:99999/lab?token=abc",
        ] {
            assert_eq!(find_token(line), TokenFind::NotYet, "{line}");
        }
    }

    #[test]
    fn hostile_lines_are_skipped_not_repaired() {
        let good = "http://127.0.0.1:8888/lab?token=good";
        for bad in [
            format!("http://127.0.0.1:8888/lab?token={}", "a".repeat(257)),
            "http://127.0.0.1:8888/lab?token=abc%22onload".into(),
            "http://127.0.0.1:8888/lab?token=abc;rm".into(),
            "http://127.0.0.1:8888/lab?token=".into(),
            "http://127.0.0.1:8888/../../etc?token=abc".into(),
            "http://127.0.0.1:8888/lab\"><script>?token=abc".into(),
            "http://127.0.0.1:8888//evil.example/?token=abc".into(),
            "http://127.0.0.1:8888/lab\u{1b}[31m?token=abc".into(),
            "http://127.0.0.1:8888/%2e%2e/etc?token=abc".into(),
            "http://127.0.0.1:8888/a%2Fb/lab?token=abc".into(),
            "http://127.0.0.1:8888/a%0a/lab?token=abc".into(),
            "http://127.0.0.1:8888/a%/lab?token=abc".into(),
            "http://127.0.0.1:8888/a%zz/lab?token=abc".into(),
        ] {
            let log = format!("{good}\n{bad}\n");
            assert_eq!(
                find_token(&log),
                found("good", "/", "/lab", 8888),
                "{bad:?}"
            );
        }
        let longest = "b".repeat(256);
        let line = format!("http://127.0.0.1:8888/lab?token={longest}");
        assert_eq!(find_token(&line), found(&longest, "/", "/lab", 8888));
    }

    #[test]
    fn token_debug_redacts() {
        let url = JupyterUrl {
            token: Token::new("topsecret"),
            base_path: "/".into(),
            path: "/lab".into(),
            port: Some(8888),
        };
        let shown = format!("{:?} {:?}", url, TokenFind::Found(url.clone()));
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("Token(***)"), "{shown}");
        assert_eq!(url.token.as_ref().map(Token::expose), Some("topsecret"));
    }
}
