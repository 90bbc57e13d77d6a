//! The watchdog's script (POSIX sh) and its few words.
//!
//! It reports `watching` (or why it cannot), and after that prints nothing but the answer to
//! `now`: its stdout and stderr go to /dev/null, the channel is kept on fd 3 for that one
//! answer, and SIGHUP and SIGPIPE are ignored, so that a connection gone cannot stop it. The
//! undo command's output goes to a log in the state folder, read for the answer to `now` and
//! removed.

use crate::laptop::ssh::exec::sh_quote;

use super::Guard;

/// The mark of the script's lines.
pub(super) const MARK: &str = "podtun-watch:";
/// The state folder of every watchdog, under `$HOME`.
pub(super) const STATE_DIR: &str = ".cache/podtun/watch";
/// The longest pause between two looks at the heartbeats; shorter for a shorter grace.
const LOOK_EVERY_SECS: u64 = 5;

/// The script for `guard`.
pub(super) fn render(guard: &Guard) -> String {
    let grace = guard.grace.as_secs().max(1);
    format!(
        r#"umask 077
M={mark}
key={key}
undo={undo}
needs={needs}
grace={grace}
every={every}
d="$HOME/{STATE_DIR}"
mkdir -p "$d" && chmod 700 "$d" || {{ echo "$M no-dir $d"; exit 3; }}
if [ -n "$needs" ]; then
  command -v "$needs" >/dev/null 2>&1 || {{ echo "$M no-command $needs"; exit 3; }}
fi
tag="$(uname -n 2>/dev/null).$$"
me="$tag $(date +%s)"
owner="$d/$key.watch"
beat="$d/$key.$tag.beat"
log="$d/$key.$tag.log"
echo "$me" >"$owner.$tag" && mv -f "$owner.$tag" "$owner" || {{ echo "$M no-dir $d"; exit 3; }}
ours() {{ [ "$(cat "$owner" 2>/dev/null)" = "$me" ]; }}
run_undo() {{ ( eval "$undo" ) </dev/null >"$log" 2>&1 3>&-; rc=$?; }}
trap '' HUP PIPE
echo "$M watching"
exec 3>&1 >/dev/null 2>&1
main=$$
( seen=$(date +%s)
  while sleep "$every"; do
    ours || {{ kill -TERM "$main" 2>/dev/null; exit 0; }}
    now=$(date +%s)
    if [ -e "$beat" ]; then rm -f "$beat"; seen=$now; fi
    if [ $((now - seen)) -ge "$grace" ]; then
      if ours; then run_undo; rm -f "$owner" "$log"; fi
      kill -TERM "$main" 2>/dev/null
      exit 0
    fi
  done ) </dev/null 3>&- &
wd=$!
trap 'rm -f "$beat"; exit 0' TERM
while IFS= read -r line; do
  case $line in
    bye)
      kill "$wd" 2>/dev/null
      rm -f "$beat"
      ours && rm -f "$owner"
      exit 0 ;;
    now)
      kill "$wd" 2>/dev/null
      rm -f "$beat"
      run_undo
      last=$(tail -n 1 "$log" 2>/dev/null)
      rm -f "$owner" "$log"
      echo "$M undone $rc $last" >&3
      exit 0 ;;
    *) : >"$beat" ;;
  esac
done
wait "$wd"
rm -f "$beat"
"#,
        mark = sh_quote(MARK),
        key = sh_quote(&guard.key),
        undo = sh_quote(&guard.undo),
        needs = sh_quote(guard.needs.as_deref().unwrap_or_default()),
        every = grace.min(LOOK_EVERY_SECS),
    )
}

/// Why the script could not start, from its line (`no-dir PATH`, `no-command NAME`).
pub(super) fn start_failure(line: &str) -> String {
    if let Some(dir) = line.strip_prefix("no-dir ") {
        format!("cannot write to `{dir}`")
    } else if let Some(name) = line.strip_prefix("no-command ") {
        format!("`{name}` is not on its PATH (in a login shell)")
    } else {
        format!("it said `{line}`")
    }
}

/// The answer to `now` (`undone STATUS LAST-LINE`): `Ok` with its last line of output when the
/// undo command succeeded, else its exit status and last line.
pub(super) fn undone(line: &str) -> Result<String, String> {
    let Some(rest) = line.strip_prefix("undone ") else {
        return Err(format!("got the answer `{line}`"));
    };
    let (status, last) = rest.split_once(' ').unwrap_or((rest, ""));
    match (status, last.trim()) {
        ("0", last) => Ok(last.to_string()),
        (status, "") => Err(format!("exited with status {status}")),
        (status, last) => Err(format!("exited with status {status}: {last}")),
    }
}

#[cfg(all(test, unix))]
mod tests;
