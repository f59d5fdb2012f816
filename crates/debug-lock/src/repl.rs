//! The small prompt `pause()` serves on the terminal while its actor holds the lock.
//!
//! It reads lines from any reader and writes to any writer, so it is tested with
//! scripted input; the facade hands it the terminal (`/dev/tty`).

use std::io::{self, BufRead, Write};

/// What the person at the prompt chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// `c`: go on.
    Continue,
    /// `q`: cancel this actor.
    Quit,
}

/// What the prompt shows about the paused actor.
#[derive(Clone, Debug)]
pub struct Paused {
    /// The actor's tree path.
    pub path: String,
    /// Its process id.
    pub pid: u32,
    /// The function of the call it is serving, if it serves one.
    pub call: Option<String>,
    /// Who made that call.
    pub caller: Option<String>,
    /// Why it stopped (`pause()`, or the error it is about to report).
    pub reason: String,
    /// Its backtrace where it stopped.
    pub backtrace: String,
    /// Its runtime vars, printed.
    pub vars: String,
}

const HELP: &str = "commands: c continue · bt backtrace · vars runtime vars · gdb attach a native debugger · q cancel this actor";

/// Serve the prompt until `c` or `q` (or the end of the input, which continues).
/// Ctrl-C arrives as a byte (the terminal's signals are off while the prompt runs) and
/// just shows the prompt again.
///
/// ```
/// use debug_lock::repl::{self, Paused, Resume};
/// let paused = Paused {
///     path: "root/w".into(), pid: 42, call: None, caller: None, reason: "pause()".into(),
///     backtrace: "frame 0".into(), vars: "debug_mode: true".into(),
/// };
/// let mut out = Vec::new();
/// let r = repl::serve(&b"bt\nc\n"[..], &mut out, &paused).unwrap();
/// assert_eq!(r, Resume::Continue);
/// let shown = String::from_utf8(out).unwrap();
/// assert!(shown.contains("root/w") && shown.contains("frame 0"));
/// ```
///
/// # Errors
/// The writer's or reader's I/O error.
pub fn serve(mut input: impl BufRead, mut out: impl Write, paused: &Paused) -> io::Result<Resume> {
    banner(&mut out, paused)?;
    let mut line = String::new();
    loop {
        write!(out, "(brood {}) ", paused.path)?;
        out.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            writeln!(out, "\n(end of input: continuing)")?;
            return Ok(Resume::Continue);
        }
        let cmd = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{3}');
        if line.contains('\u{3}') {
            writeln!(
                out,
                "^C (the tree's signals are held while you debug; c continues)"
            )?;
            continue;
        }
        match cmd {
            "" => {}
            "c" | "continue" => {
                writeln!(out, "continuing {}", paused.path)?;
                return Ok(Resume::Continue);
            }
            "q" | "quit" => {
                writeln!(out, "cancelling {}", paused.path)?;
                return Ok(Resume::Quit);
            }
            "bt" | "backtrace" => writeln!(out, "{}", paused.backtrace)?,
            "vars" => writeln!(out, "{}", paused.vars)?,
            "gdb" => {
                writeln!(
                    out,
                    "attach a native debugger from another terminal:\n    rust-gdb -p {pid}\n(or `gdb -p {pid}`, `lldb -p {pid}`); press Enter here when it has detached",
                    pid = paused.pid
                )?;
                out.flush()?;
                line.clear();
                input.read_line(&mut line)?;
            }
            "h" | "help" | "?" => writeln!(out, "{HELP}")?,
            other => writeln!(out, "unknown command {other:?}; {HELP}")?,
        }
    }
}

fn banner(out: &mut impl Write, p: &Paused) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "── brood debugger ── {} (pid {}) stopped: {}",
        p.path, p.pid, p.reason
    )?;
    match (&p.call, &p.caller) {
        (Some(f), Some(c)) => writeln!(out, "serving {f} for {c}")?,
        (Some(f), None) => writeln!(out, "serving {f}")?,
        (None, Some(c)) => writeln!(out, "serving a call from {c}")?,
        (None, None) => {}
    }
    writeln!(out, "{}", p.backtrace)?;
    writeln!(out, "{HELP}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused() -> Paused {
        Paused {
            path: "root/a".into(),
            pid: 7,
            call: Some("app.work".into()),
            caller: Some("root".into()),
            reason: "pause()".into(),
            backtrace: "BT".into(),
            vars: "VARS".into(),
        }
    }

    fn run(script: &str) -> (Resume, String) {
        let mut out = Vec::new();
        let r = serve(script.as_bytes(), &mut out, &paused()).unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn each_command_does_what_the_help_says() {
        let (r, out) = run("vars\nbt\nwat\n\ngdb\n\nq\n");
        assert_eq!(r, Resume::Quit);
        assert!(out.contains("VARS"));
        assert!(out.matches("BT").count() >= 2, "banner and bt");
        assert!(out.contains("unknown command \"wat\""));
        assert!(out.contains("rust-gdb -p 7"));
        assert!(out.contains("serving app.work for root"));
    }

    #[test]
    fn ctrl_c_stays_in_the_prompt_and_end_of_input_continues() {
        let (r, out) = run("\u{3}\n");
        assert_eq!(r, Resume::Continue);
        assert!(out.contains("^C"));
        assert!(out.contains("end of input"));
    }
}
