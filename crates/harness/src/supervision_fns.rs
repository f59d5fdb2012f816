//! The actor functions the supervision tests call (`tests/suite/supervision.rs`): a
//! supervisor held inside an actor. Merged beside the other test functions by
//! [`crate::brood`].

use std::time::Duration;

use brood::supervision::{ChildSpec, Strategy, SupervisorSpec};
use brood::{ActorCx, CalleeContext, FnError, Registry};

use crate::functions::{Panic, Who, WhoAmI};

brood::context!(
    /// Runs a one-for-one supervisor of `n` children (`w0`, `w1`, ...) inside this actor,
    /// at most `max_restarts` restarts in a minute; started with every child's [`Who`]
    /// (first incarnations). Each item received crashes the child of that index (a panic);
    /// the context returns (the supervisor stopped) when the caller closes its side, or
    /// fails when the supervisor gives up.
    pub SuperviseInside = "t.supervise_inside": (u32, u32) => started Vec<Who>, in u32, out (), return ()
);

async fn supervise_inside(
    cx: ActorCx,
    (n, max_restarts): (u32, u32),
    ctx: CalleeContext<SuperviseInside>,
) -> Result<(), FnError> {
    cx.open_nursery(async |nursery| {
        let mut spec = SupervisorSpec::new(Strategy::OneForOne)
            .name("inner")
            .intensity(max_restarts, Duration::from_secs(60));
        for i in 0..n {
            spec = spec.child(ChildSpec::new(format!("w{i}")));
        }
        let sup = nursery.supervise(spec).await?;
        let mut who = Vec::new();
        for i in 0..n {
            let (p, _) = sup.child(&format!("w{i}")).expect("a child").portal().await?;
            who.push(p.run(WhoAmI, ()).await?);
        }
        let mut s = ctx.started(who).await?;
        loop {
            tokio::select! {
                item = s.recv() => match item? {
                    Some(i) => {
                        let h = sup.child(&format!("w{i}")).ok_or_else(|| FnError::msg("no such child"))?;
                        if let Ok((p, _)) = h.portal().await {
                            let _ = p.run(Panic, "crashed by its grandparent".into()).await;
                        }
                    }
                    None => break,
                },
                r = sup.wait() => {
                    r?;
                    break;
                }
            }
        }
        sup.stop().await;
        Ok(())
    })
    .await?;
    Ok(())
}

/// The functions of this module.
pub fn registry() -> Registry {
    Registry::new().context(SuperviseInside, supervise_inside)
}
