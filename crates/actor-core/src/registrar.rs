//! The registrar's table: which actors exist, where they listen, and who told us.
//!
//! The root of every tree keeps one. Entries come from three places, and each entry
//! remembers which ([`Origin`]), because that is what decides when it goes away:
//!
//! - **this tree** ([`Origin::Local`]): a parent registers a child once the child proved
//!   itself, and removes it when it reaps it, whatever the way it ended (SIGKILL
//!   included). Removing an actor removes everything registered under it;
//! - **a member** ([`Origin::Member`]): another program's root that joined this one as its
//!   registrar. Its entries go when its session ends (the member ended or died);
//! - **our registrar** ([`Origin::Hub`]): the entries of the other programs, learned from
//!   the registrar this root joined. They go when that session ends.
//!
//! Every change bumps a version ([`Table::watch`], what `wait_for_actor` waits on) and is
//! published on a feed ([`Table::subscribe`], what federation sessions forward).
//!
//! The table holds plain data and never blocks: its lock is never held across an await.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use spawn_api::{ActorId, Addr};
use tokio::sync::{broadcast, watch};

/// Most entries a table holds: a registration past it is refused, so no peer can make a
/// registrar grow without bound. With [`MAX_ENTRY_BYTES`], a table holds at most ~50 MiB.
pub const MAX_ENTRIES: usize = 1 << 14;

/// Most bytes of text one entry may carry (its path, name, address and backend
/// together): a longer one is refused.
pub const MAX_ENTRY_BYTES: usize = 3 << 10;

/// One registered actor, as lookups return it.
///
/// ```
/// # use actor_core::{ActorId, ActorInfo, Addr};
/// # fn show(info: &ActorInfo) {
/// println!("{} (pid {}, {}) at {}", info.path, info.pid, info.backend, info.addr);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActorInfo {
    /// The actor's id (its name and a unique number).
    pub id: ActorId,
    /// Its tree path (`root/worker/leaf`).
    pub path: String,
    /// Where it listens: what a direct portal connects to.
    pub addr: Addr,
    /// The process it runs in (shared with its parent for a `subint` actor).
    pub pid: u32,
    /// The backend that started it (`proc`, `fork`, `subint`; a root says its own).
    pub backend: String,
    /// The actor that started it (`None` for a root).
    pub parent: Option<ActorId>,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
}

impl ActorInfo {
    /// The bytes of text the entry carries.
    fn text_len(&self) -> usize {
        self.path.len()
            + self.id.name().len()
            + self.addr.transport().len()
            + self.addr.endpoint().len()
            + self.backend.len()
            + self.parent.as_ref().map_or(0, |p| p.name().len())
    }

    /// The actor's name (the last part of its path).
    pub fn name(&self) -> &str {
        self.id.name()
    }

    /// Its root's name (the first part of its path): the program it belongs to.
    pub fn tree(&self) -> &str {
        self.path.split('/').next().unwrap_or_default()
    }
}

/// What a lookup asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// Every actor of this name (names may repeat).
    Name(String),
    /// The actor at this tree path.
    Path(String),
    /// Every actor.
    All,
}

impl Query {
    fn matches(&self, info: &ActorInfo) -> bool {
        match self {
            Query::Name(n) => info.name() == n,
            Query::Path(p) => &info.path == p,
            Query::All => true,
        }
    }
}

/// A change of a table, as federation sessions carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// This actor exists (or its entry changed).
    Upsert(ActorInfo),
    /// These actors are gone, with everything registered under them.
    Remove(Vec<ActorId>),
}

/// Who told the table about an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// An actor of this tree.
    Local,
    /// A member root's session (its number).
    Member(u64),
    /// The registrar this root joined.
    Hub,
}

/// A change, with where it came from (sessions do not echo a change to its source).
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) origin: Origin,
    pub(crate) update: Update,
}

/// Why the table refused an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the registrar is full ({MAX_ENTRIES} actors)")]
    Full,
    #[error("the entry of {actor} is {bytes} bytes long (at most {MAX_ENTRY_BYTES})")]
    TooLarge { actor: String, bytes: usize },
    #[error("{actor}'s parent {parent} is not registered (it ended)")]
    Orphan { actor: String, parent: String },
    #[error("tree {tree:?} is already registered here")]
    TreeTaken { tree: String },
}

