//! The child side: what a spawned actor runs, whichever backend started it.
//!
//! [`Brood`] is the runtime's [`ActorMain`]: a backend's child side hands its
//! [`ChildBoot`] to [`ActorMain::serve`] (in-process backends, on a runtime of their own)
//! or [`ActorMain::run_process`] (process backends, which also want logging, SIGTERM
//! handling and a runtime built for them). The child listens where its parent said,
//! connects back, handshakes, receives its [`SpawnSpec`], and serves until its parent
//! cancels it or goes away.

use std::time::Duration;

use tracing::Instrument;

use crate::actor::{ActorInner, ActorSetup};
use crate::brood::Brood;
use crate::conn::{Conn, Peer, Side};
use crate::handshake::{self, Handshaken};
use spawn_api::{
    ActorMain, ChildBoot, ChildOutcome, EXIT_SETUP, Extensions, FrameSource, Msg, ProtocolError,
    SpawnSpec,
};

/// What the process backends' entry sets up for the one actor that is the process.
struct ProcessActor {
    /// The actor's count of live children, which the SIGTERM handler reads.
    live_children: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Readable when a SIGTERM arrived while the actor had children.
    sigterm: Option<std::os::fd::OwnedFd>,
}

/// [`ActorMain::serve`]; for a process actor (`process`), the process's log output is set up
/// while the first handshake is in flight (it costs tens of microseconds a child need not
/// wait for), and SIGTERM is watched. Failures before that point are returned, not
/// logged.
async fn serve(
    brood: Brood,
    boot: ChildBoot,
    process: Option<ProcessActor>,
    extensions: Extensions,
) -> ChildOutcome {
    let init_logging = process.is_some();
    crate::unwind::install_location_hook();
    let span = crate::logging::actor_span(&boot.path);
    let live_children = process.as_ref().map(|p| p.live_children.clone());
    let sigterm = process.and_then(|p| p.sigterm);
    match connect(&brood, &boot, init_logging, live_children, extensions)
        .instrument(span.clone())
        .await
    {
        Ok((inner, parent_conn)) => {
            let vars = inner.vars.clone();
            runtime_vars::scope(vars, async move {
                let _ = inner.parent.set(parent_conn.clone());
                if let Some(fd) = sigterm {
                    watch_sigterm(&inner, fd);
                }
                if parent_conn.is_closed() {
                    inner.cancel.cancel();
                }
                inner.cancel.cancelled().await;
                let failure = inner.shutdown().await;
                let asked = *inner.exit_code.lock().unwrap();
                match (failure, asked) {
                    (Some(e), _) => ChildOutcome::Failed(e),
                    (None, Some(code)) => ChildOutcome::Exited(code),
                    (None, None) => ChildOutcome::Clean,
                }
            })
            .instrument(span)
            .await
        }
        Err(why) => {
            tracing::error!(parent = %boot.parent_addr, "{why}");
            ChildOutcome::SetupFailed(why)
        }
    }
}

async fn connect(
    brood: &Brood,
    boot: &ChildBoot,
    init_logging: bool,
    live_children: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    extensions: Extensions,
) -> Result<(std::sync::Arc<ActorInner>, Conn), String> {
    // The parent listens on our transport (see `ActorOptions::transport`); the two
    // addresses are looked up separately all the same, so a parent that placed us on
    // another transport than its channel's is served too.
    let parent_transport = brood
        .transport(boot.parent_addr.transport())
        .map_err(|e| e.to_string())?;
    let transport = if boot.listen_addr.transport() == parent_transport.key() {
        parent_transport.clone()
    } else {
        brood
            .transport(boot.listen_addr.transport())
            .map_err(|e| e.to_string())?
    };
    // Listening before saying hello: the parent registers us once the handshake is
    // done, and whoever finds us then must be able to connect (a listener bound after
    // the hello left a window where a lookup answered an address nobody listened at).
    // Logging is set up while the channel to the parent opens.
    let listen = async {
        let listener = transport.bind(&boot.listen_addr).await;
        if init_logging {
            crate::logging::init_process_logging(&boot.log_level);
        }
        listener
    };
    let (listener, ch) = tokio::join!(listen, parent_transport.connect(&boot.parent_addr));
    let listener = listener.map_err(|e| format!("cannot listen at {}: {e}", boot.listen_addr))?;
    let ch = ch.map_err(|e| format!("cannot reach the parent: {e}"))?;
    let Handshaken {
        peer_info,
        sink,
        mut source,
        ..
    } = handshake::connect(
        ch,
        &boot.id,
        &boot.secret,
        Some(&boot.parent),
        Some(boot.nonce),
        boot.connect_timeout,
    )
    .await
    .map_err(|e| format!("handshake with the parent failed: {e}"))?;
    let spec = receive_spec(&mut *source, boot)
        .await
        .map_err(|e| format!("handshake with the parent failed: {e}"))?;
    if let Some(group) = spec
        .vars
        .services
        .get(crate::logging::TERMINAL_GROUP_SERVICE)
        .and_then(|g| g.parse().ok())
    {
        crate::logging::set_tree_group(group);
    }
    let parent_path = spec.vars.tree_path[..spec.vars.tree_path.len().saturating_sub(1)].join("/");
    let max_frame = transport.max_frame();
    let inner = ActorInner::new(ActorSetup {
        id: boot.id.clone(),
        vars: spec.vars,
        program: std::sync::Arc::new(brood.clone()),
        transport,
        addr: boot.listen_addr.clone(),
        policy: spec.teardown,
        limits: spec.limits,
        secret: boot.secret.clone(),
        extensions,
        live_children,
        registrar: None,
    });
    let conn = Conn::start(
        inner.clone(),
        boot.parent.clone(),
        parent_path,
        peer_info,
        Peer::Parent,
        sink,
        source,
        Side::Connector,
        parent_transport.max_frame(),
    );
    inner.spawn_accept_loop(listener, max_frame);
    Ok((inner, conn))
}

