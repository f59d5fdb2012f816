//! What `cargo metadata` says about the workspace: its members, their targets, and the
//! target directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::run;

/// The part of `cargo metadata --format-version 1 --no-deps` that xtask reads.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Metadata {
    /// Every package of the workspace (with `--no-deps`, only those).
    pub packages: Vec<Package>,
    /// The ids of the workspace's members (the root package included, if it has one).
    pub workspace_members: Vec<String>,
    /// Where cargo builds (`CARGO_TARGET_DIR` or `build.target-dir` already applied).
    pub target_directory: PathBuf,
}

/// One package.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Package {
    /// Its name.
    pub name: String,
    /// Its id, as listed in [`Metadata::workspace_members`].
    pub id: String,
    /// Its `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// Its build targets.
    pub targets: Vec<Target>,
}

/// One build target of a package.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Target {
    /// Its name.
    pub name: String,
    /// Its kinds: `lib`, `bin`, `proc-macro`, `test`, `bench`, `example`, `custom-build`, ...
    pub kind: Vec<String>,
    /// Its crate root.
    pub src_path: PathBuf,
}

impl Metadata {
    /// Parse `cargo metadata`'s output.
    ///
    /// # Errors
    /// When the text is not the JSON cargo prints.
    pub(crate) fn parse(text: &str) -> Result<Metadata, String> {
        serde_json::from_str(text).map_err(|e| format!("cargo metadata: {e}"))
    }

    /// Run `cargo metadata --no-deps` in `root` (with cargo's own environment).
    ///
    /// # Errors
    /// When cargo cannot be run, fails, or prints something else than expected.
    pub(crate) fn load(root: &Path) -> Result<Metadata, String> {
        let output = Command::new(run::cargo())
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(root)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
        if !output.status.success() {
            return Err(format!("cargo metadata failed ({})", output.status));
        }
        Metadata::parse(&String::from_utf8_lossy(&output.stdout))
    }

    /// The workspace's member packages, in `workspace_members` order.
    pub(crate) fn members(&self) -> Vec<&Package> {
        self.workspace_members
            .iter()
            .filter_map(|id| self.packages.iter().find(|p| &p.id == id))
            .collect()
    }
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else what `cargo metadata` says (it
/// knows about `build.target-dir` in config files), else `<root>/target`.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        // cargo resolves a relative CARGO_TARGET_DIR against its working directory,
        // which is ours.
        let dir = PathBuf::from(dir);
        return std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or(dir);
    }
    Metadata::load(root)
        .map(|m| m.target_directory)
        .unwrap_or_else(|_| root.join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_members_and_targets() {
        let text = r#"{
          "packages": [
            {"name": "xtask", "id": "path+file:///w/xtask#0.1.0", "version": "0.1.0",
             "manifest_path": "/w/xtask/Cargo.toml",
             "targets": [{"name": "xtask", "kind": ["bin"], "crate_types": ["bin"],
                          "src_path": "/w/xtask/src/main.rs", "edition": "2024"}]},
            {"name": "brood", "id": "path+file:///w#0.1.0",
             "manifest_path": "/w/Cargo.toml",
             "targets": [{"name": "brood", "kind": ["lib"], "src_path": "/w/src/lib.rs"},
                         {"name": "build-script-build", "kind": ["custom-build"],
                          "src_path": "/w/build.rs"}]}
          ],
          "workspace_members": ["path+file:///w#0.1.0", "path+file:///w/xtask#0.1.0"],
          "target_directory": "/w/target",
          "version": 1
        }"#;
        let meta = Metadata::parse(text).unwrap();
        assert_eq!(meta.target_directory, PathBuf::from("/w/target"));
        let names: Vec<&str> = meta.members().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["brood", "xtask"]);
        assert_eq!(meta.packages[1].targets[1].kind, ["custom-build"]);
        assert!(Metadata::parse("{\"packages\": 3}").is_err());
    }
}