struct Entry {
    origin: Origin,
    info: ActorInfo,
    /// Registration order, so lookups answer oldest first.
    seq: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<ActorId, Entry>,
    next_seq: u64,
    next_session: u64,
    /// The tree each member session joined as: reserved from the join on, before any
    /// of its entries arrive, so two roots of one name cannot both join.
    members: HashMap<u64, String>,
}

/// A registrar's table. Shared by the root's tasks.
pub(crate) struct Table {
    state: Mutex<State>,
    version: watch::Sender<u64>,
    feed: broadcast::Sender<Arc<Change>>,
}

/// Apply `updates` from a member session to a fresh table, as a registrar does with what
/// a peer sends: for the fuzz target (`actor_core::fuzzing::registrar_updates`).
pub(crate) fn apply_untrusted(updates: Vec<Update>) -> usize {
    let t = Table::default();
    let Ok(origin) = t.join("fuzz") else {
        return 0;
    };
    for u in updates {
        let _ = t.apply(origin, u);
    }
    let n = t.lookup(&Query::All).len();
    t.remove_origin(origin);
    n
}

/// How many changes a federation session may fall behind before it starts over.
const FEED_DEPTH: usize = 4096;

impl Default for Table {
    fn default() -> Table {
        Table {
            state: Mutex::default(),
            version: watch::Sender::new(0),
            feed: broadcast::Sender::new(FEED_DEPTH),
        }
    }
}

impl Table {
    /// Add or replace an entry. An entry whose parent is not registered is refused: its
    /// parent was removed (it ended), and so is everything under it, even what its
    /// children were still registering as they went down.
    pub(crate) fn upsert(&self, origin: Origin, info: ActorInfo) -> Result<(), Refused> {
        if info.text_len() > MAX_ENTRY_BYTES {
            return Err(Refused::TooLarge {
                bytes: info.text_len(),
                actor: info.path.chars().take(80).collect(),
            });
        }
        {
            let mut s = self.state.lock().unwrap();
            if let Some(parent) = &info.parent
                && !s.entries.contains_key(parent)
            {
                return Err(Refused::Orphan {
                    actor: info.path,
                    parent: parent.to_string(),
                });
            }
            if !s.entries.contains_key(&info.id) && s.entries.len() >= MAX_ENTRIES {
                return Err(Refused::Full);
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            let entry = Entry {
                origin,
                info: info.clone(),
                seq,
            };
            s.entries.insert(info.id.clone(), entry);
        }
        self.publish(origin, Update::Upsert(info));
        Ok(())
    }

    /// Remove `id` and everything registered under it; returns what was removed.
    pub(crate) fn remove(&self, origin: Origin, id: &ActorId) -> Vec<ActorId> {
        let gone = {
            let mut s = self.state.lock().unwrap();
            if !s.entries.contains_key(id) {
                return Vec::new();
            }
            let gone = subtree(&s.entries, id);
            for g in &gone {
                s.entries.remove(g);
            }
            gone
        };
        self.publish(origin, Update::Remove(gone.clone()));
        gone
    }

    /// Remove every entry `origin` gave (a session ended), and free the tree name a
    /// member session held.
    pub(crate) fn remove_origin(&self, origin: Origin) -> usize {
        let gone: Vec<ActorId> = {
            let mut s = self.state.lock().unwrap();
            if let Origin::Member(session) = origin {
                s.members.remove(&session);
            }
            let gone: Vec<ActorId> = s
                .entries
                .iter()
                .filter(|(_, e)| e.origin == origin)
                .map(|(id, _)| id.clone())
                .collect();
            for g in &gone {
                s.entries.remove(g);
            }
            gone
        };
        let n = gone.len();
        if n > 0 {
            self.publish(origin, Update::Remove(gone));
        }
        n
    }

    /// Apply an update a session received from `origin`.
    pub(crate) fn apply(&self, origin: Origin, update: Update) -> Result<(), Refused> {
        match update {
            Update::Upsert(info) => self.upsert(origin, info),
            Update::Remove(ids) => {
                for id in &ids {
                    // Only what that origin gave: a member cannot remove our actors.
                    if self.get(id).is_some_and(|(given_by, _)| given_by == origin) {
                        self.remove(origin, id);
                    }
                }
                Ok(())
            }
        }
    }

    /// The entry of `id`, and who gave it.
    pub(crate) fn get(&self, id: &ActorId) -> Option<(Origin, ActorInfo)> {
        let s = self.state.lock().unwrap();
        s.entries.get(id).map(|e| (e.origin, e.info.clone()))
    }

    /// Every entry matching `query`, oldest registration first.
    pub(crate) fn lookup(&self, query: &Query) -> Vec<ActorInfo> {
        self.oldest_first(|e| query.matches(&e.info))
    }

    /// The entries whose origin `keep` accepts, oldest first (what a session sends when
    /// it starts).
    pub(crate) fn snapshot(&self, keep: impl Fn(Origin) -> bool) -> Vec<ActorInfo> {
        self.oldest_first(|e| keep(e.origin))
    }

    fn oldest_first(&self, keep: impl Fn(&Entry) -> bool) -> Vec<ActorInfo> {
        let s = self.state.lock().unwrap();
        let mut found: Vec<&Entry> = s.entries.values().filter(|e| keep(e)).collect();
        found.sort_by_key(|e| e.seq);
        found.into_iter().map(|e| e.info.clone()).collect()
    }

    /// Start a member session for the tree called `tree`: refused if that name has
    /// entries here or another session holds it. The name stays the session's until
    /// [`remove_origin`](Self::remove_origin) ends it.
    pub(crate) fn join(&self, tree: &str) -> Result<Origin, Refused> {
        let mut s = self.state.lock().unwrap();
        let taken = s.members.values().any(|t| t == tree)
            || s.entries.values().any(|e| e.info.tree() == tree);
        if taken {
            return Err(Refused::TreeTaken {
                tree: tree.to_owned(),
            });
        }
        s.next_session += 1;
        let session = s.next_session;
        s.members.insert(session, tree.to_owned());
        Ok(Origin::Member(session))
    }

    /// How many entries there are.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().entries.len()
    }

