//! The actor functions the discovery tests call (`tests/suite/discovery.rs`): lookups by
//! name and by path from inside an actor, waits, listings and [`Status`] of others.
//! Merged beside the other test functions by [`crate::brood`], so every test actor serves
//! them.

use std::time::{Duration, Instant};

use brood::discovery::Status;
use brood::{
    ActorCx, ActorInfo, ActorOptions, ActorStatus, CalleeContext, DiscoveryError, FnError, Portal,
    Registry,
};
use serde::{Deserialize, Serialize};

use crate::functions::{Add, CallerName, Who, WhoAmI};

/// What a lookup asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The actor called this ([`ActorCx::find_actor`]).
    Name(String),
    /// The actor at this tree path ([`ActorCx::find_path`]).
    Path(String),
}

/// What a call through a portal a lookup returned answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The tree path of the actor the portal reached, as it reports it ([`WhoAmI`]).
    pub path: String,
    /// Its id, as the portal names it.
    pub id: String,
    /// Its [`Add`].
    pub sum: i64,
    /// The name that actor saw as its caller ([`CallerName`]).
    pub caller: String,
}

/// How a [`WaitAndAdd`] ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Waited {
    /// An actor of that name appeared: what a call through its portal answered, and how
    /// long the wait took, in milliseconds.
    Found {
        /// The call's answer.
        found: Found,
        /// How long the wait took.
        waited_ms: u64,
    },
    /// [`DiscoveryError::Timeout`], with the bound it reported and how long the wait
    /// took, in milliseconds.
    TimedOut {
        /// The bound the error names.
        after_ms: u64,
        /// How long the wait took.
        waited_ms: u64,
    },
}

brood::call!(
    /// Looks the target up from this actor and, if found, calls [`WhoAmI`], [`Add`] and
    /// [`CallerName`] through the portal the lookup returned (`None`: not registered).
    pub FindAndAdd = "t.disc.find_and_add": (Target, i64, i64) => Option<Found>
);
brood::call!(
    /// Starts a child of the given name and has it run [`FindAndAdd`] with the rest.
    pub RelayFindAndAdd = "t.disc.relay_find_and_add": (String, Target, i64, i64) => Option<Found>
);
brood::call!(
    /// Waits up to the milliseconds for an actor of the name ([`ActorCx::wait_for_actor`])
    /// and calls it as [`FindAndAdd`] does.
    pub WaitAndAdd = "t.disc.wait_and_add": (String, u64) => Waited
);
brood::call!(
    /// Starts a wait for an actor of the name that never appears, lets it run for the
    /// milliseconds, asks the root for its [`Status`] while the wait is still pending,
    /// then drops the wait; returns the root's `calls_in_flight` seen meanwhile.
    pub AbandonWait = "t.disc.abandon_wait": (String, u64) => u32
);
brood::call!(
    /// The [`Status`] of the target, through a lookup's portal (`None`: not registered).
    pub StatusOf = "t.disc.status_of": Target => Option<ActorStatus>
);
brood::call!(
    /// [`ActorCx::list_actors`] from this actor.
    pub ListActors = "t.disc.list_actors": () => Vec<ActorInfo>
);
brood::call!(
    /// [`ActorCx::lookup`] of the name from this actor.
    pub LookupName = "t.disc.lookup": String => Vec<ActorInfo>
);
brood::call!(
    /// Starts a child of the given name and returns where it is and its
    /// [`ListActors`].
    pub ListViaChild = "t.disc.list_via_child": String => (Who, Vec<ActorInfo>)
);
brood::context!(
    /// Starts a child of the given name that serves until cancelled, reports its [`Who`]
    /// as the started value, then waits until cancelled itself.
    pub HoldNamed = "t.disc.hold_named": String => started Who, in (), out (), return ()
);
brood::call!(
    /// Looks up the actor of the name and calls [`Add`] through the portal, once to warm
    /// up, then `n` times more; returns how many of the `n` answered right and this
    /// process's count of open descriptors after the warm-up and after the `n`.
    pub FindAndAddMany = "t.disc.find_and_add_many": (String, u32) => (u32, u32, u32)
);

async fn find(cx: &ActorCx, target: &Target) -> Result<Option<Portal>, DiscoveryError> {
    match target {
        Target::Name(name) => cx.find_actor(name).await,
        Target::Path(path) => cx.find_path(path).await,
    }
}

async fn add_through(portal: &Portal, a: i64, b: i64) -> Result<Found, FnError> {
    let who = portal.run(WhoAmI, ()).await?;
    // A portal a lookup returned knows its peer by its tree path, as a child's does.
    if portal.path() != who.path {
        return Err(FnError::new(
            "WrongPath",
            format!(
                "the portal says {:?}, the actor {:?}",
                portal.path(),
                who.path
            ),
        ));
    }
    Ok(Found {
        path: who.path,
        id: portal.actor_id().to_string(),
        sum: portal.run(Add, (a, b)).await?,
        caller: portal.run(CallerName, ()).await?,
    })
}

