//! Discovery: finding actors by name anywhere in a tree (or on the machine) and talking
//! to them directly.
//!
//! **The registrar.** The root of every tree is its registrar: it keeps a table of the
//! tree's actors (name, path, address, pid, backend). A parent registers a child once the
//! child proved itself, before [`Nursery::start_actor`](crate::Nursery::start_actor)
//! returns, and removes it when it reaps it — whatever way the child ended, a SIGKILL
//! included — together with everything registered under it. So a lookup never answers
//! with an actor its parent already reaped.
//!
//! **Lookups** — [`ActorCx::find_actor`], [`ActorCx::find_path`],
//! [`ActorCx::wait_for_actor`], [`ActorCx::lookup`], [`ActorCx::list_actors`] — work from
//! any actor's handlers and from the root ([`Nursery::actor`](crate::Nursery::actor)).
//! The portals they return connect straight to the target's listener, with the same
//! checks as every channel (the peer's uid, the tree's secret); calls, streams and
//! contexts work as with a child, and the target's death ends the portal's calls with
//! [`PortalError::Disconnected`]. An actor keeps one such channel per target and reuses
//! it for later lookups; it closes after the target's idle timeout without an open call
//! (or with [`Portal::close`]), and the next lookup opens another.
//!
//! **Across programs.** Every root also serves other roots: a root started with
//! [`RootBuilder::registrar`](crate::RootBuilder::registrar) (or `BROOD_REGISTRAR`) joins
//! the registrar at that address, sends it its tree's entries as they change, and
//! receives everyone else's, so its actors' lookups find the actors of every program that
//! joined. A joined program's entries go when its root ends or dies. A registrar that
//! dies is noticed (its entries go, a warning is logged) and the root joins again, with
//! its whole table, when it is back. Programs that find each other must share the secret
//! their actors prove (see [`RootBuilder::secret`](crate::RootBuilder::secret) and
//! [`SECRET_FILE_ENV`]). Root names must differ: a registrar refuses a second tree of
//! the same name, since tree paths are what lookups by path answer.
//!
//! **Status.** Every actor answers [`Status`]: its path, pid, uptime and the calls it
//! serves right now; with [`ActorCx::list_actors`] that is a live view of a tree.
//!
//! ```no_run
//! # async fn demo(cx: actor_core::ActorCx) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! actor_core::call!(Add: (i64, i64) => i64);
//! // A sibling, a cousin, or an actor of another program that joined our registrar:
//! let adder = cx.wait_for_actor("adder", Duration::from_secs(5)).await?;
//! assert_eq!(adder.run(Add, (40, 2)).await?, 42);
//! for actor in cx.list_actors().await? {
//!     println!("{} pid {} at {}", actor.path, actor.pid, actor.addr);
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use spawn_api::{ActorId, Addr, CallFn, TreeSecret};

use crate::actor::{ActorCx, ActorInner};
use crate::direct::ConnectError;
use crate::discovery_state::unix_ms;
use crate::error::{FnError, PortalError};
use crate::portal::Portal;
use crate::registrar::{Change, Origin, Table};
use crate::registry::Registry;
use crate::stream::CalleeContext;

pub use crate::registrar::{ActorInfo, MAX_ENTRIES, MAX_ENTRY_BYTES, Query, Update};

/// Environment variable naming the address of the registrar a root joins
/// ([`RootBuilder::registrar`](crate::RootBuilder::registrar) overrides it).
pub const REGISTRAR_ENV: &str = "BROOD_REGISTRAR";

/// Environment variable naming a file that holds the secret of a registrar's programs
/// (see [`read_secret_file`]): a root without an explicit
/// [`secret`](crate::RootBuilder::secret) uses it. The variable names a file,
/// never the secret itself (a process's environment is readable by others).
pub const SECRET_FILE_ENV: &str = "BROOD_SECRET_FILE";

