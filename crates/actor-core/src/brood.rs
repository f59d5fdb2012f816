//! [`Brood`]: everything the actors of one program can do — the functions they serve,
//! the backends they spawn with, the transports they talk over, the hooks their
//! teardown calls.
//!
//! A program builds one `Brood` and uses it twice: [`Brood::enter`] at the top of
//! `main` turns the process into a child actor when a backend started it as one, and
//! [`Brood::root`] opens the root actor otherwise. Children are the same program, so
//! they build the same `Brood`.

use std::sync::Arc;

use spawn_api::{ActorEntry, SpawnBackend, SpawnError, TeardownHook, Transport};

use crate::actor::{Handler, Program};
use crate::registry::Registry;

/// The environment variable that chooses a root's spawn backend by key.
pub const BACKEND_ENV: &str = "BROOD_BACKEND";
/// The environment variable that chooses a root's transport by key.
pub const TRANSPORT_ENV: &str = "BROOD_TRANSPORT";

/// The program's actor configuration. Cheap to clone.
///
/// ```no_run
/// use actor_core::{Brood, Registry};
/// # #[derive(Debug)] struct MyBackend;
/// # #[spawn_api::async_trait] impl spawn_api::SpawnBackend for MyBackend {
/// #   fn key(&self) -> &'static str { "mine" }
/// #   async fn spawn(&self, _r: &mut spawn_api::SpawnRequest) -> Result<Box<dyn spawn_api::Child>, spawn_api::SpawnError> { unimplemented!() }
/// # }
/// fn main() {
///     let brood = Brood::builder()
///         .registry(Registry::new())
///         .backend(MyBackend)
///         .build();
///     brood.enter(); // a spawned child never returns from here
///     // ... open the root with brood.root() ...
/// }
/// ```
#[derive(Clone)]
pub struct Brood {
    inner: Arc<BroodBuilder>,
}

impl std::fmt::Debug for Brood {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brood")
            .field("functions", &self.inner.registry.names().count())
            .field("backends", &self.backend_keys())
            .field("transports", &self.transport_keys())
            .finish()
    }
}

impl Brood {
    /// Start building.
    pub fn builder() -> BroodBuilder {
        BroodBuilder::default()
    }

    /// If this process was started by one of the configured backends to be an actor,
    /// run that actor and exit the process with its status; otherwise return at once.
    ///
    /// Call it first thing in `main` (and in a test harness' `main`), before starting
    /// threads or a runtime: a child must not run the parent's program.
    pub fn enter(&self) {
        let entry = ActorEntry::new(self.clone());
        for b in &self.inner.backends {
            if let Some(code) = b.enter(&entry) {
                std::process::exit(code);
            }
        }
    }

    /// The functions every actor of this program serves.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The backend with key `key`.
    ///
    /// # Errors
    /// [`SpawnError::UnknownBackend`], listing the configured keys.
    pub fn backend(&self, key: &str) -> Result<Arc<dyn SpawnBackend>, SpawnError> {
        self.inner
            .backends
            .iter()
            .find(|b| b.key() == key)
            .cloned()
            .ok_or_else(|| SpawnError::UnknownBackend {
                key: key.to_owned(),
                known: self.backend_keys().join(", "),
            })
    }

    /// The transport with key `key`.
    ///
    /// # Errors
    /// [`SpawnError::UnknownTransport`], listing the configured keys.
    pub fn transport(&self, key: &str) -> Result<Arc<dyn Transport>, SpawnError> {
        self.inner
            .transports
            .iter()
            .find(|t| t.key() == key)
            .cloned()
            .ok_or_else(|| SpawnError::UnknownTransport {
                key: key.to_owned(),
                known: self.transport_keys().join(", "),
            })
    }

    /// The teardown hooks, in the order they were added.
    pub fn hooks(&self) -> &[Arc<dyn TeardownHook>] {
        &self.inner.hooks
    }

