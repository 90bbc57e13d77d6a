//! The SSH host's side of `podtun jupyter @`: one POSIX-sh script, run in the user's login
//! environment, that lists the user's Jupyter servers as Jupyter itself does (the
//! `jpserver-*.json` files of its runtime directory, each marked live when its pid is), and
//! with `--start` starts one when none runs and keeps it for as long as its channel lives.
//! Reading what the script prints is pure, and lives here too.
//!
//! Every line the script prints starts with [`MARK`]; the rest is login-shell noise. Server
//! lines carry tokens: they are parsed, never logged.

pub use crate::jupyter::server::Server;
use crate::laptop::ssh::exec::{remote_path, sh_quote};
use crate::proto::wire::HEARTBEAT_SECS;

/// The prefix of every line the script prints.
pub const MARK: &str = "podtun-jupyter:";

/// Heartbeats the host side may miss before it stops a server podtun started.
const HEARTBEATS_MISSED: u64 = 3;

/// Where a server podtun starts listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket in a fresh 0700 directory: nobody else on the host can reach it.
    Socket,
    /// 127.0.0.1 on a port the kernel picks, when sshd refuses stream-local forwarding.
    Tcp,
}

/// What the script does besides listing.
#[derive(Debug, Clone, Default)]
pub struct Script<'a> {
    /// Start a server when no live one is found.
    pub start: Option<Listen>,
    /// `--env`: conda environment (name or path) or virtualenv (path).
    pub env: Option<&'a str>,
    /// `--dir`: where to start the server.
    pub dir: Option<&'a str>,
    /// A server to count as gone: one podtun started earlier, whose channel was lost.
    pub skip: Option<u32>,
}

impl Script<'_> {
    /// The script's text (POSIX sh).
    pub fn render(&self) -> String {
        let skip = self.skip.map(|pid| pid.to_string()).unwrap_or_default();
        let mut text = format!("umask 077\nM={}\nskip={skip}\n", sh_quote(MARK));
        if let Some(env) = self.env {
            text.push_str(&activate(env));
        }
        text.push_str(LIST);
        match self.start {
            None => text.push_str("echo \"$M done\"\n"),
            Some(listen) => {
                text.push_str("if [ \"$live\" -gt 0 ]; then echo \"$M done\"; exit 0; fi\n");
                let dir = match self.dir {
                    Some(dir) => format!(
                        "cd {} 2>/dev/null || {{ echo \"$M no-dir\"; exit 3; }}\n",
                        remote_path(dir)
                    ),
                    None => "cd \"$HOME\" 2>/dev/null || :\n".to_string(),
                };
                text.push_str(&dir);
                let listen = match listen {
                    Listen::Socket => "--ServerApp.sock=\"$d/jupyter.sock\"",
                    Listen::Tcp => "--ServerApp.ip=127.0.0.1 --ServerApp.port=0",
                };
                text.push_str(&START.replace("@LISTEN@", listen).replace(
                    "@SILENCE@",
                    &(HEARTBEAT_SECS * HEARTBEATS_MISSED).to_string(),
                ));
            }
        }
        text
    }
}

/// `--env`: a path is a virtualenv or conda prefix (its `bin` goes first on PATH); a bare name
/// is a conda environment, activated by conda itself.
fn activate(env: &str) -> String {
    if env.contains('/') || env.starts_with('~') || env.starts_with('.') {
        format!(
            r#"e={path}
[ -x "$e/bin/jupyter" ] || {{ echo "$M no-env $e has no bin/jupyter"; exit 3; }}
PATH="$e/bin:$PATH"; export PATH
if [ -d "$e/conda-meta" ]; then CONDA_PREFIX=$e; export CONDA_PREFIX; else VIRTUAL_ENV=$e; export VIRTUAL_ENV; fi
"#,
            path = remote_path(env)
        )
    } else {
        format!(
            r#"command -v conda >/dev/null 2>&1 || {{ echo "$M no-env conda is not on PATH"; exit 3; }}
a=$(conda shell.posix activate {name} 2>/dev/null) && eval "$a" || {{ echo "$M no-env no conda environment named {name}"; exit 3; }}
"#,
            name = sh_quote(env)
        )
    }
}