/// The secret in the file at `path`, written by [`write_secret_file`] (or by hand: 64
/// hex digits), after checking that only this user can read it: the way programs that
/// join one registrar share the secret their actors prove.
///
/// ```no_run
/// let secret = actor_core::discovery::read_secret_file("/run/user/1000/brood/registrar.secret")?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// `InvalidData` if the file is not a regular file of this user that only it may read
/// and write, or does not hold a secret; the OS error if it cannot be opened (a
/// symbolic link is refused).
pub fn read_secret_file(path: impl AsRef<std::path::Path>) -> std::io::Result<TreeSecret> {
    os_wrappers::secret_file::read(path.as_ref()).map(TreeSecret::from_bytes)
}

/// Write `secret` to a new file at `path`, readable by this user only (mode 0600).
///
/// # Errors
/// `AlreadyExists` if there is a file there (nothing is replaced), else the OS error.
pub fn write_secret_file(
    path: impl AsRef<std::path::Path>,
    secret: &TreeSecret,
) -> std::io::Result<()> {
    os_wrappers::secret_file::write_new(path.as_ref(), &secret.to_bytes())
}

/// Where a standalone registrar listens and keeps its secret by default: the socket
/// `registrar.sock` and the file `registrar.secret` in the user's private runtime
/// directory (`BROOD_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/brood`, else
/// `/tmp/brood-<uid>`; created private if missing, and checked), on transport `uds`.
/// `cargo run --example registrar` uses them.
///
/// ```
/// let (addr, secret_file) = actor_core::discovery::well_known()?;
/// assert_eq!(addr.transport(), "uds");
/// assert!(addr.endpoint().ends_with("/registrar.sock"));
/// assert!(secret_file.ends_with("registrar.secret"));
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The runtime directory cannot be created or fails its checks (another user's, open
/// to others): `PermissionDenied` with the reason.
pub fn well_known() -> std::io::Result<(Addr, std::path::PathBuf)> {
    use os_wrappers::runtime_dir::{Location, resolve};
    let dir = resolve(
        &Location::from_env(),
        os_wrappers::peercred::effective_uid(),
    )
    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.to_string()))?
    .path;
    let sock = dir.join("registrar.sock");
    Ok((
        Addr::new("uds", sock.to_string_lossy()),
        dir.join("registrar.secret"),
    ))
}

/// The kind of the error an actor that is not a registrar answers the registrar's
/// functions with.
pub const NOT_A_REGISTRAR: &str = "NotARegistrar";

/// The kind of the error a registrar answers a registration it refuses with (its
/// parent ended, the table is full, a tree of that name joined already, or the caller
/// may not change that entry).
pub const REFUSED: &str = "RegistrationRefused";

spawn_api::call!(
    /// Register an actor (by its parent). Served by a registrar.
    pub Register = "brood.registrar.register": ActorInfo => ()
);

spawn_api::call!(
    /// Remove an actor and everything under it (by its parent). Served by a registrar.
    pub Deregister = "brood.registrar.deregister": ActorId => ()
);

spawn_api::call!(
    /// Every registered actor matching the query, oldest first. Served by a registrar.
    pub Lookup = "brood.registrar.lookup": Query => Vec<ActorInfo>
);

spawn_api::call!(
    /// The first actor matching the query, waiting until one registers (the caller
    /// bounds the wait). Served by a registrar.
    pub WaitFor = "brood.registrar.wait": Query => ActorInfo
);

spawn_api::context!(
    /// A root joins a registrar (its argument: its tree's name). `started` carries every
    /// entry the registrar knows; then each side sends the other its changes, the
    /// joining root only its own tree's. The session's end removes the joined tree's
    /// entries. Served by every root.
    pub Join = "brood.registrar.join": String => started Vec<ActorInfo>, in Vec<Update>, out Vec<Update>, return ()
);

spawn_api::call!(
    /// What an actor is doing right now. Served by every actor.
    pub Status = "brood.actor.status": () => ActorStatus
);