async fn find_and_add(
    cx: &ActorCx,
    target: &Target,
    a: i64,
    b: i64,
) -> Result<Option<Found>, FnError> {
    match find(cx, target).await? {
        Some(p) => Ok(Some(add_through(&p, a, b).await?)),
        None => Ok(None),
    }
}

async fn hold_named(
    cx: ActorCx,
    name: String,
    ctx: CalleeContext<HoldNamed>,
) -> Result<(), FnError> {
    cx.open_nursery(async |n| {
        let child = n.start_actor(&name, ActorOptions::new()).await?;
        let who = child.run(WhoAmI, ()).await?;
        let _stream = ctx.started(who).await?;
        std::future::pending::<()>().await;
        Ok(())
    })
    .await?;
    Ok(())
}

fn open_fds() -> u32 {
    crate::leaks::open_fds().len() as u32
}

/// The functions of this module, for [`crate::brood`].
pub fn registry() -> Registry {
    Registry::new()
        .call(
            FindAndAdd,
            |cx, (target, a, b): (Target, i64, i64)| async move {
                find_and_add(&cx, &target, a, b).await
            },
        )
        .call(
            RelayFindAndAdd,
            |cx, (name, target, a, b): (String, Target, i64, i64)| async move {
                Ok(cx
                    .open_nursery(async |n| {
                        let child = n.start_actor(&name, ActorOptions::new()).await?;
                        Ok(child.run(FindAndAdd, (target, a, b)).await?)
                    })
                    .await?)
            },
        )
        .call(WaitAndAdd, |cx, (name, ms): (String, u64)| async move {
            let t = Instant::now();
            match cx.wait_for_actor(&name, Duration::from_millis(ms)).await {
                Ok(p) => {
                    let waited_ms = t.elapsed().as_millis() as u64;
                    Ok(Waited::Found {
                        found: add_through(&p, 1, 2).await?,
                        waited_ms,
                    })
                }
                Err(DiscoveryError::Timeout { after, .. }) => Ok(Waited::TimedOut {
                    after_ms: after.as_millis() as u64,
                    waited_ms: t.elapsed().as_millis() as u64,
                }),
                Err(e) => Err(e.into()),
            }
        })
        .call(AbandonWait, |cx, (name, ms): (String, u64)| async move {
            let mut wait = Box::pin(cx.wait_for_actor(&name, Duration::from_secs(3600)));
            tokio::select! {
                r = &mut wait => {
                    return Err(FnError::new(
                        "Unexpected",
                        format!("the wait for {name:?} ended: {:?}", r.map(|p| p.actor_id().clone())),
                    ));
                }
                () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            }
            // The wait is still pending (not dropped): the root serves it.
            let root = cx
                .find_path(&root_path(&cx))
                .await?
                .ok_or_else(|| FnError::new("NotFound", "the root is not registered"))?;
            let status = root.run(Status, ()).await?;
            drop(wait);
            Ok(status.calls_in_flight)
        })
        .call(StatusOf, |cx, target: Target| async move {
            match find(&cx, &target).await? {
                Some(p) => Ok(Some(p.run(Status, ()).await?)),
                None => Ok(None),
            }
        })
        .call(ListActors, |cx, ()| async move { Ok(cx.list_actors().await?) })
        .call(LookupName, |cx, name: String| async move {
            Ok(cx.lookup(&name).await?)
        })
        .call(ListViaChild, |cx, name: String| async move {
            Ok(cx
                .open_nursery(async |n| {
                    let child = n.start_actor(&name, ActorOptions::new()).await?;
                    let who = child.run(WhoAmI, ()).await?;
                    Ok((who, child.run(ListActors, ()).await?))
                })
                .await?)
        })
        .context(HoldNamed, hold_named)
        .call(FindAndAddMany, |cx, (name, n): (String, u32)| async move {
            let target = Target::Name(name.clone());
            find_and_add(&cx, &target, 0, 0)
                .await?
                .ok_or_else(|| FnError::new("NotFound", format!("no actor {name:?}")))?;
            let before = open_fds();
            let mut ok = 0;
            for i in 0..n {
                let portal = cx
                    .find_actor(&name)
                    .await?
                    .ok_or_else(|| FnError::new("NotFound", format!("no actor {name:?}")))?;
                if portal.run(Add, (i64::from(i), 1)).await? == i64::from(i) + 1 {
                    ok += 1;
                }
            }
            Ok((ok, before, open_fds()))
        })
}

/// The path of this actor's root (the first part of its own).
fn root_path(cx: &ActorCx) -> String {
    cx.path().split('/').next().unwrap_or_default().to_owned()
}