/// Lists the servers of Jupyter's runtime directory (`jupyter --runtime-dir` when jupyter is on
/// PATH, else where jupyter_core would put it), newest first, each with whether its pid lives.
const LIST: &str = r#"j=$(command -v jupyter 2>/dev/null)
rt=
if [ -n "$j" ]; then echo "$M jupyter"; rt=$(jupyter --runtime-dir 2>/dev/null </dev/null); fi
if [ -n "$rt" ]; then dirs=$rt
elif [ -n "$JUPYTER_RUNTIME_DIR" ]; then dirs=$JUPYTER_RUNTIME_DIR
else
  dirs="${JUPYTER_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/jupyter}/runtime"
  [ -n "$XDG_RUNTIME_DIR" ] && dirs="$dirs
$XDG_RUNTIME_DIR/jupyter"
fi
[ -n "$rt" ] || rt=$(echo "$dirs" | head -n 1)
live=0
nl='
'
oifs=$IFS
IFS=$nl
for r in $dirs; do
  echo "$M dir $r"
  [ -d "$r" ] || continue
  for f in $(ls -t "$r" 2>/dev/null); do
    case $f in jpserver-*.json|nbserver-*.json) ;; *) continue ;; esac
    p="$r/$f"
    [ -f "$p" ] && [ -r "$p" ] || continue
    pid=$(sed -n 's/.*"pid":[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$p" | head -n 1)
    ok=0
    if [ -n "$pid" ] && [ "$pid" != "$skip" ] && kill -0 "$pid" 2>/dev/null; then ok=1; live=$((live + 1)); fi
    echo "$M server $ok $(tr -d '\r\n' <"$p")"
  done
done
IFS=$oifs
"#;

/// Starts `jupyter lab` in a fresh 0700 directory, waits for its `jpserver-PID.json`, reports
/// it, then follows the laptop's heartbeats on stdin. EOF (the laptop went away or stopped),
/// silence or a signal stop the server (TERM, then KILL after 5 s) and remove the directory.
const START: &str = r#"[ -n "$j" ] || { echo "$M no-jupyter"; exit 3; }
base=${XDG_RUNTIME_DIR:-${TMPDIR:-/tmp}}
[ -d "$base" ] && [ -w "$base" ] || base=/tmp
d=$(mktemp -d "$base/podtun-jupyter.XXXXXXXX") || { echo "$M no-private-dir $base"; exit 3; }
chmod 700 "$d"
root=
[ "$(id -u)" = 0 ] && root=--allow-root
set -m
jupyter lab --no-browser @LISTEN@ $root </dev/null >"$d/log" 2>&1 &
pid=$!
set +m
info="$rt/jpserver-$pid.json"
wd=
stop() {
  [ -n "$wd" ] && kill "$wd" 2>/dev/null
  kill -TERM "$pid" 2>/dev/null
  n=0
  while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 50 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n + 1)); done
  kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  rm -f "$info"
  rm -rf "$d"
}
trap 'stop; exit 0' HUP INT TERM PIPE
until [ -f "$info" ] && grep -q '}' "$info" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    rc=$?
    tail -n 20 "$d/log" | sed -e 's/token=[^&[:space:]]*/token=.../g' -e "s/^/$M log /"
    echo "$M failed $rc"
    rm -rf "$d"
    exit 4
  fi
  sleep 0.1 2>/dev/null || sleep 1
done
echo "$M server 1 $(tr -d '\r\n' <"$info")"
echo "$M started $pid"
: >"$d/beat"
me=$$
( missed=0; while sleep 5; do
    [ -d "$d" ] || exit 0
    if [ -e "$d/beat" ]; then rm -f "$d/beat"; missed=0; else missed=$((missed + 5)); fi
    if [ "$missed" -ge @SILENCE@ ]; then kill -TERM "$me"; exit 0; fi
  done ) </dev/null >/dev/null 2>&1 &
