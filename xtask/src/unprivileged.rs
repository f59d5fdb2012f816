//! The sandbox tests again, as an unprivileged user.
//!
//! A sandboxed process actor is set up differently by root (who may create every
//! namespace directly) and by an ordinary user (who needs a user namespace first), so the
//! `sandbox::` tests of the integration suite must pass both ways. The matrix's cells run
//! them as whoever runs `cargo xtask test`; CI runs as root, so after the cells the matrix
//! runs them once more as the system user [`USER`], which it creates if needed (see
//! `matrix.rs`). This module has the pieces: who we are, the user, the suite binary, a
//! place the user can run it from, and the command that switches to the user.
//!
//! The suite binary is run directly (not through nextest: nextest would have to run as
//! the user too, with a cargo home and target dir it can read) with libtest's substring
//! filter [`FILTER`]; its counts come from libtest's `test result:` line.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::run::{self, Captured};

/// The system user the sandbox tests run as.
pub(crate) const USER: &str = "brood-sbx";

/// The tests run as [`USER`]: libtest's substring filter.
pub(crate) const FILTER: &str = "sandbox::";

/// The backends whose actors can be sandboxed (processes); the others refuse a sandbox.
pub(crate) const BACKENDS: &[&str] = &["proc", "fork"];

/// Variables of xtask's own environment handed to the tests as they are (when set).
const PASSED_THROUGH: &[&str] = &[
    "BROOD_TEST_TIME_SCALE",
    "BROOD_LOG",
    "RUST_BACKTRACE",
    "RUST_LOG",
    "LANG",
    "LC_ALL",
    "TERM",
];

/// The effective uid of this process, from `/proc/self/status`.
pub(crate) fn effective_uid() -> Option<u32> {
    parse_euid(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The effective uid in the text of `/proc/<pid>/status`: its `Uid:` line lists the
/// real, effective, saved and filesystem uids.
fn parse_euid(status: &str) -> Option<u32> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A user account: its name and ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Account {
    /// Its login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

/// The account `name`, created first as a system user without a home or a login shell
/// if it does not exist (which needs root). An existing account is used as it is.
///
/// # Errors
/// When `useradd` is missing or fails, or `id` cannot tell the account's ids.
pub(crate) fn ensure_user(name: &str) -> Result<Account, String> {
    if let Some(account) = lookup_user(name) {
        return Ok(account);
    }
    let shell = ["/usr/sbin/nologin", "/sbin/nologin"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/bin/false");
    let args = ["--system", "--no-create-home", "--shell", shell, name];
    println!(
        "creating user {name}: {}",
        run::display_command("useradd", &args)
    );
    let output = Command::new("useradd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run useradd to create user {name}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "useradd {name} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    lookup_user(name).ok_or_else(|| format!("user {name} still unknown after useradd"))
}

fn lookup_user(name: &str) -> Option<Account> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id")
            .args([flag, name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some(Account {
        name: name.to_owned(),
        uid: id("-u")?,
        gid: id("-g")?,
    })
}

/// The path of the integration suite's test binary (`harness`'s test target `suite`), as
/// `cargo test --workspace --no-run` builds it: the same build as the cells', so nothing
/// is rebuilt. `env`: the cells' environment (the Python tier's variables).
///
/// # Errors
/// When cargo cannot be run, fails (the build is broken), or names no such binary.
pub(crate) fn suite_binary(root: &Path, env: &[(String, String)]) -> Result<PathBuf, String> {
    let output = Command::new(run::cargo())
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(root)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo test --no-run: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the suite failed (cargo test --no-run: {})",
            output.status
        ));
    }
    find_suite_executable(&String::from_utf8_lossy(&output.stdout))
        .ok_or_else(|| "cargo built no test binary `suite` of package harness".to_owned())
}

/// The part of a cargo JSON message read here.
#[derive(Debug, Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    target: Option<ArtifactTarget>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct ArtifactTarget {
    name: String,
    kind: Vec<String>,
}

/// In cargo's `--message-format json` output, the executable of the test target `suite`
/// of the package `harness`.
fn find_suite_executable(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Message>(line).ok())
        .filter(|m| m.reason == "compiler-artifact" && package_name(&m.package_id) == "harness")
        .filter(|m| {
            m.target
                .as_ref()
                .is_some_and(|t| t.name == "suite" && t.kind.iter().any(|k| k == "test"))
        })
        .find_map(|m| m.executable)
}

/// The package name in a cargo package id: `path+file:///w/crates/harness#0.1.0` (the
/// directory is the name), `path+file:///w/dir#harness@0.1.0`, or the old form
/// `harness 0.1.0 (path+file:///w/crates/harness)`.
fn package_name(id: &str) -> &str {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        match fragment.split_once('@') {
            Some((name, _)) => name,
            None => url.rsplit('/').next().unwrap_or(url),
        }
    } else {
        id.split(' ').next().unwrap_or(id)
    }
}

