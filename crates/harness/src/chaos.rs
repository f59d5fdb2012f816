//! Wrappers that break things on purpose, at chosen moments of a child's life: a backend
//! whose children are killed right after they are started or when a test says so, and
//! a transport whose listener holds each accepted channel for a while (so a test can act
//! while a child waits in its handshake).
//!
//! Both keep the key of what they wrap, so a root built with them
//! ([`RootBuilder::backend`](brood::RootBuilder::backend),
//! [`RootBuilder::transport`](brood::RootBuilder::transport)) uses them in place of
//! the real one, while its children run the program's ordinary configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spawn_api::{
    Addr, Channel, Child, ChildExit, Listener, SpawnBackend, SpawnError, SpawnRequest, Transport,
    TransportError, async_trait,
};
use tokio::sync::{Notify, watch};

/// A backend that starts children through `inner` and kills them on cue.
#[derive(Debug, Clone)]
pub struct ChaosBackend {
    inner: Arc<dyn SpawnBackend>,
    /// Kill this many of the next children right after they are started (before they
    /// can connect back).
    kill_at_spawn: Arc<AtomicUsize>,
    trigger: watch::Sender<u64>,
}

impl ChaosBackend {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn SpawnBackend>) -> ChaosBackend {
        ChaosBackend {
            inner,
            kill_at_spawn: Arc::new(AtomicUsize::new(0)),
            trigger: watch::Sender::new(0),
        }
    }

    /// Kill the next `n` children as soon as the backend has started them.
    pub fn kill_next_at_spawn(&self, n: usize) {
        self.kill_at_spawn.store(n, Ordering::SeqCst);
    }

    /// Kill every live child started through this backend now (the supervisor sees the
    /// death as it would any other).
    pub fn kill_now(&self) {
        self.trigger.send_modify(|g| *g += 1);
    }
}

#[async_trait]
impl SpawnBackend for ChaosBackend {
    fn key(&self) -> &'static str {
        self.inner.key()
    }

    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        // Subscribed first: a cue given while the backend starts the child (which may
        // already connect back) still reaches it.
        let trigger = self.trigger.subscribe();
        let mut child = self.inner.spawn(req).await?;
        let kill = self
            .kill_at_spawn
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if kill {
            tracing::debug!(actor = %req.boot.path, "chaos: killing a child right after its start");
            let _ = child.kill();
        }
        Ok(Box::new(ChaosChild {
            inner: child,
            trigger,
        }))
    }
}

/// A child that is killed when its [`ChaosBackend`] says so.
#[derive(Debug)]
struct ChaosChild {
    inner: Box<dyn Child>,
    trigger: watch::Receiver<u64>,
}

#[async_trait]
impl Child for ChaosChild {
    fn pid(&self) -> Option<u32> {
        self.inner.pid()
    }

    async fn wait(&mut self) -> ChildExit {
        loop {
            tokio::select! {
                exit = self.inner.wait() => return exit,
                r = self.trigger.changed() => {
                    if r.is_err() {
                        return self.inner.wait().await;
                    }
                    tracing::debug!("chaos: killing a child on cue");
                    let _ = self.inner.kill();
                }
            }
        }
    }

    fn terminate(&mut self) -> std::io::Result<()> {
        self.inner.terminate()
    }

    fn kill(&mut self) -> std::io::Result<()> {
        self.inner.kill()
    }
}

/// A transport whose listeners hold every accepted channel for `delay` before handing it
/// to the actor, and say when they accepted one.
#[derive(Debug, Clone)]
pub struct SlowAccept {
    inner: Arc<dyn Transport>,
    delay: Duration,
    accepted: Arc<Notify>,
}

impl SlowAccept {
    /// Wrap `inner`, holding each accepted channel for `delay`.
    pub fn new(inner: Arc<dyn Transport>, delay: Duration) -> SlowAccept {
        SlowAccept {
            inner,
            delay,
            accepted: Arc::new(Notify::new()),
        }
    }

    /// Resolves when a listener of this transport accepts its next channel (its peer
    /// then waits for the handshake's answer for `delay`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an accept that happens while nobody waits, or that wakes a future
    /// which is then dropped, is kept for the next call (one at most: a `Notify` permit).
    pub async fn accepted(&self) {
        self.accepted.notified().await
    }
}

#[async_trait]
impl Transport for SlowAccept {
    fn key(&self) -> &'static str {
        self.inner.key()
    }

    fn address_for(
        &self,
        id: &brood::ActorId,
        near: Option<&Addr>,
    ) -> Result<Addr, TransportError> {
        self.inner.address_for(id, near)
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        Ok(Box::new(SlowListener {
            inner: self.inner.bind(addr).await?,
            delay: self.delay,
            accepted: self.accepted.clone(),
        }))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        self.inner.connect(addr).await
    }

    fn cleanup(&self, addr: &Addr) {
        self.inner.cleanup(addr)
    }

    fn cleanup_tree(&self, root: &Addr) {
        self.inner.cleanup_tree(root)
    }

    fn max_frame(&self) -> usize {
        self.inner.max_frame()
    }
}

#[derive(Debug)]
struct SlowListener {
    inner: Box<dyn Listener>,
    delay: Duration,
    accepted: Arc<Notify>,
}

#[async_trait]
impl Listener for SlowListener {
    fn local_addr(&self) -> &Addr {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        let ch = self.inner.accept().await?;
        self.accepted.notify_one();
        tokio::time::sleep(self.delay).await;
        Ok(ch)
    }
}
