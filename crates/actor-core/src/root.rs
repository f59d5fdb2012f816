//! [`Root`]: opening the root actor of a tree.

use std::sync::Arc;

use runtime_vars::{RuntimeVars, VarsOverride};
use tracing::Instrument;

use crate::actor::{ActorInner, ActorSetup};
use crate::brood::{BACKEND_ENV, Brood, BroodBuilder, TRANSPORT_ENV};
use crate::error::{FnError, NurseryError};
use crate::nursery::{Nursery, run_nursery};
use crate::registrar::{Origin, Table};
use crate::registry::Registry;
use spawn_api::{
    ActorId, Addr, ChannelLimits, SpawnBackend, SpawnError, TeardownHook, TeardownPolicy,
    Transport, TransportError, TreeSecret,
};

/// The root of an actor tree. Start with [`Root::builder`] or [`Brood::root`].
#[derive(Debug)]
pub struct Root;

impl Root {
    /// A builder with nothing configured: add a backend, a transport and a registry.
    ///
    /// The program's `main` must still call [`Brood::enter`] with the same
    /// configuration so that spawned children can start; prefer building a [`Brood`]
    /// once and calling [`Brood::root`].
    pub fn builder() -> RootBuilder {
        RootBuilder::from_parts(Brood::builder())
    }
}

