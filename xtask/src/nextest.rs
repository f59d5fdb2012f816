//! nextest's structured output: the JUnit report of a run and the JSON test list.
//!
//! A cell run with nextest uses the profile [`PROFILE`] (`.config/nextest.toml`), which
//! writes a JUnit report of every test that ran: its binary, its name and, for a failure,
//! what kind of failure. The report leaves out the tests that did not run (ignored ones,
//! which is how the harness skips a test in a cell, and filtered-out ones), so the cell's
//! skipped count comes from `cargo nextest list --message-format json`: every test the
//! run could have run, less those in the report. That is nextest's own definition of
//! "skipped".
//!
//! The report is written to the store directory of a tool config file that xtask writes
//! ([`ToolConfig`]): a directory private to one xtask process, so two matrices running at
//! once on the same checkout (or with different target directories, as the Python tiers
//! have) never read each other's report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use serde::Deserialize;

use crate::summary::Counts;

/// The nextest profile of the matrix's cells, defined in `.config/nextest.toml` with its
/// `junit.path`.
pub(crate) const PROFILE: &str = "matrix";

/// The JUnit file name, as `[profile.matrix.junit] path` in `.config/nextest.toml`.
pub(crate) const JUNIT_FILE: &str = "junit.xml";

/// A test, as nextest names it: the test binary's id (e.g. `harness::suite`,
/// `spawn-api`) and the test's name within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TestId {
    /// The binary id: `<package>` for a library's unit tests, `<package>::<target>`
    /// for an integration test or a binary's.
    pub binary: String,
    /// The test's name within the binary.
    pub name: String,
}

/// How a test that ran ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Passed (possibly after retries: a flaky test passed in the end).
    Passed,
    /// Failed, timed out, or could not be started; the report's `type` (or `message`)
    /// attribute says which, e.g. `test failure with exit code 101`.
    Failed(String),
    /// Reported as skipped (nextest itself leaves skipped tests out of the report).
    Skipped,
}

/// One `<testcase>` of a JUnit report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TestCase {
    /// Which test.
    pub id: TestId,
    /// How it ended.
    pub outcome: Outcome,
}