/// An actor's answer to [`Status`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActorStatus {
    /// Its tree path.
    pub path: String,
    /// Its process.
    pub pid: u32,
    /// The backend that started it.
    pub backend: String,
    /// How long it has run.
    pub uptime: Duration,
    /// The calls, streams and contexts it serves right now (this one not counted).
    pub calls_in_flight: u32,
    /// Its children alive.
    pub children: u32,
}

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// This actor's vars name no registrar (it was not started by a brood parent).
    #[error("actor {0} knows no registrar")]
    NoRegistrar(String),
    /// The registrar could not be reached.
    #[error("cannot reach the registrar: {0}")]
    Registrar(#[source] ConnectError),
    /// The registrar's answer failed (it is shutting down, say).
    #[error("the registrar failed: {0}")]
    Call(#[from] PortalError),
    /// An actor was found but could not be reached (it ended meanwhile).
    #[error("found {path} but cannot reach it: {source}")]
    Connect {
        /// The actor's tree path.
        path: String,
        /// Why.
        #[source]
        source: ConnectError,
    },
    /// No actor matching the query registered within the bound.
    #[error("no actor {query} appeared within {after:?}")]
    Timeout {
        /// What was waited for.
        query: String,
        /// The bound.
        after: Duration,
    },
}

/// This actor's own entry.
pub(crate) fn own_info(inner: &ActorInner) -> ActorInfo {
    ActorInfo {
        id: inner.id.clone(),
        path: inner.path.clone(),
        addr: inner.addr.clone(),
        pid: std::process::id(),
        backend: inner.vars.backend.clone(),
        parent: None,
        started_unix_ms: inner.discovery.started_unix_ms,
    }
}

/// The entry of a child that just proved itself.
pub(crate) fn child_info(
    inner: &ActorInner,
    id: &ActorId,
    path: &str,
    addr: &Addr,
    pid: Option<u32>,
    backend: &str,
) -> ActorInfo {
    ActorInfo {
        id: id.clone(),
        path: path.to_owned(),
        addr: addr.clone(),
        // A child without a process of its own (`subint`) runs in ours.
        pid: pid.unwrap_or_else(std::process::id),
        backend: backend.to_owned(),
        parent: Some(inner.id.clone()),
        started_unix_ms: unix_ms(SystemTime::now()),
    }
}

/// How long a parent waits for the registrar to take a child's (de)registration before
/// it goes on without: a registrar that does not answer must not hold up spawns or
/// reaps.
const REGISTRATION_BOUND: Duration = Duration::from_secs(2);

/// Register a child of `inner` with the tree's registrar. Failures are logged, never
/// the spawn's: the child runs, it is only not found.
pub(crate) async fn register_child(inner: &Arc<ActorInner>, info: ActorInfo) {
    let path = info.path.clone();
    let done = match &inner.discovery.table {
        Some(table) => table.upsert(Origin::Local, info).map_err(|e| e.to_string()),
        None => ask_registrar(inner, Register, info).await,
    };
    if let Err(e) = done {
        tracing::warn!(child = %path, error = %e, "child not registered");
    }
}

/// Remove a reaped child of `inner` (and its subtree) from the registrar. An actor that
/// is shutting down itself leaves that to its own parent, which removes its whole
/// subtree when it reaps it.
pub(crate) async fn deregister_child(inner: &Arc<ActorInner>, id: &ActorId) {
    let done = match &inner.discovery.table {
        Some(table) => {
            table.remove(Origin::Local, id);
            Ok(())
        }
        None => ask_registrar(inner, Deregister, id.clone()).await,
    };
    if let Err(e) = done {
        tracing::debug!(child = %id, error = %e, "child not deregistered");
    }
}

/// Call `function` at the tree's registrar for `inner`, within [`REGISTRATION_BOUND`];
/// nothing is asked of it by an actor that is shutting down (its parent removes its
/// whole subtree when it reaps it).
async fn ask_registrar<C: CallFn<Reply = ()>>(
    inner: &Arc<ActorInner>,
    function: C,
    args: C::Args,
) -> Result<(), String> {
    if inner.cancel.is_cancelled() {
        return Ok(());
    }
    let cx = ActorCx::of(inner.clone());
    let asked = async {
        let portal = cx.registrar().await?;
        portal
            .run(function, args)
            .await
            .map_err(DiscoveryError::Call)
    };
    match tokio::time::timeout(REGISTRATION_BOUND, asked).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(_) => Err("the registrar did not answer".to_owned()),
    }
}

