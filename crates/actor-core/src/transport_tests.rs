//! Per-child transports ([`ActorOptions::transport`]) in one process: a tree whose actors
//! run as tasks (an in-process backend) over two in-memory transports, `mem` and `alt`
//! (a second [`MemTransport`] under another key), so that a child on another transport
//! than its parent's, a grandchild back on its grandparent's, and what each is told are
//! all seen without a process or a file.

use std::io;

use spawn_api::mem::MemTransport;
use spawn_api::{ActorEntry, Channel, Extensions, Listener, TransportError};
use tokio::task::JoinHandle;

use super::*;
use crate::{Brood, Registry};

/// A transport that is a [`MemTransport`] under another key: its addresses are the mem
/// addresses with the key replaced.
#[derive(Debug, Clone)]
struct Alias {
    inner: MemTransport,
    key: &'static str,
    /// How long `bind` takes (a loaded machine, a slow file system).
    bind_delay: std::time::Duration,
}

impl Alias {
    fn unaliased(&self, addr: &Addr) -> Result<Addr, TransportError> {
        if addr.transport() != self.key {
            return Err(TransportError::BadAddr {
                addr: addr.to_string(),
                reason: format!("not a {} address", self.key),
            });
        }
        Ok(Addr::new(self.inner.key(), addr.endpoint()))
    }

    fn aliased(&self, addr: &Addr) -> Addr {
        Addr::new(self.key, addr.endpoint())
    }
}

#[derive(Debug)]
struct AliasListener {
    inner: Box<dyn Listener>,
    addr: Addr,
}

#[spawn_api::async_trait]
impl Listener for AliasListener {
    fn local_addr(&self) -> &Addr {
        &self.addr
    }

    async fn accept(&mut self) -> Result<Box<dyn Channel>, TransportError> {
        self.inner.accept().await
    }
}

#[spawn_api::async_trait]
impl Transport for Alias {
    fn key(&self) -> &'static str {
        self.key
    }

    fn address_for(&self, id: &ActorId, near: Option<&Addr>) -> Result<Addr, TransportError> {
        let near = near.map(|a| self.unaliased(a)).transpose()?;
        Ok(self.aliased(&self.inner.address_for(id, near.as_ref())?))
    }

    async fn bind(&self, addr: &Addr) -> Result<Box<dyn Listener>, TransportError> {
        tokio::time::sleep(self.bind_delay).await;
        let inner = self.inner.bind(&self.unaliased(addr)?).await?;
        Ok(Box::new(AliasListener {
            inner,
            addr: addr.clone(),
        }))
    }

    async fn connect(&self, addr: &Addr) -> Result<Box<dyn Channel>, TransportError> {
        self.inner.connect(&self.unaliased(addr)?).await
    }

    fn cleanup(&self, addr: &Addr) {
        if let Ok(a) = self.unaliased(addr) {
            self.inner.cleanup(&a);
        }
    }

    fn cleanup_tree(&self, root: &Addr) {
        if let Ok(a) = self.unaliased(root) {
            self.inner.cleanup_tree(&a);
        }
    }

    fn max_frame(&self) -> usize {
        self.inner.max_frame()
    }
}

/// A backend that runs each child actor as a task of the parent's runtime.
#[derive(Debug)]
struct Tasks;

#[derive(Debug)]
struct TaskChild {
    task: JoinHandle<i32>,
    exit: Option<ChildExit>,
}

#[spawn_api::async_trait]
impl Child for TaskChild {
    fn pid(&self) -> Option<u32> {
        None
    }

    async fn wait(&mut self) -> ChildExit {
        if let Some(e) = &self.exit {
            return e.clone();
        }
        let exit = match (&mut self.task).await {
            Ok(code) => ChildExit::Exited(code),
            Err(_) => ChildExit::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false,
            },
        };
        self.exit = Some(exit.clone());
        exit
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.task.abort();
        Ok(())
    }

    fn kill(&mut self) -> io::Result<()> {
        self.task.abort();
        Ok(())
    }
}

#[spawn_api::async_trait]
impl spawn_api::SpawnBackend for Tasks {
    fn key(&self) -> &'static str {
        "task"
    }

    async fn spawn(&self, req: &mut SpawnRequest) -> Result<Box<dyn Child>, SpawnError> {
        let entry: ActorEntry = req.entry.clone();
        let boot = req.boot.clone();
        let task =
            tokio::spawn(async move { entry.serve(boot, Extensions::default()).await.exit_code() });
        Ok(Box::new(TaskChild { task, exit: None }))
    }
}

/// Where an actor listens, and its vars' transports.
type Info = (String, Vec<String>);

crate::call!(WhereAmI: () => (String, Vec<String>));
crate::call!(SpawnAndAsk: Option<String> => (String, Vec<String>));

fn info(cx: &ActorCx) -> Info {
    (cx.addr().to_string(), cx.vars().enabled_transports.clone())
}

fn registry() -> Registry {
    Registry::new()
        .call(WhereAmI, |cx, ()| async move { Ok(info(&cx)) })
        .call(SpawnAndAsk, |cx, transport: Option<String>| async move {
            let info = cx
                .open_nursery(async |n| {
                    let mut opts = ActorOptions::new();
                    opts.transport = transport;
                    let g = n.start_actor("g", opts).await?;
                    Ok(g.run(WhereAmI, ()).await?)
                })
                .await?;
            Ok(info)
        })
}