/// Read a JUnit report: one entry per `<testcase>`, with the `name` of its enclosing
/// `<testsuite>` as the binary id. A test case with a `<failure>` or `<error>` child
/// failed; one with only `<flakyFailure>`/`<flakyError>` children passed on a retry.
///
/// # Errors
/// When the text is not well-formed XML, or a test case has no name.
pub(crate) fn parse_junit(text: &str) -> Result<Vec<TestCase>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut suite = String::new();
    let mut cases: Vec<TestCase> = Vec::new();
    // Whether we are inside an open (not self-closing) <testcase>.
    let mut in_case = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("JUnit report, byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(tag) | Event::Empty(tag) if tag.name().as_ref() == "testsuite" => {
                suite = attribute(&tag, "name")?.unwrap_or_default();
            }
            Event::Start(ref tag) | Event::Empty(ref tag) if tag.name().as_ref() == "testcase" => {
                let name = attribute(tag, "name")?.ok_or("a <testcase> without a name")?;
                cases.push(TestCase {
                    id: TestId {
                        binary: suite.clone(),
                        name,
                    },
                    outcome: Outcome::Passed,
                });
                in_case = matches!(event, Event::Start(_));
            }
            Event::End(tag) if tag.name().as_ref() == "testcase" => in_case = false,
            Event::Start(tag) | Event::Empty(tag) if in_case => {
                let Some(case) = cases.last_mut() else {
                    continue;
                };
                match tag.name().as_ref() {
                    "failure" | "error" => {
                        let kind = match attribute(&tag, "type")? {
                            Some(kind) if !kind.is_empty() => kind,
                            _ => attribute(&tag, "message")?.unwrap_or_default(),
                        };
                        case.outcome = Outcome::Failed(kind);
                    }
                    "skipped" if case.outcome == Outcome::Passed => {
                        case.outcome = Outcome::Skipped;
                    }
                    // flakyFailure, rerunFailure, system-out, properties, ...
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(cases)
}

/// The unescaped value of the attribute `name` of `tag`, if present.
fn attribute(tag: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("JUnit report: attribute {name}: {e}");
    let Some(attr) = tag.try_get_attribute(name).map_err(|e| bad(&e))? else {
        return Ok(None);
    };
    let value = attr
        .normalized_value(XmlVersion::Implicit1_0)
        .map_err(|e| bad(&e))?;
    Ok(Some(value.into_owned()))
}

/// The part of `cargo nextest list --message-format json` read here.
#[derive(Debug, Deserialize)]
struct TestList {
    #[serde(rename = "rust-suites")]
    suites: BTreeMap<String, ListedSuite>,
}

#[derive(Debug, Deserialize)]
struct ListedSuite {
    #[serde(rename = "binary-id")]
    binary_id: String,
    /// Absent when the binary could not be listed (e.g. it was not built).
    #[serde(default)]
    testcases: BTreeMap<String, serde::de::IgnoredAny>,
}

/// Every test of a `cargo nextest list --message-format json` (ignored and filtered-out
/// ones included: the list has them all, each with whether it would run).
///
/// # Errors
/// When the text is not nextest's test list.
pub(crate) fn parse_list(text: &str) -> Result<BTreeSet<TestId>, String> {
    let list: TestList =
        serde_json::from_str(text).map_err(|e| format!("nextest test list: {e}"))?;
    Ok(list
        .suites
        .into_values()
        .flat_map(|suite| {
            let binary = suite.binary_id;
            suite.testcases.into_keys().map(move |name| TestId {
                binary: binary.clone(),
                name,
            })
        })
        .collect())
}

/// A cell's counts: passed and failed from the report, skipped from the list (the
/// listed tests that did not run). Without a list, only skips the report itself records
/// are counted.
pub(crate) fn counts(cases: &[TestCase], listed: Option<&BTreeSet<TestId>>) -> Counts {
    let mut counts = Counts::default();
    for case in cases {
        match case.outcome {
            Outcome::Passed => counts.passed += 1,
            Outcome::Failed(_) => counts.failed += 1,
            Outcome::Skipped => counts.skipped += 1,
        }
    }
    if let Some(listed) = listed {
        let ran: BTreeSet<&TestId> = cases.iter().map(|c| &c.id).collect();
        counts.skipped += listed.iter().filter(|id| !ran.contains(id)).count() as u64;
    }
    counts
}

/// A nextest tool config file private to this xtask process: it points nextest's store
/// directory (where the [`PROFILE`]'s JUnit report is written) at a temporary directory.
/// Removed with its directory when dropped.
#[derive(Debug)]
pub(crate) struct ToolConfig {
    dir: PathBuf,
}

impl ToolConfig {
    /// Write the config file under the system's temporary directory.
    ///
    /// # Errors
    /// When the directory or the file cannot be written.
    pub(crate) fn create() -> std::io::Result<ToolConfig> {
        let dir = std::env::temp_dir().join(format!("brood-nextest-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let config = ToolConfig { dir };
        // TOML basic strings take the path as a JSON string would be written.
        let store = serde_json::to_string(&config.dir.join("store").to_string_lossy())
            .map_err(std::io::Error::other)?;
        std::fs::write(
            config.path(),
            format!(
                "# Written by cargo xtask test: the matrix's JUnit reports go here.\n\
                 [store]\ndir = {store}\n"
            ),
        )?;
        Ok(config)
    }

    /// The argument for nextest's `--tool-config-file`.
    pub(crate) fn arg(&self) -> String {
        format!("xtask:{}", self.path().display())
    }

    fn path(&self) -> PathBuf {
        self.dir.join("nextest.toml")
    }

    /// Where a run with [`PROFILE`] writes its JUnit report.
    pub(crate) fn junit_path(&self) -> PathBuf {
        junit_path(&self.dir.join("store"))
    }
}

impl Drop for ToolConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The JUnit report's path under a nextest store directory.
fn junit_path(store: &Path) -> PathBuf {
    store.join(PROFILE).join(JUNIT_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="5" skipped="0" failures="2" errors="0">
    <testsuite name="harness::suite" tests="4" skipped="0" errors="0" failures="2">
        <testcase name="calls::add" classname="harness::suite" time="0.005"/>
        <testcase name="teardown::stuck &amp; reaped" classname="harness::suite" time="3.1">
            <failure message="thread &apos;x&apos; panicked at a.rs:1:1" type="test failure with exit code 101">thread 'x' panicked</failure>
            <rerunFailure type="test failure">again</rerunFailure>
            <system-out>out</system-out>
        </testcase>
        <testcase name="streams::flaky" classname="harness::suite">
            <flakyFailure type="test failure">once</flakyFailure>
        </testcase>
        <testcase name="spawn::hangs" classname="harness::suite">
            <failure message="timed out"/>
        </testcase>
    </testsuite>
    <testsuite name="spawn-api" tests="1" skipped="0" errors="0" failures="0">
        <testcase name="wire::tests::round_trip" classname="spawn-api"/>
    </testsuite>
</testsuites>"#;

    fn id(binary: &str, name: &str) -> TestId {
        TestId {
            binary: binary.into(),
            name: name.into(),
        }
    }

    #[test]
    fn reads_outcomes_from_junit() {
        let cases = parse_junit(REPORT).unwrap();
        let got: Vec<(&str, &str, &Outcome)> = cases
            .iter()
            .map(|c| (c.id.binary.as_str(), c.id.name.as_str(), &c.outcome))
            .collect();
        let failed = |s: &str| Outcome::Failed(s.into());
        assert_eq!(
            got,
            [
                ("harness::suite", "calls::add", &Outcome::Passed),
                (
                    "harness::suite",
                    "teardown::stuck & reaped",
                    &failed("test failure with exit code 101")
                ),
                ("harness::suite", "streams::flaky", &Outcome::Passed),
                ("harness::suite", "spawn::hangs", &failed("timed out")),
                ("spawn-api", "wire::tests::round_trip", &Outcome::Passed),
            ]
        );
        assert_eq!(
            counts(&cases, None),
            Counts {
                passed: 3,
                failed: 2,
                skipped: 0
            }
        );
    }

    #[test]
    fn rejects_broken_reports() {
        assert!(parse_junit("<testsuites><testsuite name=\"a\"><testcase/>").is_err());
        assert!(parse_junit("<testsuites><testsuite></testcase>").is_err());
        assert_eq!(parse_junit("<testsuites/>"), Ok(vec![]));
    }

    #[test]
    fn skipped_are_listed_but_not_run() {
        let list = r#"{
          "rust-build-meta": {"target-directory": "/t"},
          "test-count": 4,
          "rust-suites": {
            "harness::suite": {
              "package-name": "harness", "binary-id": "harness::suite", "kind": "test",
              "status": "listed",
              "testcases": {
                "calls::add": {"kind": "test", "ignored": false,
                               "filter-match": {"status": "matches"}},
                "fork::only": {"kind": "test", "ignored": true,
                               "filter-match": {"status": "mismatch", "reason": "ignored"}}
              }
            },
            "spawn-api": {"binary-id": "spawn-api", "status": "skipped"}
          }
        }"#;
        let listed = parse_list(list).unwrap();
        assert_eq!(
            listed.iter().cloned().collect::<Vec<_>>(),
            [
                id("harness::suite", "calls::add"),
                id("harness::suite", "fork::only")
            ]
        );
        let ran = [TestCase {
            id: id("harness::suite", "calls::add"),
            outcome: Outcome::Passed,
        }];
        assert_eq!(
            counts(&ran, Some(&listed)),
            Counts {
                passed: 1,
                failed: 0,
                skipped: 1
            }
        );
        assert!(parse_list("{}").is_err());
    }

    #[test]
    fn tool_config_points_the_store_at_its_directory() {
        let config = ToolConfig::create().unwrap();
        let text = std::fs::read_to_string(config.path()).unwrap();
        assert!(text.contains("[store]\ndir = \""), "{text}");
        assert!(config.arg().starts_with("xtask:/"));
        assert!(config.junit_path().ends_with("store/matrix/junit.xml"));
        let dir = config.dir.clone();
        drop(config);
        assert!(!dir.exists());
    }
}
