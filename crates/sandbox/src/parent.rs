//! The parent's side: what a spawn does with the outcome its sandboxed child sent back.

use std::io;
use std::time::Duration;

use runtime_vars::sandbox::SandboxReport;
use spawn_api::{Child, ChildExit, SpawnError};

use crate::Outcome;

/// How long a refused child is given to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Turn what came back from a sandboxed child (`received`: its [`Outcome`], or why none
/// came) into the spawn's result. On any failure `child` has ended and been reaped when
/// this returns.
///
/// # Errors
/// - [`SpawnError::SandboxRefused`]: the child sent a refusal;
/// - [`SpawnError::DiedEarly`]: it ended without a word;
/// - [`SpawnError::Launch`]: no report came in time, or one that does not decode.
pub async fn judge(
    backend: &'static str,
    actor: &str,
    received: io::Result<Outcome>,
    child: &mut dyn Child,
) -> Result<SandboxReport, SpawnError> {
    let error = match received {
        Ok(Ok(report)) => {
            tracing::debug!(actor, "sandboxed:\n{report}");
            return Ok(report);
        }
        Ok(Err(refusal)) => SpawnError::SandboxRefused {
            backend,
            actor: actor.to_owned(),
            refusal,
        },
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => SpawnError::DiedEarly {
            actor: actor.to_owned(),
            exit: end(child).await,
        },
        Err(source) => SpawnError::Launch {
            backend,
            actor: actor.to_owned(),
            source,
        },
    };
    end(child).await;
    Err(error)
}

/// Wait a moment for the child to exit, then kill it; reap it either way.
async fn end(child: &mut dyn Child) -> ChildExit {
    if let Ok(exit) = tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        return exit;
    }
    let _ = child.kill();
    child.wait().await
}

/// What a spawn asks of its child's sandbox, for a backend whose children run inside
/// their parent's sandbox already (a `proc` child is its parent's descendant; a `fork`
/// child is forked by a server that a sandboxed actor starts inside its own sandbox).
///
/// [`Plan::new`] rewrites the request's `boot.sandbox` to what the child must add to
/// its parent's sandbox (`None` if nothing); [`Plan::record`] writes the child's
/// [`SandboxVars`](runtime_vars::sandbox::SandboxVars) once the child's report (if it
/// had anything to apply) came back.
#[derive(Debug)]
pub struct Plan {
    wanted: Option<runtime_vars::sandbox::Sandbox>,
    inherited: Option<runtime_vars::sandbox::SandboxVars>,
}

impl Plan {
    /// Take the sandbox the runtime asked for (`req.boot.sandbox`: the parent's,
    /// tightened by the child's options) and leave there only what the child must apply.
    pub fn new(req: &mut spawn_api::SpawnRequest) -> Plan {
        let wanted = req.boot.sandbox.take();
        let inherited = req.vars.sandbox.clone();
        req.boot.sandbox = wanted.as_ref().and_then(|want| {
            let delta = match &inherited {
                Some(parent) => want.beyond(&parent.sandbox),
                None => want.clone(),
            };
            delta.restricts_anything().then_some(delta)
        });
        Plan { wanted, inherited }
    }

    /// Record the child's sandbox in `req.vars`: what it applied (`report`, when
    /// `boot.sandbox` had anything), or its parent's, unchanged.
    pub fn record(self, req: &mut spawn_api::SpawnRequest, report: Option<SandboxReport>) {
        let Some(sandbox) = self.wanted else { return };
        req.vars.sandbox = match (report, self.inherited) {
            (Some(report), _) => Some(runtime_vars::sandbox::SandboxVars {
                sandbox,
                report,
                applied_by: req.boot.path.clone(),
            }),
            (None, Some(parent)) => Some(runtime_vars::sandbox::SandboxVars { sandbox, ..parent }),
            (None, None) => None,
        };
    }
}