/// How to run a command as another user: `setpriv` (util-linux) or, without it,
/// `runuser`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Switch {
    program: PathBuf,
    setpriv: bool,
}

impl Switch {
    /// `setpriv` if found in `PATH` or the usual directories, else `runuser`.
    pub(crate) fn find() -> Option<Switch> {
        if let Some(program) = find_program("setpriv") {
            return Some(Switch {
                program,
                setpriv: true,
            });
        }
        find_program("runuser").map(|program| Switch {
            program,
            setpriv: false,
        })
    }

    /// The program to run.
    pub(crate) fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments before the command to run as `account`: only its uid, gid and no
    /// supplementary groups (and so, as it is not root, no capabilities).
    pub(crate) fn args(&self, account: &Account) -> Vec<String> {
        if self.setpriv {
            vec![
                format!("--reuid={}", account.uid),
                format!("--regid={}", account.gid),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ]
        } else {
            vec!["-u".to_owned(), account.name.clone(), "--".to_owned()]
        }
    }

    /// Run `command` as `account` in `dir`, quietly; its exit status and stdout.
    fn output<S: AsRef<OsStr>>(
        &self,
        account: &Account,
        dir: &Path,
        command: &[S],
    ) -> Option<(bool, String)> {
        let output = Command::new(&self.program)
            .args(self.args(account))
            .args(command)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        Some((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ))
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A private directory the user can run the suite from: a home for it (its working
/// directory, `HOME`, where the skip report goes), and copies of the binary and of the
/// shared libraries it cannot reach where they were built or installed (a target dir
/// under `/root`, a Python under `/root/.pyenv`). Removed when dropped.
#[derive(Debug)]
pub(crate) struct Stage {
    dir: PathBuf,
    /// The binary to run: the built one, or its copy.
    pub binary: PathBuf,
    /// The user's home and working directory, owned by it.
    pub home: PathBuf,
    /// The directory of copied libraries, for `LD_LIBRARY_PATH`, if any were copied.
    pub lib_dir: Option<PathBuf>,
    /// What was copied and why, to print.
    pub notes: Vec<String>,
}

impl Stage {
    /// Make `binary` runnable by `account`.
    ///
    /// # Errors
    /// When the directory cannot be made, or the binary or a library it links stays out
    /// of the user's reach.
    pub(crate) fn prepare(
        binary: &Path,
        account: &Account,
        switch: &Switch,
    ) -> Result<Stage, String> {
        let dir = std::env::temp_dir().join(format!("brood-sbx-{}", std::process::id()));
        let io = |what: &str, path: &Path, e: std::io::Error| {
            format!("cannot {what} {}: {e}", path.display())
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| io("create", &dir, e))?;
        let mut stage = Stage {
            home: dir.join("home"),
            binary: binary.to_owned(),
            lib_dir: None,
            notes: Vec::new(),
            dir,
        };
        set_mode(&stage.dir, 0o755).map_err(|e| io("chmod", &stage.dir, e))?;
        std::fs::create_dir(&stage.home).map_err(|e| io("create", &stage.home, e))?;
        std::os::unix::fs::chown(&stage.home, Some(account.uid), Some(account.gid))
            .map_err(|e| io("chown", &stage.home, e))?;
        set_mode(&stage.home, 0o700).map_err(|e| io("chmod", &stage.home, e))?;

        let can_run = |path: &Path| {
            switch
                .output(
                    account,
                    &stage.home,
                    &[OsStr::new("test"), OsStr::new("-x"), path.as_os_str()],
                )
                .is_some_and(|(ok, _)| ok)
        };
        if !can_run(binary) {
            let copy = stage.dir.join("suite");
            std::fs::copy(binary, &copy).map_err(|e| io("copy the suite binary to", &copy, e))?;
            set_mode(&copy, 0o755).map_err(|e| io("chmod", &copy, e))?;
            stage.notes.push(format!(
                "{} is out of {}'s reach: running a copy, {}",
                binary.display(),
                account.name,
                copy.display()
            ));
            stage.binary = copy;
            if !can_run(&stage.binary) {
                return Err(format!(
                    "{} cannot execute {} either (is {} traversable by others?)",
                    account.name,
                    stage.binary.display(),
                    stage.dir.display()
                ));
            }
        }

        // The libraries the user's loader cannot find (e.g. a RUNPATH under /root):
        // copies of the ones root's loader finds, on LD_LIBRARY_PATH.
        let missing = stage.missing_libraries(account, switch);
        if !missing.is_empty() {
            let lib_dir = stage.dir.join("lib");
            std::fs::create_dir(&lib_dir).map_err(|e| io("create", &lib_dir, e))?;
            set_mode(&lib_dir, 0o755).map_err(|e| io("chmod", &lib_dir, e))?;
            let ldd = Command::new("ldd")
                .arg(&stage.binary)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run ldd: {e}"))?;
            let resolved = parse_ldd(&String::from_utf8_lossy(&ldd.stdout));
            for name in &missing {
                let Some(Some(path)) = resolved.iter().find(|(n, _)| n == name).map(|(_, p)| p)
                else {
                    return Err(format!("library {name} is not found as root either"));
                };
                let copy = lib_dir.join(name);
                std::fs::copy(path, &copy).map_err(|e| io("copy a library to", &copy, e))?;
                set_mode(&copy, 0o755).map_err(|e| io("chmod", &copy, e))?;
                stage.notes.push(format!(
                    "{} is out of {}'s reach: using a copy, {}",
                    path.display(),
                    account.name,
                    copy.display()
                ));
            }
            stage.lib_dir = Some(lib_dir);
            let still = stage.missing_libraries(account, switch);
            if !still.is_empty() {
                return Err(format!(
                    "{} cannot load {} even from copies",
                    account.name,
                    still.join(", ")
                ));
            }
        }
        Ok(stage)
    }

    /// The libraries of the binary that the user's loader does not find.
    fn missing_libraries(&self, account: &Account, switch: &Switch) -> Vec<String> {
        let mut command: Vec<&OsStr> = vec![OsStr::new("env")];
        let lib_var;
        if let Some(lib_dir) = &self.lib_dir {
            lib_var = format!("LD_LIBRARY_PATH={}", lib_dir.display());
            command.push(OsStr::new(&lib_var));
        }
        command.extend([OsStr::new("ldd"), self.binary.as_os_str()]);
        match switch.output(account, &self.home, &command) {
            Some((_, text)) => parse_ldd(&text)
                .into_iter()
                .filter(|(_, path)| path.is_none())
                .map(|(name, _)| name)
                .collect(),
            // No ldd: the run itself will tell.
            None => Vec::new(),
        }
    }

    /// Where the harness writes the skips of a run for `backend`.
    pub(crate) fn skip_report(&self, backend: &str) -> PathBuf {
        self.home.join(format!("skips-{backend}.tsv"))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The libraries in `ldd`'s output, each with where it was found (`None`: not found).
/// Lines without `=>` (the vDSO, the loader itself) are left out.
fn parse_ldd(text: &str) -> Vec<(String, Option<PathBuf>)> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once("=>")?;
            let rest = rest.trim();
            let path = if rest.starts_with("not found") {
                None
            } else {
                let path = rest.split(" (").next().unwrap_or(rest).trim();
                (!path.is_empty()).then(|| PathBuf::from(path))
            };
            Some((name.trim().to_owned(), path))
        })
        .collect()
}

/// The whole environment of a run as the user (it starts from an empty one, so nothing
/// of root's leaks in: no `XDG_RUNTIME_DIR` or `BROOD_RUNTIME_DIR` under root's reach):
/// `PATH`, `HOME`, the cell, the skip report, the Python tier's runtime variables
/// (`tier`, without cargo's build variables) and the [`PASSED_THROUGH`] ones found by
/// `outer`.
pub(crate) fn child_env(
    backend: &str,
    transport: &str,
    stage: &Stage,
    tier: &[(String, String)],
    outer: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "PATH".to_owned(),
            outer("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ),
        ("HOME".to_owned(), stage.home.display().to_string()),
        ("BROOD_BACKEND".to_owned(), backend.to_owned()),
        ("BROOD_TRANSPORT".to_owned(), transport.to_owned()),
        (
            "BROOD_SKIP_REPORT".to_owned(),
            stage.skip_report(backend).display().to_string(),
        ),
    ];
    if let Some(lib_dir) = &stage.lib_dir {
        env.push(("LD_LIBRARY_PATH".to_owned(), lib_dir.display().to_string()));
    }
    env.extend(
        tier.iter()
            .filter(|(k, _)| !k.starts_with("CARGO") && !k.starts_with("RUST"))
            .cloned(),
    );
    for name in PASSED_THROUGH {
        if let Some(value) = outer(name) {
            env.push(((*name).to_owned(), value));
        }
    }
    env
}

/// The command line of a run: the switch, then `env -i` with `env`, the binary and the
/// filter.
pub(crate) fn command_args(
    switch: &Switch,
    account: &Account,
    stage: &Stage,
    env: &[(String, String)],
) -> Vec<String> {
    let mut args = switch.args(account);
    args.extend(["env".to_owned(), "-i".to_owned()]);
    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    args.push(stage.binary.display().to_string());
    args.push(FILTER.to_owned());
    args
}

/// Run the sandbox tests as the user: the output is shown as it comes and captured.
///
/// # Errors
/// When the switch program cannot be started.
pub(crate) fn run_tests(
    switch: &Switch,
    args: &[String],
    stage: &Stage,
) -> Result<Captured, String> {
    run::tee(switch.program().as_os_str(), args, &stage.home, &[])
        .map_err(|e| format!("cannot run {}: {e}", switch.program().display()))
}

/// The tests libtest reports as failed: its `test <name> ... FAILED` lines.
pub(crate) fn failed_tests<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    lines
        .into_iter()
        .filter_map(|line| {
            let plain = anstream::adapter::strip_str(line).to_string();
            let rest = plain.trim().strip_prefix("test ")?;
            let (name, outcome) = rest.rsplit_once(" ... ")?;
            (outcome.trim() == "FAILED").then(|| name.trim().to_owned())
        })
        .collect()
}

/// The lines of a skip report (`backend\ttransport\ttest\treason`) of tests that match
/// [`FILTER`], with the backend replaced by `label`: the harness reports the skips of
/// every test, filtered out or not, and the matrix shows these apart from the cells'.
pub(crate) fn relabel_skips(text: &str, label: &str) -> String {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once('\t')?;
            let test = rest.split('\t').nth(1)?;
            test.contains(FILTER).then(|| format!("{label}\t{rest}\n"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nUid:\t1000\t0\t0\t0\n\
                      Gid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_euid(status), Some(0));
        assert_eq!(parse_euid("Uid:\t1001\t1001\t1001\t1001\n"), Some(1001));
        assert_eq!(parse_euid("Name:\tx\n"), None);
        assert_eq!(parse_euid("Uid:\t1\n"), None);
        // This process has one.
        assert!(effective_uid().is_some());
    }

    #[test]
    fn finds_the_suite_binary_in_cargo_messages() {
        let messages = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/harness#0.1.0","target":{"name":"harness","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/other#0.1.0","target":{"name":"suite","kind":["test"]},"executable":"/w/target/debug/deps/suite-0000"}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/harness#0.1.0","target":{"name":"corpus","kind":["test"]},"executable":"/w/target/debug/deps/corpus-1111"}
{"reason":"compiler-message","package_id":"path+file:///w/crates/harness#0.1.0"}
not json
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/harness#0.1.0","target":{"name":"suite","kind":["test"]},"executable":"/w/target/debug/deps/suite-2222"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            find_suite_executable(messages),
            Some(PathBuf::from("/w/target/debug/deps/suite-2222"))
        );
        assert_eq!(find_suite_executable(""), None);
    }