impl ActorCx {
    /// A portal to the actor called `name`, anywhere in this tree (or in a program that
    /// joined the same registrar); `Ok(None)` if none is registered. With several of
    /// that name, the first registered that answers. The portal connects directly; see
    /// the [module docs](crate::discovery).
    ///
    /// ```no_run
    /// # async fn demo(cx: actor_core::ActorCx) -> Result<(), Box<dyn std::error::Error>> {
    /// actor_core::call!(Add: (i64, i64) => i64);
    /// if let Some(adder) = cx.find_actor("adder").await? {
    ///     assert_eq!(adder.run(Add, (1, 2)).await?, 3);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DiscoveryError`]: the registrar unreachable or failing, or every actor found
    /// unreachable.
    pub async fn find_actor(&self, name: &str) -> Result<Option<Portal>, DiscoveryError> {
        let found = self.lookup_query(Query::Name(name.to_owned())).await?;
        self.first_reachable(found).await
    }

    /// A portal to the actor at tree path `path` (`root/workers/w1`); `Ok(None)` if none
    /// is registered there.
    ///
    /// # Errors
    /// As [`find_actor`](Self::find_actor).
    pub async fn find_path(&self, path: &str) -> Result<Option<Portal>, DiscoveryError> {
        let found = self.lookup_query(Query::Path(path.to_owned())).await?;
        self.first_reachable(found).await
    }