/// Opening the root actor failed, or its nursery did.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The configuration names a backend or transport that is not there.
    #[error("root configuration: {0}")]
    Config(#[from] SpawnError),
    /// The root could not listen.
    #[error("root could not listen: {0}")]
    Listen(#[from] TransportError),
    /// The root's nursery failed.
    #[error("{0}")]
    Nursery(#[source] NurseryError),
    /// `BROOD_REGISTRAR` or `BROOD_SECRET_FILE` is set and unusable (which, and why).
    #[error("{var}: {reason}")]
    Discovery {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl RootError {
    /// The nursery error, if the failure came from the tree.
    pub fn nursery(&self) -> Option<&NurseryError> {
        match self {
            RootError::Nursery(n) => Some(n),
            _ => None,
        }
    }
}

/// Configures and runs a root actor.
///
/// ```no_run
/// # async fn demo(brood: actor_core::Brood) -> Result<(), actor_core::RootError> {
/// actor_core::call!(Add: (i64, i64) => i64);
/// let sum = brood
///     .root()
///     .name("main")
///     .run(async |nursery| {
///         let child = nursery.start_actor("adder", Default::default()).await?;
///         Ok(child.run(Add, (1, 2)).await?)
///     })
///     .await?;
/// assert_eq!(sum, 3);
/// # Ok(()) }
/// ```
pub struct RootBuilder {
    brood: BroodBuilder,
    name: String,
    backend: Option<String>,
    transport: Option<String>,
    policy: TeardownPolicy,
    limits: ChannelLimits,
    vars: VarsOverride,
    secret: Option<TreeSecret>,
    registrar: Option<Addr>,
    listen_at: Option<Addr>,
}

impl std::fmt::Debug for RootBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootBuilder")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("transport", &self.transport)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Brood {
    /// A builder for this program's root actor.
    pub fn root(&self) -> RootBuilder {
        RootBuilder::from_brood(self.clone())
    }
}

impl RootBuilder {
    pub(crate) fn from_brood(brood: Brood) -> RootBuilder {
        RootBuilder::from_parts(brood.to_builder())
    }

    fn from_parts(brood: BroodBuilder) -> RootBuilder {
        RootBuilder {
            brood,
            name: "root".to_owned(),
            backend: None,
            transport: None,
            policy: TeardownPolicy::default(),
            limits: ChannelLimits::default(),
            vars: VarsOverride::default(),
            secret: None,
            registrar: None,
            listen_at: None,
        }
    }

    /// The root actor's name (default `root`); it heads every tree path.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Add a backend and make it the one this root uses.
    pub fn backend(mut self, backend: impl SpawnBackend) -> Self {
        self.backend = Some(backend.key().to_owned());
        self.brood = self.brood.backend(backend);
        self
    }

    /// Add a transport and make it the one this root uses.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(transport.key().to_owned());
        self.brood = self.brood.transport(transport);
        self
    }

    /// Serve these functions.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.brood = self.brood.registry(registry);
        self
    }

    /// Add a teardown hook.
    pub fn hook(mut self, hook: impl TeardownHook) -> Self {
        self.brood = self.brood.hook(hook);
        self
    }

    /// Use the configured backend with key `key` (overrides `BROOD_BACKEND`).
    pub fn use_backend(mut self, key: impl Into<String>) -> Self {
        self.backend = Some(key.into());
        self
    }

    /// Use the configured transport with key `key` (overrides `BROOD_TRANSPORT`).
    pub fn use_transport(mut self, key: impl Into<String>) -> Self {
        self.transport = Some(key.into());
        self
    }

    /// The teardown bounds of the whole tree.
    pub fn teardown(mut self, policy: TeardownPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Items a stream or context direction may have in flight before its sender waits
    /// (default 256); the same as [`ChannelLimits::stream_window`].
    pub fn stream_window(mut self, items: u32) -> Self {
        self.limits.stream_window = items.max(1);
        self
    }

    /// The bounds on what any peer may make an actor of this tree hold; every child
    /// receives them. See [`ChannelLimits`].
    pub fn limits(mut self, limits: ChannelLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Override the root's runtime vars, which every actor of the tree inherits: debug
    /// mode, the log filter (default: `BROOD_LOG`, else `warn`), user vars.
    ///
    /// ```
    /// # fn demo(root: actor_core::RootBuilder) -> actor_core::RootBuilder {
    /// root.vars(|v| v.log_level("info").user("region", "eu"))
    /// # }
    /// ```
    pub fn vars(mut self, set: impl FnOnce(VarsOverride) -> VarsOverride) -> Self {
        self.vars = set(std::mem::take(&mut self.vars));
        self
    }

    /// The tree's secret (default: a fresh random one). Give two roots the same secret
    /// to let their actors talk to each other; see [`TreeSecret`].
    pub fn secret(mut self, secret: TreeSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Join the registrar at `addr` (another program's root, or a standalone registrar
    /// such as `cargo run --example registrar`), so this tree's actors find the actors
    /// of every program that joined it and theirs find ours. Overrides
    /// [`REGISTRAR_ENV`](crate::discovery::REGISTRAR_ENV). The programs must share their
    /// secret ([`secret`](Self::secret), or the file
    /// [`SECRET_FILE_ENV`](crate::discovery::SECRET_FILE_ENV) names). See
    /// [`discovery`](crate::discovery).
    ///
    /// The registrar is joined in the background: the tree runs whether or not it is
    /// reachable, is joined as soon as it is, and again whenever it comes back.
    ///
    /// ```no_run
    /// # fn demo(root: actor_core::RootBuilder, addr: actor_core::Addr) -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = actor_core::discovery::read_secret_file("/run/user/1000/brood/registrar.secret")?;
    /// let root = root.name("billing").secret(secret).registrar(addr);
    /// # Ok(()) }
    /// ```
    pub fn registrar(mut self, addr: Addr) -> Self {
        self.registrar = Some(addr);
        self
    }

    /// Listen at `addr` rather than at a fresh address of the transport's choosing: what
    /// a registrar that other programs find at a well-known place does (see
    /// [`discovery::well_known`](crate::discovery::well_known)). The address's transport
    /// is the root's. A stale socket file there (its listener died) is replaced; a live
    /// one fails the run with [`RootError::Listen`]. Children are placed beside it, and at
    /// the end only the endpoints of this tree are removed, never the directory.
    pub fn listen_at(mut self, addr: Addr) -> Self {
        self.transport = Some(addr.transport().to_owned());
        self.listen_at = Some(addr);
        self
    }

    /// Open the root actor, run `body` in its nursery, then shut everything down.
    ///
    /// The backend is the one chosen with [`use_backend`](Self::use_backend) or
    /// [`backend`](Self::backend), else `BROOD_BACKEND`, else the brood's default; the
    /// transport likewise (`BROOD_TRANSPORT`).
    ///
    /// # Cancel safety
    ///
    /// This method is not cancel safe: dropping the future drops `body` at its current
    /// await point, and the body's result with it. Nothing is orphaned, though: the root
    /// actor shuts down in the background, on the runtime the future was dropped in.
    /// Every child is torn down by its supervisor through the whole ladder (hooks
    /// included), the root stops listening, and what the tree left behind is removed
    /// ([`Transport::cleanup_tree`]). What goes wrong with those children can no longer
    /// reach the caller: it is logged (at `error` level) instead. Dropped outside a
    /// runtime (the runtime itself is going away), only the clean-up runs; the
    /// supervisors go with the runtime, and each backend's child handle stops its child
    /// when dropped, without the ladder.
    ///
    /// # Errors
    /// [`RootError::Config`] for an unknown backend or transport,
    /// [`RootError::Listen`] if the root cannot listen, [`RootError::Nursery`] if the
    /// body or any child failed, [`RootError::Discovery`] if `BROOD_REGISTRAR` or
    /// `BROOD_SECRET_FILE` is set and unusable.
    pub async fn run<R>(
        self,
        body: impl AsyncFnOnce(&Nursery) -> Result<R, FnError>,
    ) -> Result<R, RootError> {
        let brood = self.brood.build();
        let backend = pick(self.backend, BACKEND_ENV, brood.default_backend());
        let transport_key = pick(self.transport, TRANSPORT_ENV, brood.default_transport());
        let backend = brood.backend(&backend.unwrap_or_default())?.key();
        let transport = brood.transport(&transport_key.unwrap_or_default())?;
        let hub = match self.registrar {
            Some(a) => Some(a),
            None => registrar_from_env()?,
        };
        let secret = match self.secret {
            Some(s) => s,
            None => secret_from_env()?.unwrap_or_else(TreeSecret::random),
        };

        let id = ActorId::new(self.name.clone());
        let own_tree = self.listen_at.is_none();
        let addr = match self.listen_at {
            Some(a) => a,
            None => transport.address_for(&id, None)?,
        };
        let listener = transport.bind(&addr).await?;
        let mut vars = RuntimeVars::root(self.name, backend);
        vars.root_addr = Some(addr.to_string());
        vars.registry_addrs = vec![addr.to_string()];
        vars.enabled_transports = vec![transport.key().to_owned()];
        vars.log_level = crate::logging::default_level();
        // The terminal's foreground group is the tree's: while another group has it (a
        // debugger prompt), the tree's log lines are held back.
        if let Some(group) = crate::logging::terminal_group() {
            vars.services.insert(
                crate::logging::TERMINAL_GROUP_SERVICE.to_owned(),
                group.to_string(),
            );
            crate::logging::set_tree_group(group);
        }
        self.vars.apply(&mut vars);

        crate::unwind::install_location_hook();
        // The root is its tree's registrar.
        let table = Arc::new(Table::default());
        let inner = ActorInner::new(ActorSetup {
            id,
            vars,
            program: Arc::new(brood),
            transport: transport.clone(),
            addr: addr.clone(),
            policy: self.policy,
            limits: self.limits,
            secret,
            extensions: spawn_api::extensions::Extensions::default(),
            live_children: None,
            registrar: Some(table.clone()),
        });
        // Cannot be refused: a root has no parent, and the table is empty.
        let _ = table.upsert(Origin::Local, crate::discovery::own_info(&inner));
        inner.spawn_accept_loop(listener, transport.max_frame());
        // A registrar started with `BROOD_REGISTRAR` pointing at itself joins nobody.
        if let Some(hub) = hub.filter(|h| *h != addr) {
            let me = inner.clone();
            inner.spawn_io(crate::discovery::federate(me, hub));
        }
        let mut guard = ShutdownOnDrop {
            inner: Some(inner.clone()),
            transport: transport.clone(),
            own_tree,
        };
        let span = inner.span.clone();
        let result = runtime_vars::scope(inner.vars.clone(), run_nursery(&inner, body))
            .instrument(span)
            .await;
        // Still armed while the actor shuts down: dropped meanwhile, the guard finishes
        // the shutdown (and the clean-up) in the background.
        inner.shutdown().await;
        guard.inner = None;
        end_tree(&*transport, &addr, own_tree);
        result.map_err(RootError::Nursery)
    }
}

fn registrar_from_env() -> Result<Option<Addr>, RootError> {
    let var = crate::discovery::REGISTRAR_ENV;
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            v.parse()
                .map(Some)
                .map_err(|e: spawn_api::BadAddr| RootError::Discovery {
                    var,
                    reason: e.to_string(),
                })
        }
        _ => Ok(None),
    }
}

fn secret_from_env() -> Result<Option<TreeSecret>, RootError> {
    let var = crate::discovery::SECRET_FILE_ENV;
    match std::env::var_os(var) {
        Some(path) if !path.is_empty() => crate::discovery::read_secret_file(&path)
            .map(Some)
            .map_err(|e| RootError::Discovery {
                var,
                reason: format!("{}: {e}", std::path::Path::new(&path).display()),
            }),
        _ => Ok(None),
    }
}

fn pick(explicit: Option<String>, env: &str, default: Option<&str>) -> Option<String> {
    explicit
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .or_else(|| default.map(str::to_owned))
}

/// If the root's future is dropped before it finished, shut the actor down in the
/// background (its children are already being torn down by their supervisors).
struct ShutdownOnDrop {
    inner: Option<Arc<ActorInner>>,
    transport: Arc<dyn Transport>,
    own_tree: bool,
}

/// Remove what the tree left at its root's address: the whole tree's place if the
/// transport chose it for this root, only the root's endpoint if the program did
/// ([`RootBuilder::listen_at`]: the directory is not ours).
fn end_tree(transport: &dyn Transport, addr: &Addr, own_tree: bool) {
    if own_tree {
        transport.cleanup_tree(addr);
    } else {
        transport.cleanup(addr);
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.cancel.cancel();
            let transport = self.transport.clone();
            let own_tree = self.own_tree;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    inner.shutdown().await;
                    end_tree(&*transport, &inner.addr, own_tree);
                });
            } else {
                inner.remove_extra_endpoints();
                end_tree(&*transport, &inner.addr, own_tree);
            }
        }
    }
}