    /// The configured backend keys.
    pub fn backend_keys(&self) -> Vec<&'static str> {
        self.inner.backends.iter().map(|b| b.key()).collect()
    }

    /// The configured transport keys.
    pub fn transport_keys(&self) -> Vec<&'static str> {
        self.inner.transports.iter().map(|t| t.key()).collect()
    }

    /// The backend a root uses unless told otherwise: the one named by
    /// [`BroodBuilder::default_backend`], else the first added.
    pub fn default_backend(&self) -> Option<&str> {
        self.inner
            .default_backend
            .as_deref()
            .or_else(|| self.inner.backends.first().map(|b| b.key()))
    }

    /// The transport a root uses unless told otherwise, chosen like
    /// [`Brood::default_backend`].
    pub fn default_transport(&self) -> Option<&str> {
        self.inner
            .default_transport
            .as_deref()
            .or_else(|| self.inner.transports.first().map(|t| t.key()))
    }

    pub(crate) fn to_builder(&self) -> BroodBuilder {
        (*self.inner).clone()
    }
}

/// Builds a [`Brood`].
#[derive(Clone, Default)]
pub struct BroodBuilder {
    registry: Registry,
    /// The runtime's own functions (discovery), served before the registry's: a
    /// program cannot shadow them by accident.
    builtins: Registry,
    backends: Vec<Arc<dyn SpawnBackend>>,
    transports: Vec<Arc<dyn Transport>>,
    hooks: Vec<Arc<dyn TeardownHook>>,
    post_mortem: Option<crate::actor::PostMortem>,
    default_backend: Option<String>,
    default_transport: Option<String>,
}

impl std::fmt::Debug for BroodBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroodBuilder")
            .field("functions", &self.registry.names().count())
            .field(
                "backends",
                &self.backends.iter().map(|b| b.key()).collect::<Vec<_>>(),
            )
            .field(
                "transports",
                &self.transports.iter().map(|t| t.key()).collect::<Vec<_>>(),
            )
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl BroodBuilder {
    /// Serve these functions (replaces any registry set before).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Add a spawn backend; one with the same key is replaced.
    pub fn backend(mut self, backend: impl SpawnBackend) -> Self {
        self.backends.retain(|b| b.key() != backend.key());
        self.backends.push(Arc::new(backend));
        self
    }

    /// Add a transport; one with the same key is replaced.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transports.retain(|t| t.key() != transport.key());
        self.transports.push(Arc::new(transport));
        self
    }

    /// Add a teardown hook.
    pub fn hook(mut self, hook: impl TeardownHook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Run `stop` when a handler of an actor in debug mode fails or panics, before its
    /// error is reported (the call's caller sees the error only once it returns): the
    /// place for a post-mortem debugger. Cancellations are not failures and do not stop.
    ///
    /// ```
    /// let brood = actor_core::Brood::builder()
    ///     .post_mortem(|cx, why| async move {
    ///         eprintln!("{} failed: {why}", cx.path());
    ///     })
    ///     .build();
    /// # let _ = brood;
    /// ```
    pub fn post_mortem<F, Fut>(mut self, stop: F) -> Self
    where
        F: Fn(crate::ActorCx, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.post_mortem = Some(Arc::new(move |cx, why| Box::pin(stop(cx, why))));
        self
    }

    /// Make `key` the default backend of roots.
    pub fn default_backend(mut self, key: impl Into<String>) -> Self {
        self.default_backend = Some(key.into());
        self
    }

    /// Make `key` the default transport of roots.
    pub fn default_transport(mut self, key: impl Into<String>) -> Self {
        self.default_transport = Some(key.into());
        self
    }

    /// Finish.
    pub fn build(mut self) -> Brood {
        self.builtins = crate::discovery::service();
        Brood {
            inner: Arc::new(self),
        }
    }
}

impl Program for Brood {
    fn handler(&self, name: &str) -> Option<Handler> {
        self.inner
            .builtins
            .get(name)
            .or_else(|| self.inner.registry.get(name))
            .cloned()
    }

    fn backend(&self, key: &str) -> Result<Arc<dyn SpawnBackend>, SpawnError> {
        Brood::backend(self, key)
    }

    fn transport(&self, key: &str) -> Result<Arc<dyn Transport>, SpawnError> {
        Brood::transport(self, key)
    }

    fn hooks(&self) -> Vec<Arc<dyn TeardownHook>> {
        self.inner.hooks.clone()
    }

    fn post_mortem(&self) -> Option<crate::actor::PostMortem> {
        self.inner.post_mortem.clone()
    }

    fn entry(&self) -> ActorEntry {
        ActorEntry::new(self.clone())
    }
}