/// How many listeners a mem transport holds.
fn listeners(t: &impl std::fmt::Debug) -> String {
    let s = format!("{t:?}");
    let at = s
        .find("listeners: ")
        .expect("the mem transport shows its listeners");
    s[at + "listeners: ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect()
}

/// The tree part (`t<n>`) of a mem address.
fn tree(addr: &str) -> &str {
    let endpoint = addr.split_once(':').map_or(addr, |(_, e)| e);
    endpoint.split_once('/').map_or(endpoint, |(t, _)| t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_on_another_transport_is_reached_over_it_and_its_children_inherit_it() {
    let mem = MemTransport::new();
    let alt = Alias {
        inner: MemTransport::new(),
        key: "alt",
        bind_delay: std::time::Duration::ZERO,
    };
    let brood = Brood::builder()
        .registry(registry())
        .backend(Tasks)
        .transport(mem.clone())
        .transport(alt.clone())
        .build();
    let (mem2, alt2) = (mem.clone(), alt.clone());
    let out = brood
        .root()
        .use_backend("task")
        .use_transport("mem")
        .run(async move |n| {
            let root_addr = n.actor.addr.to_string();
            assert!(root_addr.starts_with("mem:"), "{root_addr}");

            // The default: the parent's transport.
            let same = n.start_actor("same", ActorOptions::new()).await?;
            let (addr, enabled) = same.run(WhereAmI, ()).await?;
            assert!(addr.starts_with("mem:"), "{addr}");
            assert_eq!(enabled, ["mem"]);
            assert_eq!(listeners(&alt2.inner), "0", "nobody asked for alt yet");

            // A child on alt: it listens there, and so does its parent (for it).
            let c = n
                .start_actor("c", ActorOptions::new().transport("alt"))
                .await?;
            let (addr, enabled) = c.run(WhereAmI, ()).await?;
            assert!(addr.starts_with("alt:"), "{addr}");
            assert_eq!(enabled, ["alt", "mem"]);
            assert_eq!(
                listeners(&alt2.inner),
                "2",
                "the child and the root's for it"
            );
            assert_eq!(listeners(&mem2), "2", "the root and `same`");
            let c_tree = tree(&addr).to_owned();

            // A second child on alt reuses the root's listener there.
            let c2 = n
                .start_actor("c2", ActorOptions::new().transport("alt"))
                .await?;
            let (addr2, _) = c2.run(WhereAmI, ()).await?;
            assert_eq!(tree(&addr2), c_tree, "both next to the root's alt listener");
            assert_eq!(listeners(&alt2.inner), "3");

            // Its children default to alt, in the same tree.
            let (g, enabled) = c.run(SpawnAndAsk, None).await?;
            assert!(g.starts_with("alt:"), "{g}");
            assert_eq!(tree(&g), c_tree);
            assert_eq!(enabled, ["alt", "mem"]);

            // A grandchild back on mem is placed in the root's mem tree.
            let (g, enabled) = c.run(SpawnAndAsk, Some("mem".to_owned())).await?;
            assert!(g.starts_with("mem:"), "{g}");
            assert_eq!(
                tree(&g),
                tree(&root_addr),
                "next to the tree's mem location"
            );
            assert_eq!(enabled, ["mem", "alt"]);

            // An unknown key is a typed error, listing what there is.
            match n
                .start_actor("x", ActorOptions::new().transport("carrier-pigeon"))
                .await
            {
                Err(SpawnError::UnknownTransport { key, known }) => {
                    assert_eq!(key, "carrier-pigeon");
                    assert_eq!(known, "mem, alt");
                }
                other => panic!("expected UnknownTransport, got {other:?}"),
            }
            Ok(n.live_children())
        })
        .await
        .expect("the tree runs");
    assert_eq!(out, 3);
    assert_eq!(listeners(&mem), "0", "nothing left on mem");
    assert_eq!(listeners(&alt.inner), "0", "nothing left on alt");
}

/// Regression: a child was registered (and `start_actor` returned) once its handshake was
/// done, while its listener could still be binding: a sibling that found it by name got
/// "no such file" (seen under load on `proc`/`uds`). The child now listens before it says
/// hello, so whoever learns of it can reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_listens_before_it_is_registered_however_slow_its_bind() {
    let slow = Alias {
        inner: MemTransport::new(),
        key: "slow",
        bind_delay: std::time::Duration::from_millis(300),
    };
    let brood = Brood::builder()
        .registry(registry())
        .backend(Tasks)
        .transport(slow)
        .build();
    brood
        .root()
        .use_backend("task")
        .use_transport("slow")
        .run(async move |n| {
            n.start_actor("b", ActorOptions::new()).await?;
            let b = n.actor().find_actor("b").await?.expect("b is registered");
            let (addr, _) = b.run(WhereAmI, ()).await?;
            assert!(addr.starts_with("slow:"), "{addr}");
            Ok(())
        })
        .await
        .expect("the registered child is reachable");
}
