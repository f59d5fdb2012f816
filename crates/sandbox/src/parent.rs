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