    /// A portal to the actor called `name`, waiting up to `within` for one to register
    /// (one started later, say).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, the wait at the registrar is withdrawn.
    ///
    /// # Errors
    /// [`DiscoveryError::Timeout`] if none registered in time; otherwise as
    /// [`find_actor`](Self::find_actor).
    pub async fn wait_for_actor(
        &self,
        name: &str,
        within: Duration,
    ) -> Result<Portal, DiscoveryError> {
        let query = Query::Name(name.to_owned());
        let deadline = tokio::time::Instant::now() + within;
        let timeout = || DiscoveryError::Timeout {
            query: format!("named {name:?}"),
            after: within,
        };
        loop {
            let info = tokio::time::timeout_at(deadline, self.wait_query(query.clone()))
                .await
                .map_err(|_| timeout())??;
            match self.portal_to(&info).await {
                Ok(p) => return Ok(p),
                // Found as it ended: its parent is about to remove it; wait on.
                Err(DiscoveryError::Connect { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every registered actor called `name`, oldest first, without connecting to any.
    ///
    /// # Errors
    /// [`DiscoveryError`]: the registrar unreachable or failing.
    pub async fn lookup(&self, name: &str) -> Result<Vec<ActorInfo>, DiscoveryError> {
        self.lookup_query(Query::Name(name.to_owned())).await
    }

    /// Every registered actor — this tree's and those of the programs that joined the
    /// same registrar — sorted by path.
    ///
    /// # Errors
    /// [`DiscoveryError`]: the registrar unreachable or failing.
    pub async fn list_actors(&self) -> Result<Vec<ActorInfo>, DiscoveryError> {
        Ok(crate::registrar::by_path(
            self.lookup_query(Query::All).await?,
        ))
    }

    /// Every actor the registrar at `registrar` knows (any root is one), sorted by path:
    /// what a tool outside a program uses to see it. The registrar's actors must share
    /// this actor's secret.
    ///
    /// # Errors
    /// [`DiscoveryError::Registrar`] if it cannot be reached, else
    /// [`DiscoveryError::Call`].
    pub async fn list_actors_at(&self, registrar: &Addr) -> Result<Vec<ActorInfo>, DiscoveryError> {
        let portal = self
            .cached_portal(registrar, None)
            .await
            .map_err(DiscoveryError::Registrar)?;
        let all = portal.run(Lookup, Query::All).await?;
        Ok(crate::registrar::by_path(all))
    }

    /// A portal straight to `actor` (one a lookup returned), reusing this actor's open
    /// channel to it if there is one.
    ///
    /// # Errors
    /// [`DiscoveryError::Connect`] if it cannot be reached.
    pub async fn portal_to(&self, actor: &ActorInfo) -> Result<Portal, DiscoveryError> {
        self.cached_portal(&actor.addr, Some(&actor.path))
            .await
            .map_err(|source| DiscoveryError::Connect {
                path: actor.path.clone(),
                source,
            })
    }

    async fn first_reachable(
        &self,
        found: Vec<ActorInfo>,
    ) -> Result<Option<Portal>, DiscoveryError> {
        let mut last = None;
        for info in &found {
            match self.portal_to(info).await {
                Ok(p) => return Ok(Some(p)),
                Err(e) => last = Some(e),
            }
        }
        last.map_or(Ok(None), Err)
    }

    async fn lookup_query(&self, query: Query) -> Result<Vec<ActorInfo>, DiscoveryError> {
        if let Some(table) = &self.inner.discovery.table {
            return Ok(table.lookup(&query));
        }
        let portal = self.registrar().await?;
        match portal.run(Lookup, query.clone()).await {
            // The cached channel was closed for idleness just now: once more.
            Err(PortalError::Disconnected { .. }) => {
                Ok(self.registrar().await?.run(Lookup, query).await?)
            }
            other => Ok(other?),
        }
    }

    async fn wait_query(&self, query: Query) -> Result<ActorInfo, DiscoveryError> {
        if let Some(table) = &self.inner.discovery.table {
            return Ok(wait_in(table, &query).await);
        }
        loop {
            let portal = self.registrar().await?;
            match portal.run(WaitFor, query.clone()).await {
                Err(PortalError::Disconnected { .. }) if !self.inner.io_stop.is_cancelled() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// The portal to this tree's registrar (its root).
    pub(crate) async fn registrar(&self) -> Result<Portal, DiscoveryError> {
        let root = self
            .inner
            .vars
            .root_addr
            .as_deref()
            .and_then(|a| a.parse::<Addr>().ok())
            .ok_or_else(|| DiscoveryError::NoRegistrar(self.inner.path.clone()))?;
        self.cached_portal(&root, root_path(&self.inner.path))
            .await
            .map_err(DiscoveryError::Registrar)
    }

    /// This actor's open direct channel to `addr`, or a new one (its peer known by
    /// `path` if given).
    async fn cached_portal(&self, addr: &Addr, path: Option<&str>) -> Result<Portal, ConnectError> {
        let mut portals = self.inner.discovery.portals.lock().await;
        if let Some(p) = portals.get(addr)
            && p.is_connected()
        {
            return Ok(p.clone());
        }
        portals.retain(|_, p| p.is_connected());
        let portal = self.connect_as(addr, path).await?;
        portals.insert(addr.clone(), portal.clone());
        Ok(portal)
    }
}

/// The root's path: the first part of an actor's.
fn root_path(path: &str) -> Option<&str> {
    path.split('/').next()
}

/// The first entry matching `query`, once there is one.
async fn wait_in(table: &Table, query: &Query) -> ActorInfo {
    let mut version = table.watch();
    loop {
        version.borrow_and_update();
        if let Some(found) = table.lookup(query).into_iter().next() {
            return found;
        }
        if version.changed().await.is_err() {
            // The table went away with its actor: the caller's bound ends the wait.
            std::future::pending::<()>().await;
        }
    }
}

fn refused(e: impl std::fmt::Display) -> FnError {
    FnError::new(REFUSED, e.to_string())
}

fn table_of(cx: &ActorCx) -> Result<Arc<Table>, FnError> {
    cx.inner.discovery.table.clone().ok_or_else(|| {
        FnError::new(
            NOT_A_REGISTRAR,
            format!("actor {} is not a registrar (only roots are)", cx.path()),
        )
    })
}

/// The functions every actor serves for discovery (only roots answer the registrar's).
pub(crate) fn service() -> Registry {
    Registry::new()
        .call(Register, |cx, info: ActorInfo| async move {
            let table = table_of(&cx)?;
            // Only a parent registers, and only its own children: a member of the tree
            // cannot register entries in another's name.
            if info.parent.as_ref() != cx.caller() {
                return Err(refused(format!(
                    "{} may not register {} (only its parent may)",
                    caller_name(&cx),
                    info.path
                )));
            }
            table.upsert(Origin::Local, info).map_err(refused)
        })
        .call(Deregister, |cx, id: ActorId| async move {
            let table = table_of(&cx)?;
            match table.get(&id).map(|(_, info)| info) {
                None => Ok(()),
                Some(e) if e.parent.as_ref() == cx.caller() => {
                    table.remove(Origin::Local, &id);
                    Ok(())
                }
                Some(e) => Err(refused(format!(
                    "{} may not remove {} (only its parent may)",
                    caller_name(&cx),
                    e.path
                ))),
            }
        })
        .call(Lookup, |cx, query: Query| async move {
            Ok(table_of(&cx)?.lookup(&query))
        })
        .call(WaitFor, |cx, query: Query| async move {
            let table = table_of(&cx)?;
            Ok(wait_in(&table, &query).await)
        })
        .context(Join, serve_join)
        .call(Status, |cx, ()| async move {
            let inner = &cx.inner;
            Ok(ActorStatus {
                path: inner.path.clone(),
                pid: std::process::id(),
                backend: inner.vars.backend.clone(),
                uptime: inner.discovery.started.elapsed(),
                // This call is one of them.
                calls_in_flight: inner.discovery.in_flight().saturating_sub(1) as u32,
                children: inner.live_children.load(Ordering::Relaxed) as u32,
            })
        })
}

fn caller_name(cx: &ActorCx) -> String {
    cx.caller()
        .map_or_else(|| "?".to_owned(), ToString::to_string)
}

/// Whether `path` is in the tree called `tree`.
fn in_tree(path: &str, tree: &str) -> bool {
    path == tree || path.strip_prefix(tree).is_some_and(|r| r.starts_with('/'))
}

/// Removes a member's entries when its session ends, however it ends.
struct EndSession {
    table: Arc<Table>,
    origin: Origin,
    tree: String,
}

impl Drop for EndSession {
    fn drop(&mut self) {
        let n = self.table.remove_origin(self.origin);
        tracing::info!(tree = %self.tree, removed = n, "a program left this registrar");
    }
}

/// The registrar's side of a [`Join`].
async fn serve_join(cx: ActorCx, tree: String, ctx: CalleeContext<Join>) -> Result<(), FnError> {
    let table = table_of(&cx)?;
    if tree.is_empty() || tree.contains('/') {
        return Err(refused(format!("{tree:?} is not a tree's name")));
    }
    let origin = table.join(&tree).map_err(refused)?;
    // From here the session's end (however it ends, its start included) frees the name
    // and removes what it gave.
    let _end = EndSession {
        table: table.clone(),
        origin,
        tree: tree.clone(),
    };
    // Subscribed before the snapshot: nothing falls between (a change seen twice is
    // harmless, an upsert or a removal being idempotent).
    let mut feed = table.subscribe();
    let snapshot = table.snapshot(|o| o != origin);
    let mut stream = ctx.started(snapshot).await?;
    tracing::info!(%tree, "a program joined this registrar");
    loop {
        let mut out = Vec::new();
        tokio::select! {
            got = stream.recv() => match got? {
                None => return Ok(()),
                Some(updates) => {
                    for u in updates {
                        if let Update::Upsert(info) = &u
                            && !in_tree(&info.path, &tree)
                        {
                            return Err(refused(format!("tree {tree} sent {}, which is not its own", info.path)));
                        }
                        if let Err(e) = table.apply(origin, u) {
                            tracing::debug!(%tree, error = %e, "an update was refused");
                        }
                    }
                }
            },
            change = feed.recv() => match change {
                Ok(c) => forward(&c, origin, &mut out),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // It would miss changes: it joins again and gets a fresh snapshot.
                    return Err(FnError::new("Lagged", format!("{tree} fell {n} changes behind")));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
        if !out.is_empty() {
            stream.send(out).await?;
        }
    }
}

fn forward(change: &Change, to: Origin, out: &mut Vec<Update>) {
    if change.origin != to {
        out.push(change.update.clone());
    }
}

/// How long a root waits before joining its registrar again, at first and at most.
const REJOIN_FIRST: Duration = Duration::from_millis(100);
const REJOIN_MAX: Duration = Duration::from_secs(1);

/// A root's membership of the registrar at `hub`, for as long as the root lives: join,
/// keep the two tables in step, and when the session ends (the registrar died or
/// refused), drop what it taught us and join again.
pub(crate) async fn federate(inner: Arc<ActorInner>, hub: Addr) {
    let Some(table) = inner.discovery.table.clone() else {
        return;
    };
    tokio::select! {
        _ = inner.cancel.cancelled() => {}
        _ = federate_until_cancelled(&inner, &table, &hub) => {}
    }
    table.remove_origin(Origin::Hub);
}

async fn federate_until_cancelled(inner: &Arc<ActorInner>, table: &Arc<Table>, hub: &Addr) {
    let cx = ActorCx::of(inner.clone());
    let mut wait = REJOIN_FIRST;
    let mut warned = false;
    loop {
        let joined = member_session(&cx, table, hub).await;
        let dropped = table.remove_origin(Origin::Hub);
        match joined {
            Ok(()) => {
                tracing::warn!(registrar = %hub, dropped, "the registrar left; joining again when it is back");
                warned = false;
                wait = REJOIN_FIRST;
            }
            Err(e) if !warned => {
                tracing::warn!(registrar = %hub, error = %e, "cannot join the registrar; retrying");
                warned = true;
            }
            Err(e) => tracing::debug!(registrar = %hub, error = %e, "cannot join the registrar"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(REJOIN_MAX);
    }
}

/// One session with the registrar: `Ok` once it was joined and then ended. (The root's
/// cancellation ends it from outside, in [`federate`].)
async fn member_session(cx: &ActorCx, table: &Arc<Table>, hub: &Addr) -> Result<(), String> {
    let portal = cx.connect(hub).await.map_err(|e| e.to_string())?;
    let mut feed = table.subscribe();
    let tree = cx.inner.path.clone();
    let opened = portal.open_context(Join, tree).await;
    let (mut ctx, theirs) = match opened {
        Ok(o) => o,
        Err(e) => {
            portal.close().await;
            return Err(e.to_string());
        }
    };
    for info in theirs {
        let _ = table.upsert(Origin::Hub, info);
    }
    let ours: Vec<Update> = table
        .snapshot(|o| o == Origin::Local)
        .into_iter()
        .map(Update::Upsert)
        .collect();
    tracing::info!(registrar = %hub, actors = ours.len(), "joined the registrar");
    let mut out = ours;
    loop {
        if !out.is_empty() && ctx.send(std::mem::take(&mut out)).await.is_err() {
            break;
        }
        tokio::select! {
            got = ctx.recv() => match got {
                Ok(Some(updates)) => {
                    for u in updates {
                        let _ = table.apply(Origin::Hub, u);
                    }
                }
                _ => break,
            },
            change = feed.recv() => match change {
                Ok(c) => {
                    if c.origin == Origin::Local {
                        out.push(c.update.clone());
                    }
                }
                // Behind: start over with a fresh session and a full snapshot.
                Err(_) => break,
            },
        }
    }
    // Dropped, not cancelled: the channel closes next, which ends the session anyway.
    drop(ctx);
    portal.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::in_tree;

    #[test]
    fn tree_membership_is_by_whole_path_components() {
        assert!(in_tree("app", "app"));
        assert!(in_tree("app/w", "app"));
        assert!(!in_tree("apple/w", "app"));
        assert!(!in_tree("other", "app"));
    }
}