wd=$!
while IFS= read -r line; do : >"$d/beat" 2>/dev/null; done
stop
"#;

/// Parses one server file's JSON; a file that names no process is not a live server's.
pub fn parse_server(json: &str) -> Result<Server, serde_json::Error> {
    let server = Server::from_json(json)?;
    if server.pid == 0 {
        return Err(<serde_json::Error as serde::de::Error>::missing_field(
            "pid",
        ));
    }
    Ok(server)
}

/// What the script reported, line by line.
#[derive(Debug, Default)]
pub struct Listing {
    /// The live servers, newest first (each pid once).
    pub servers: Vec<Server>,
    /// Server files whose process is gone (or unreadable), counted.
    pub stale: usize,
    /// The runtime directories looked in.
    pub dirs: Vec<String>,
    /// Whether `jupyter` is on the login PATH.
    pub jupyter: bool,
    /// The server the script started (its pid).
    pub started: Option<u32>,
    /// The script is done (listed, nothing to start).
    pub done: bool,
    /// Why the script gave up: a word (`no-jupyter`, `no-env`, `failed`, …) and its detail.
    pub problem: Option<(String, String)>,
    /// The last lines of a failed server's log (tokens masked).
    pub log: Vec<String>,
}

impl Listing {
    /// Takes one of the script's lines (the [`MARK`] already stripped).
    pub fn push(&mut self, line: &str) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "jupyter" => self.jupyter = true,
            "dir" => self.dirs.push(rest.to_string()),
            "server" => {
                let (live, json) = rest.split_once(' ').unwrap_or((rest, ""));
                match parse_server(json) {
                    Ok(server) if live == "1" => {
                        if !self.servers.iter().any(|s| s.pid == server.pid) {
                            self.servers.push(server);
                        }
                    }
                    _ => self.stale += 1,
                }
            }
            "started" => self.started = rest.trim().parse().ok(),
            "done" => self.done = true,
            "log" => self.log.push(rest.to_string()),
            other => self.problem = Some((other.to_string(), rest.to_string())),
        }
    }

    /// The server the script started.
    pub fn started_server(&self) -> Option<&Server> {
        let pid = self.started?;
        self.servers.iter().find(|s| s.pid == pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::Token;

    const TCP: &str = r#"{  "base_url": "/",  "hostname": "127.0.0.1",  "password": false,  "pid": 23398,  "port": 35441,  "root_dir": "/home/alice",  "secure": false,  "sock": "",  "token": "114b4b8e0d64",  "url": "http://127.0.0.1:35441/",  "version": "2.21.1"}"#;
    const SOCK: &str = r#"{  "base_url": "/user/alice",  "hostname": "localhost",  "password": false,  "pid": 23401,  "port": 0,  "root_dir": "/home/alice",  "secure": false,  "sock": "/tmp/podtun-jupyter.x/jupyter.sock",  "token": "70f49fcb",  "url": "http+unix://%2Ftmp%2Fj.sock/user/alice/",  "version": "2.21.1"}"#;

    #[test]
    fn a_tcp_server_is_reached_on_loopback_with_its_token() {
        let s = parse_server(TCP).unwrap();
        assert_eq!(s.pid, 23398);
        assert_eq!(s.port, 35441);
        assert_eq!(s.address, "127.0.0.1");
        assert_eq!(s.sock, None);
        assert_eq!(s.token, Token::new("114b4b8e0d64"));
        assert_eq!(s.base_url, "/");
        assert_eq!(s.page(), "lab");
        assert_eq!(s.listens_on(), "port 35441");
        assert!(
            !format!("{s:?}").contains("114b4b8e0d64"),
            "no token in Debug"
        );
    }

    #[test]
    fn a_socket_server_keeps_its_socket_and_base_url() {
        let s = parse_server(SOCK).unwrap();
        assert_eq!(
            s.sock.as_deref(),
            Some("/tmp/podtun-jupyter.x/jupyter.sock")
        );
        assert_eq!(s.base_url, "/user/alice/");
        assert_eq!(s.listens_on(), "socket /tmp/podtun-jupyter.x/jupyter.sock");
    }

    #[test]
    fn no_token_and_a_single_address() {
        let s = parse_server(
            r#"{"pid": 7, "port": 8888, "hostname": "10.0.0.5", "token": "", "base_url": ""}"#,
        )
        .unwrap();
        assert_eq!(s.token, None);
        assert_eq!(s.address, "10.0.0.5");
        assert_eq!(s.base_url, "/");
        let classic = parse_server(
            r#"{"pid": 8, "port": 8889, "notebook_dir": "/home/bob", "token": "t", "base_url": "/"}"#,
        )
        .unwrap();
        assert!(classic.classic);
        assert_eq!(classic.page(), "tree");
        assert_eq!(classic.root_dir, "/home/bob");
    }

    #[test]
    fn the_listing_keeps_live_servers_newest_first() {
        let mut l = Listing::default();
        for line in [
            "jupyter".to_string(),
            "dir /home/alice/.local/share/jupyter/runtime".to_string(),
            format!("server 1 {SOCK}"),
            format!("server 0 {TCP}"),
            "server 1 {not json".to_string(),
            format!("server 1 {SOCK}"),
            "done".to_string(),
        ] {
            l.push(&line);
        }
        assert!(l.jupyter && l.done);
        assert_eq!(l.dirs, ["/home/alice/.local/share/jupyter/runtime"]);
        let pids: Vec<u32> = l.servers.iter().map(|s| s.pid).collect();
        assert_eq!(
            pids,
            [23401],
            "the dead and the unreadable are left out, each pid once"
        );
        assert_eq!(l.stale, 2);
        assert_eq!(l.problem, None);
    }

    #[test]
    fn a_started_server_and_problems() {
        let mut l = Listing::default();
        l.push(&format!("server 1 {TCP}"));
        l.push("started 23398");
        assert_eq!(l.started_server().map(|s| s.port), Some(35441));
        let mut l = Listing::default();
        l.push("no-jupyter");
        l.push("log boom");
        assert_eq!(l.problem, Some(("no-jupyter".into(), String::new())));
        assert_eq!(l.log, ["boom"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_scripts_are_valid_shell() {
        let scripts = [
            Script::default(),
            Script {
                start: Some(Listen::Socket),
                env: Some("~/venvs/lab"),
                dir: Some("~/work"),
                skip: Some(42),
            },
            Script {
                start: Some(Listen::Tcp),
                env: Some("ml"),
                dir: None,
                skip: None,
            },
        ];
        for script in scripts {
            let text = script.render();
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &text])
                .output()
                .expect("sh");
            assert!(out.status.success(), "{out:?}\n{text}");
        }
    }

    /// The listing part, run for real against a runtime directory with a live and a dead server.
    #[cfg(unix)]
    #[test]
    fn the_list_script_reads_a_runtime_dir() {
        let home = tempfile::tempdir().unwrap();
        let rt = home.path().join("rt");
        std::fs::create_dir(&rt).unwrap();
        let me = std::process::id();
        let live = TCP.replace("23398", &me.to_string()).replace("  ", "\n  ");
        std::fs::write(rt.join(format!("jpserver-{me}.json")), live).unwrap();
        std::fs::write(
            rt.join("jpserver-999999999.json"),
            SOCK.replace("23401", "999999999"),
        )
        .unwrap();
        std::fs::write(rt.join("jupyter_cookie_secret"), "x").unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", &Script::default().render()])
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .env("JUPYTER_RUNTIME_DIR", &rt)
            .output()
            .expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut l = Listing::default();
        for line in stdout.lines() {
            l.push(line.strip_prefix(MARK).expect("marked").trim_start());
        }
        assert!(l.done, "{stdout}");
        assert_eq!(l.servers.len(), 1, "{stdout}");
        assert_eq!(l.servers[0].pid, me);
        assert_eq!(l.stale, 1);
        assert_eq!(l.dirs, [rt.display().to_string()]);
    }
}
