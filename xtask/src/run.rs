//! Running cargo as a child process: streamed to the terminal and captured at once.
//!
//! The test and bench commands must show cargo's output live (a suite takes minutes) and
//! also parse it afterwards, so each of the child's stdout and stderr is read by its own
//! thread that echoes every line and keeps a copy. Two threads rather than one because a
//! child blocked writing to a full stderr pipe would never finish its stdout.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;

/// What a finished child printed and how it ended.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output, one entry per line, without line endings.
    pub stdout: Vec<String>,
    /// Its standard error, likewise.
    pub stderr: Vec<String>,
}

impl Captured {
    /// Both streams' lines; the relative order between the two streams is lost, which the
    /// summary parsers do not need.
    pub(crate) fn lines(&self) -> impl Iterator<Item = &str> {
        self.stdout
            .iter()
            .chain(self.stderr.iter())
            .map(String::as_str)
    }
}

/// The cargo binary to run: the one that launched xtask (cargo sets `CARGO` for
/// `cargo run`), so a pinned toolchain stays pinned for the nested builds.
pub(crate) fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Ask cargo (and nextest, which follows the same variable) for colours when xtask
/// itself writes to a terminal: their output is piped through xtask, so they would
/// otherwise turn colours off. An explicit `CARGO_TERM_COLOR` is respected.
pub(crate) fn color_env() -> Vec<(String, String)> {
    if std::env::var_os("CARGO_TERM_COLOR").is_none() && io::stdout().is_terminal() {
        vec![("CARGO_TERM_COLOR".to_owned(), "always".to_owned())]
    } else {
        Vec::new()
    }
}

/// Run `program args` in `dir` with `envs` added, echoing its output while capturing it.
///
/// # Errors
/// When the program cannot be started or waited for.
pub(crate) fn tee<I, S>(
    program: &OsStr,
    args: I,
    dir: &Path,
    envs: &[(String, String)],
) -> io::Result<Captured>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_captured(program, args, dir, envs, true)
}

fn run_captured<I, S>(
    program: &OsStr,
    args: I,
    dir: &Path,
    envs: &[(String, String)],
    echo: bool,
) -> io::Result<Captured>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child
        .stdout
        .take()
        .map(|s| thread::spawn(move || pump(s, echo.then(io::stdout))));
    let err = child
        .stderr
        .take()
        .map(|s| thread::spawn(move || pump(s, echo.then(io::stderr))));
    let status = child.wait()?;
    let join = |h: Option<thread::JoinHandle<Vec<String>>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok(Captured {
        status,
        stdout: join(out),
        stderr: join(err),
    })
}

/// Copy `src` to `sink` line by line and return the lines (lossily decoded: test output
/// may contain arbitrary bytes, and a decoding error must not hide the summary).
fn pump(src: impl Read, mut sink: Option<impl Write>) -> Vec<String> {
    let mut reader = BufReader::new(src);
    let mut lines = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                // The terminal may have gone away (e.g. `| head`); keep draining the pipe
                // regardless so the child is never blocked on a full pipe.
                if let Some(sink) = sink.as_mut() {
                    let _ = sink.write_all(&buf).and_then(|()| sink.flush());
                }
                let text = String::from_utf8_lossy(&buf);
                lines.push(text.trim_end_matches(['\n', '\r']).to_owned());
            }
        }
    }
    lines
}

/// Render a command line for progress messages, quoting arguments that need it.
pub(crate) fn display_command<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    let mut out = program.to_owned();
    for arg in args {
        let arg = arg.as_ref();
        out.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
        if plain {
            out.push_str(arg);
        } else {
            out.push('\'');
            out.push_str(&arg.replace('\'', r"'\''"));
            out.push('\'');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_odd_arguments() {
        assert_eq!(
            display_command("cargo", &["test", "--", "a b", "it's"]),
            r"cargo test -- 'a b' 'it'\''s'"
        );
    }

    #[test]
    fn tee_captures_both_streams() {
        let got = run_captured(
            OsStr::new("sh"),
            [
                "-c",
                "echo out1; echo err1 >&2; printf \"out2 $XTASK_TEST_VAR\"",
            ],
            Path::new("."),
            &[("XTASK_TEST_VAR".into(), "v".into())],
            false,
        )
        .unwrap();
        assert!(got.status.success());
        assert_eq!(got.stdout, ["out1", "out2 v"]);
        assert_eq!(got.stderr, ["err1"]);
    }
}