    #[test]
    fn package_names_from_ids() {
        assert_eq!(
            package_name("path+file:///w/crates/harness#0.1.0"),
            "harness"
        );
        assert_eq!(package_name("path+file:///w/dir#harness@0.1.0"), "harness");
        assert_eq!(
            package_name("harness 0.1.0 (path+file:///w/crates/harness)"),
            "harness"
        );
    }

    #[test]
    fn reads_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibpython3.11.so.1.0 => not found\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f27)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f2a)\n";
        assert_eq!(
            parse_ldd(text),
            [
                ("libpython3.11.so.1.0".to_owned(), None),
                (
                    "libgcc_s.so.1".to_owned(),
                    Some(PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"))
                ),
            ]
        );
    }

    #[test]
    fn reads_failed_tests() {
        let out = "\
running 3 tests
test sandbox::the_network_is_unreachable ... ok
test sandbox::writes_outside_fail ... FAILED
test sandbox::no_caps ... \u{1b}[31mFAILED\u{1b}[0m
test sandbox::later ... ignored

failures:
    sandbox::writes_outside_fail
test result: FAILED. 1 passed; 2 failed; 1 ignored; 0 measured; 120 filtered out";
        assert_eq!(
            failed_tests(out.lines()),
            ["sandbox::writes_outside_fail", "sandbox::no_caps"]
        );
    }

    #[test]
    fn libtest_mimic_summary_is_read() {
        // What the suite prints (libtest-mimic), read by the matrix's libtest parser.
        let line = "test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 160 filtered \
                    out; finished in 2.31s";
        assert_eq!(
            crate::summary::parse_cargo_test([line]),
            Some(crate::summary::Counts {
                passed: 5,
                failed: 0,
                skipped: 1
            })
        );
    }

    #[test]
    fn relabels_matching_skips() {
        let text = "proc\tuds\tsandbox::cgroups\tno cgroup v2\n\
                    proc\tuds\tportal::big\tneeds 2 GiB\n\
                    garbage\n";
        assert_eq!(
            relabel_skips(text, "proc (unprivileged sandbox)"),
            "proc (unprivileged sandbox)\tuds\tsandbox::cgroups\tno cgroup v2\n"
        );
    }

    fn stage() -> Stage {
        Stage {
            dir: PathBuf::from("/nonexistent/brood-sbx-test"),
            binary: PathBuf::from("/s/suite"),
            home: PathBuf::from("/s/home"),
            lib_dir: Some(PathBuf::from("/s/lib")),
            notes: Vec::new(),
        }
    }

    #[test]
    fn the_child_environment_is_built_from_scratch() {
        let stage = stage();
        let tier = [
            ("PYTHONHOME".to_owned(), "/py/usr".to_owned()),
            ("CARGO_TARGET_DIR".to_owned(), "/t".to_owned()),
            ("RUSTFLAGS".to_owned(), "-C x".to_owned()),
        ];
        let outer = |name: &str| match name {
            "PATH" => Some("/usr/bin:/bin".to_owned()),
            "BROOD_TEST_TIME_SCALE" => Some("3".to_owned()),
            _ => None,
        };
        let env = child_env("fork", "uds", &stage, &tier, outer);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/usr/bin:/bin"));
        assert_eq!(get("HOME"), Some("/s/home"));
        assert_eq!(get("BROOD_BACKEND"), Some("fork"));
        assert_eq!(get("BROOD_TRANSPORT"), Some("uds"));
        assert_eq!(get("BROOD_SKIP_REPORT"), Some("/s/home/skips-fork.tsv"));
        assert_eq!(get("LD_LIBRARY_PATH"), Some("/s/lib"));
        assert_eq!(get("PYTHONHOME"), Some("/py/usr"));
        assert_eq!(get("BROOD_TEST_TIME_SCALE"), Some("3"));
        assert_eq!(get("CARGO_TARGET_DIR"), None);
        assert_eq!(get("RUSTFLAGS"), None);
        assert_eq!(get("XDG_RUNTIME_DIR"), None);
    }

    #[test]
    fn command_lines() {
        let stage = stage();
        let account = Account {
            name: USER.to_owned(),
            uid: 1001,
            gid: 1002,
        };
        let setpriv = Switch {
            program: "/usr/bin/setpriv".into(),
            setpriv: true,
        };
        let env = [("HOME".to_owned(), "/s/home".to_owned())];
        assert_eq!(
            command_args(&setpriv, &account, &stage, &env),
            [
                "--reuid=1001",
                "--regid=1002",
                "--clear-groups",
                "--",
                "env",
                "-i",
                "HOME=/s/home",
                "/s/suite",
                "sandbox::"
            ]
        );
        let runuser = Switch {
            program: "/usr/sbin/runuser".into(),
            setpriv: false,
        };
        assert_eq!(runuser.args(&account), ["-u", "brood-sbx", "--"]);
    }
}
