//! The CPython tier a test matrix runs against.
//!
//! 3.11 is the system interpreter and needs nothing. 3.14 comes from the shared
//! `python314-sysroot.sh`, which provisions a private sysroot and prints `export` lines
//! for the build. Those are parsed here rather than `eval`ed by a shell so that they
//! reach only the cargo commands of the matrix: xtask's own environment, and so any
//! python3 it might start, stays untouched (the exports set `PYTHONHOME`, which breaks the
//! system interpreter).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::ValueEnum;

use crate::error::Error;

/// Which CPython the tests build and run against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum PythonTier {
    /// The system `python3` (3.11): the environment is left as it is.
    #[default]
    #[value(name = "3.11")]
    Py311,
    /// CPython 3.14 from the shared sysroot script.
    #[value(name = "3.14")]
    Py314,
}

impl PythonTier {
    /// The tier's version, as the user spells it.
    pub(crate) fn version(self) -> &'static str {
        match self {
            PythonTier::Py311 => "3.11",
            PythonTier::Py314 => "3.14",
        }
    }
}

/// Environment variable that overrides where the 3.14 sysroot script is.
pub(crate) const SCRIPT_OVERRIDE_VAR: &str = "BROOD_PY314_SYSROOT_SCRIPT";

/// The variables the tier needs in the cargo commands' environment.
///
/// # Errors
/// [`Error::Failed`] when the 3.14 script is missing, fails, or prints something that is
/// not an `export` line.
pub(crate) fn provision(tier: PythonTier, root: &Path) -> Result<Vec<(String, String)>, Error> {
    match tier {
        PythonTier::Py311 => Ok(Vec::new()),
        PythonTier::Py314 => provision_314(root),
    }
}

fn script_path(root: &Path) -> PathBuf {
    match std::env::var_os(SCRIPT_OVERRIDE_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => root.join("../shared/tools/python314-sysroot.sh"),
    }
}

fn provision_314(root: &Path) -> Result<Vec<(String, String)>, Error> {
    let script = script_path(root);
    if !script.is_file() {
        return Err(Error::Failed(format!(
            "CPython 3.14 sysroot script not found at {} (set {SCRIPT_OVERRIDE_VAR} to its path)",
            script.display()
        )));
    }
    println!("provisioning CPython 3.14 (first time takes ~10 s)");
    // The script works out the target dir from the cargo workspace it runs in, hence the
    // workspace root as working directory; its progress goes to stderr, shown as is.
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Failed(format!("cannot run bash {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(Error::Failed(format!(
            "{} failed ({})",
            script.display(),
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_exports(&stdout).map_err(|e| Error::Failed(format!("{}: {e}", script.display())))
}

/// Parse lines of `export NAME='value'` (comments and blank lines allowed) into pairs.
///
/// Values may use the quoting a POSIX shell would accept for a single word: single
/// quotes, double quotes with backslash escapes, and backslash escapes outside quotes,
/// concatenated (so `'it'\''s'` is `it's`). Expansions (`$X`, backticks) are rejected, as
/// nothing here could evaluate them the way a shell would.
///
/// # Errors
/// A message naming the line that is not such an export.
pub(crate) fn parse_exports(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |msg: &str| format!("line {}: {msg}: {line}", index + 1);
        let rest = line
            .strip_prefix("export")
            .filter(|r| r.starts_with([' ', '\t']))
            .ok_or_else(|| at("expected `export NAME=value`"))?
            .trim_start();
        let (name, value) = rest
            .split_once('=')
            .ok_or_else(|| at("expected `export NAME=value`"))?;
        if !is_var_name(name) {
            return Err(at("invalid variable name"));
        }
        let value = shell_word(value).map_err(|e| at(&e))?;
        vars.push((name.to_owned(), value));
    }
    Ok(vars)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Unquote one shell word; whitespace may only be followed by a `#` comment.
fn shell_word(input: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => return Err("unterminated single quote".into()),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => out.push(c),
                        Some(c) => {
                            out.push('\\');
                            out.push(c);
                        }
                        None => return Err("unterminated double quote".into()),
                    },
                    Some('$' | '`') => return Err("shell expansion is not supported".into()),
                    Some(c) => out.push(c),
                    None => return Err("unterminated double quote".into()),
                }
            },
            '\\' => match chars.next() {
                Some(c) => out.push(c),
                None => return Err("trailing backslash".into()),
            },
            '$' | '`' => return Err("shell expansion is not supported".into()),
            c if c.is_whitespace() => {
                let rest = chars.as_str().trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err("more than one word after `=`".into());
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scripts_exports() {
        let text = "\
export PY314_SYSROOT='/root/.cache/py314-sysroot'
export PYO3_CONFIG_FILE='/root/.cache/py314-sysroot/pyo3-config.txt'
export RUSTFLAGS='-C link-arg=-Wl,--dynamic-linker=/x/ld.so -C link-arg=-Wl,-rpath,/x/lib'
# not inside a cargo workspace: choose a separate target dir, e.g. export CARGO_TARGET_DIR=$PWD/x

export CARGO_TARGET_DIR='/work/target/py314'
";
        let vars = parse_exports(text).unwrap();
        assert_eq!(vars.len(), 4);
        assert_eq!(
            vars[0],
            ("PY314_SYSROOT".into(), "/root/.cache/py314-sysroot".into())
        );
        assert_eq!(
            vars[2].1,
            "-C link-arg=-Wl,--dynamic-linker=/x/ld.so -C link-arg=-Wl,-rpath,/x/lib"
        );
        assert_eq!(vars[3].0, "CARGO_TARGET_DIR");
    }

    #[test]
    fn shell_quoting() {
        let vars = parse_exports(
            "export A='it'\\''s'\nexport B=\"x \\\"y\\\" \\n\"\nexport C=plain\\ word # note\n\
             export D=\nexport\tE=''",
        )
        .unwrap();
        assert_eq!(
            vars,
            [
                ("A".to_owned(), "it's".to_owned()),
                ("B".to_owned(), "x \"y\" \\n".to_owned()),
                ("C".to_owned(), "plain word".to_owned()),
                ("D".to_owned(), String::new()),
                ("E".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn rejects_what_it_cannot_apply() {
        for bad in [
            "unset RUSTFLAGS",
            "exportX=1",
            "export 1X=1",
            "export X",
            "export X='open",
            "export X=\"open",
            "export X=$HOME",
            "export X=\"$HOME\"",
            "export X=a b",
            "export X=a\\",
        ] {
            let err = parse_exports(bad).unwrap_err();
            assert!(err.starts_with("line 1:"), "{bad}: {err}");
        }
    }
}
