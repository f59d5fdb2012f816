//! `cargo xtask circles`: the module circles inside each crate of the workspace.
//!
//! A module circle (modules that use each other's items, directly or around a loop) makes
//! a crate readable only as a whole: no module of the circle can be understood, tested or
//! moved without the others. This command reads the module tree of every library and
//! binary of every workspace member (from `cargo metadata`, the root package included),
//! builds each crate's module dependency graph (see `circles/tree.rs` for what makes an
//! edge) and prints each strongly connected component of more than one module, with the
//! edges that tie it. It fails if there is any.
//!
//! The modules below are layered: `graph` (a graph and its strongly connected
//! components) at the bottom, `tree` (reading a crate's modules into a graph) above it,
//! and this module on top.

mod graph;
mod tree;

use std::fmt::Write as _;
use std::path::Path;

use self::tree::ModuleTree;
use crate::error::Error;
use crate::metadata::{Metadata, Package, Target};

/// What `cargo xtask circles` was asked to do.
#[derive(Clone, Debug, Default)]
pub(crate) struct CirclesOptions {
    /// Only these packages (default: every workspace member).
    pub packages: Vec<String>,
    /// Print, for each edge of a circle, the path that makes it.
    pub verbose: bool,
}

/// One crate to check: a library or binary target of a package.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CrateRoot {
    /// `package` or, for a package with several crates, `package (bin name)`.
    label: String,
    /// The crate root file.
    root_file: std::path::PathBuf,
}

/// The crates of `package` whose module trees are checked: its library, proc-macro and
/// binary targets with their root under the package's `src/` (tests, benches, examples
/// and build scripts are not module trees of the package's code).
fn crate_roots(package: &Package) -> Vec<CrateRoot> {
    let src = package
        .manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("src");
    let targets: Vec<&Target> = package
        .targets
        .iter()
        .filter(|t| {
            t.kind
                .iter()
                .any(|k| matches!(k.as_str(), "lib" | "rlib" | "proc-macro" | "bin"))
                && t.src_path.starts_with(&src)
        })
        .collect();
    let several = targets.len() > 1;
    targets
        .into_iter()
        .map(|t| {
            let label = if !several {
                package.name.clone()
            } else if t.kind.iter().any(|k| k == "bin") {
                format!("{} (bin {})", package.name, t.name)
            } else {
                format!("{} (lib)", package.name)
            };
            CrateRoot {
                label,
                root_file: t.src_path.clone(),
            }
        })
        .collect()
}

/// The report on one crate: its circles, and (verbose) the edges that make them.
/// File names are shown relative to `root`.
fn report(label: &str, tree: &ModuleTree, verbose: bool, root: &Path) -> (usize, String) {
    let graph = tree.graph();
    let circles = graph.circles();
    let mut out = String::new();
    for circle in &circles {
        let names: Vec<&str> = circle.iter().map(|&n| graph.name(n)).collect();
        let _ = writeln!(
            out,
            "{label}: circle of {} modules: {}",
            circle.len(),
            names.join(", ")
        );
        for &n in circle {
            let inside: Vec<(usize, &str)> = graph
                .successors(n)
                .filter(|(to, _)| circle.contains(to))
                .collect();
            if verbose {
                for (to, path) in inside {
                    let _ = writeln!(
                        out,
                        "    {} -> {}  ({path} in {})",
                        graph.name(n),
                        graph.name(to),
                        tree.file(n)
                            .strip_prefix(root)
                            .unwrap_or(tree.file(n))
                            .display()
                    );
                }
            } else {
                let targets: Vec<&str> = inside.iter().map(|&(to, _)| graph.name(to)).collect();
                let _ = writeln!(out, "    {} -> {}", graph.name(n), targets.join(", "));
            }
        }
    }
    (circles.len(), out)
}

/// Check every selected crate and print its circles; `Ok(true)` when there is none.
///
/// # Errors
/// [`Error::Usage`] for a package that is not a workspace member, [`Error::Failed`] when
/// `cargo metadata` fails or a source file cannot be read or parsed.
pub(crate) fn run(opts: &CirclesOptions, root: &Path) -> Result<bool, Error> {
    let metadata = Metadata::load(root).map_err(Error::Failed)?;
    let members = metadata.members();
    for wanted in &opts.packages {
        if !members.iter().any(|p| &p.name == wanted) {
            let known: Vec<&str> = members.iter().map(|p| p.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "no workspace member \"{wanted}\"; members: {}",
                known.join(", ")
            )));
        }
    }
    let mut crates = 0;
    let mut modules = 0;
    let mut circles = 0;
    let mut tangled = Vec::new();
    for package in members
        .into_iter()
        .filter(|p| opts.packages.is_empty() || opts.packages.contains(&p.name))
    {
        for krate in crate_roots(package) {
            let tree = ModuleTree::load(&krate.root_file).map_err(Error::Failed)?;
            for warning in &tree.warnings {
                println!("warning: {}: {warning}", krate.label);
            }
            let (found, text) = report(&krate.label, &tree, opts.verbose, root);
            print!("{text}");
            crates += 1;
            modules += tree.len();
            if found > 0 {
                circles += found;
                tangled.push(krate.label);
            }
        }
    }
    if circles == 0 {
        println!("no module circles ({crates} crates, {modules} modules)");
    } else {
        println!(
            "{circles} module circle{} in {} of {crates} crates: {}",
            if circles == 1 { "" } else { "s" },
            tangled.len(),
            tangled.join(", ")
        );
    }
    Ok(circles == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn target(name: &str, kind: &str, src: &str) -> Target {
        Target {
            name: name.into(),
            kind: vec![kind.into()],
            src_path: PathBuf::from(src),
        }
    }

    #[test]
    fn checks_libraries_and_binaries_under_src() {
        let package = Package {
            name: "p".into(),
            id: "p".into(),
            manifest_path: PathBuf::from("/w/p/Cargo.toml"),
            targets: vec![
                target("p", "lib", "/w/p/src/lib.rs"),
                target("tool", "bin", "/w/p/src/bin/tool.rs"),
                target("suite", "test", "/w/p/tests/suite/main.rs"),
                target("b", "bench", "/w/p/benches/b.rs"),
                target("build-script-build", "custom-build", "/w/p/build.rs"),
            ],
        };
        let labels: Vec<String> = crate_roots(&package).into_iter().map(|c| c.label).collect();
        assert_eq!(labels, ["p (lib)", "p (bin tool)"]);
        let single = Package {
            targets: vec![target("x", "bin", "/w/p/src/main.rs")],
            ..package
        };
        assert_eq!(crate_roots(&single)[0].label, "p");
    }
}