    /// Bumped on every change.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every change from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    fn publish(&self, origin: Origin, update: Update) {
        self.version.send_modify(|v| *v += 1);
        // No subscriber is fine: nobody federates with us.
        let _ = self.feed.send(Arc::new(Change { origin, update }));
    }
}

/// `id` and every entry whose chain of parents leads to it.
fn subtree(entries: &HashMap<ActorId, Entry>, id: &ActorId) -> Vec<ActorId> {
    let mut children: HashMap<&ActorId, Vec<&ActorId>> = HashMap::new();
    for (child, e) in entries {
        if let Some(p) = &e.info.parent {
            children.entry(p).or_default().push(child);
        }
    }
    let mut seen: HashSet<&ActorId> = HashSet::new();
    let mut order = Vec::new();
    let mut todo = vec![id];
    while let Some(next) = todo.pop() {
        if !seen.insert(next) {
            continue;
        }
        order.push(next.clone());
        if let Some(kids) = children.get(next) {
            todo.extend(kids.iter().copied());
        }
    }
    order
}

/// Sorted by path, for display (a stable sort: equal paths keep their order).
pub(crate) fn by_path(mut infos: Vec<ActorInfo>) -> Vec<ActorInfo> {
    infos.sort_by(|a, b| a.path.cmp(&b.path));
    infos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, path: &str, parent: Option<&ActorId>) -> ActorInfo {
        ActorInfo {
            id: ActorId::new(name),
            path: path.to_owned(),
            addr: Addr::new("uds", format!("/x/{name}.sock")),
            pid: 1,
            backend: "proc".to_owned(),
            parent: parent.cloned(),
            started_unix_ms: 0,
        }
    }

    #[test]
    fn removing_an_actor_removes_its_subtree_and_nothing_else() {
        let t = Table::default();
        let root = info("root", "root", None);
        let a = info("a", "root/a", Some(&root.id));
        let ab = info("b", "root/a/b", Some(&a.id));
        let abc = info("c", "root/a/b/c", Some(&ab.id));
        let other = info("ab", "root/ab", Some(&root.id));
        for i in [&root, &a, &ab, &abc, &other] {
            t.upsert(Origin::Local, i.clone()).unwrap();
        }
        let mut gone = t.remove(Origin::Local, &a.id);
        gone.sort();
        let mut want = vec![a.id.clone(), ab.id.clone(), abc.id.clone()];
        want.sort();
        assert_eq!(gone, want);
        assert_eq!(t.lookup(&Query::All).len(), 2);
        assert_eq!(t.lookup(&Query::Path("root/ab".into())), vec![other]);
    }

    #[test]
    fn names_repeat_and_lookups_answer_oldest_first() {
        let t = Table::default();
        let root = info("root", "root", None);
        t.upsert(Origin::Local, root.clone()).unwrap();
        let w1 = info("w", "root/w", Some(&root.id));
        let w2 = info("w", "root/x/w", Some(&root.id));
        t.upsert(Origin::Local, w1.clone()).unwrap();
        t.upsert(Origin::Local, w2.clone()).unwrap();
        assert_eq!(t.lookup(&Query::Name("w".into())), vec![w1, w2]);
        assert!(t.lookup(&Query::Name("nobody".into())).is_empty());
    }

    #[test]
    fn an_orphan_is_refused_so_a_dead_subtree_does_not_come_back() {
        let t = Table::default();
        let root = info("root", "root", None);
        let a = info("a", "root/a", Some(&root.id));
        t.upsert(Origin::Local, root).unwrap();
        t.upsert(Origin::Local, a.clone()).unwrap();
        t.remove(Origin::Local, &a.id);
        let late = info("late", "root/a/late", Some(&a.id));
        assert!(matches!(
            t.upsert(Origin::Local, late),
            Err(Refused::Orphan { .. })
        ));
    }

    #[test]
    fn a_session_removes_only_what_it_gave() {
        let t = Table::default();
        let ours = info("root", "root", None);
        t.upsert(Origin::Local, ours.clone()).unwrap();
        let theirs = info("other", "other", None);
        t.upsert(Origin::Member(1), theirs.clone()).unwrap();
        // A member cannot remove our entries.
        t.apply(Origin::Member(1), Update::Remove(vec![ours.id.clone()]))
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove_origin(Origin::Member(1)), 1);
        assert_eq!(t.lookup(&Query::All), vec![ours]);
        assert!(t.join("root").is_err(), "our own tree's name");
        assert!(t.join("other").is_ok());
    }

    #[test]
    fn every_change_bumps_the_version_and_reaches_subscribers() {
        let t = Table::default();
        let mut v = t.watch();
        let mut feed = t.subscribe();
        let root = info("root", "root", None);
        t.upsert(Origin::Local, root.clone()).unwrap();
        assert!(v.has_changed().unwrap());
        v.borrow_and_update();
        t.remove(Origin::Local, &root.id);
        assert!(v.has_changed().unwrap());
        let first = feed.try_recv().unwrap();
        assert_eq!(first.update, Update::Upsert(root.clone()));
        let second = feed.try_recv().unwrap();
        assert_eq!(second.update, Update::Remove(vec![root.id]));
    }

    /// Regression: a name was taken only once the member's entries had arrived, so a
    /// second root of that name joining right after the first (before its entries) was
    /// let in, and two trees shared their paths (seen once in CI, subint/shm).
    #[test]
    fn a_tree_name_is_held_from_the_join_until_the_session_ends() {
        let t = Table::default();
        let first = t.join("beta").expect("the first beta joins");
        assert!(
            matches!(t.join("beta"), Err(Refused::TreeTaken { .. })),
            "the name is held before any entry arrives"
        );
        t.remove_origin(first);
        assert!(t.join("beta").is_ok(), "and freed with the session");
    }

    #[test]
    fn an_oversized_entry_is_refused() {
        let t = Table::default();
        let mut big = info("big", "big", None);
        big.path = "x".repeat(MAX_ENTRY_BYTES);
        assert!(matches!(
            t.upsert(Origin::Local, big),
            Err(Refused::TooLarge { .. })
        ));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn by_path_sorts_for_display() {
        let root = info("root", "root", None);
        let b = info("b", "root/b", Some(&root.id));
        let a = info("a", "root/a", Some(&root.id));
        let sorted = by_path(vec![b.clone(), root.clone(), a.clone()]);
        assert_eq!(sorted, vec![root, a, b]);
    }
}