async fn receive_spec(source: &mut dyn FrameSource, boot: &ChildBoot) -> Result<SpawnSpec, String> {
    let frame = match tokio::time::timeout(boot.connect_timeout, source.recv()).await {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return Err("the parent closed the channel".to_owned()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(ProtocolError::HandshakeTimeout(boot.connect_timeout).to_string()),
    };
    match frame.msg {
        Msg::SpawnSpec(spec) if spec.child == boot.id => Ok(*spec),
        Msg::SpawnSpec(spec) => Err(format!("spawn spec for {} sent to {}", spec.child, boot.id)),
        Msg::Error { error, .. } => Err(format!("the parent refused us: {error}")),
        other => Err(ProtocolError::Unexpected {
            expected: "SpawnSpec",
            got: other.kind_name(),
        }
        .to_string()),
    }
}

/// Cancel the actor when a SIGTERM arrives while it has children (see
/// `os_wrappers::sigterm`).
fn watch_sigterm(inner: &std::sync::Arc<ActorInner>, fd: std::os::fd::OwnedFd) {
    let fd = match os_wrappers::pidfd::register(fd, tokio::io::Interest::READABLE) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM");
            return;
        }
    };
    let me = inner.clone();
    inner.spawn_io(async move {
        tokio::select! {
            _ = me.io_stop.cancelled() => {}
            r = fd.readable() => {
                if r.is_ok() {
                    tracing::warn!("SIGTERM with children alive: tearing them down first");
                    me.cancel.cancel();
                }
            }
        }
    });
}

/// The whole life of a child *process*: build the runtime the boot asks for, set up
/// logging, serve, and return the process exit code.
fn run_process(brood: &Brood, boot: ChildBoot) -> i32 {
    let rt = match boot.runtime.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brood child {}: cannot build a runtime: {e}", boot.path);
            return EXIT_SETUP;
        }
    };
    let path = boot.path.clone();
    // Installed before the actor serves anything, so that a handler that sets its own
    // disposition (ignoring SIGTERM, say) has the last word.
    let live_children = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sigterm = match os_wrappers::sigterm::install(live_children.clone()) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("brood child {path}: SIGTERM keeps its default action: {e}");
            None
        }
    };
    let process = ProcessActor {
        live_children,
        sigterm,
    };
    let outcome = rt.block_on(serve(
        brood.clone(),
        boot,
        Some(process),
        Extensions::default(),
    ));
    if let ChildOutcome::SetupFailed(why) = &outcome {
        // Perhaps before logging was set up: say it on stderr in any case.
        eprintln!("brood child {path}: {why}");
    }
    // Tasks still running here are stuck; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(50));
    outcome.exit_code()
}

impl ActorMain for Brood {
    fn run_process(&self, boot: ChildBoot) -> i32 {
        run_process(self, boot)
    }

    fn serve(
        &self,
        boot: ChildBoot,
        extensions: Extensions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ChildOutcome> + Send + 'static>> {
        Box::pin(serve(self.clone(), boot, None, extensions))
    }
}
