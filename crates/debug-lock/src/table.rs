//! The root's lock: one holder, waiters in arrival order, all known by actor path.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The tree's debugger lock, kept by the root. Cheap to clone (clones share the lock).
#[derive(Clone, Debug, Default)]
pub struct LockTable {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The holder's path and ticket.
    holder: Option<(String, u64)>,
    /// Waiters in arrival order: path, ticket, and how to hand them the lock.
    waiters: VecDeque<(String, u64, oneshot::Sender<()>)>,
    next_ticket: u64,
}

/// The lock, held: dropping it releases it to the next waiter (a waiter whose request
/// was given up is skipped).
#[derive(Debug)]
pub struct LockGuard {
    table: LockTable,
    ticket: u64,
}

impl LockTable {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take the lock for the actor at `path`, waiting behind earlier requests. Cancel
    /// safe: dropped while waiting, the request is withdrawn; dropped after the lock was
    /// handed over but before it returned, the lock goes to the next waiter.
    pub async fn acquire(&self, path: &str) -> LockGuard {
        let rx = {
            let mut s = self.state();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            if s.holder.is_none() {
                s.holder = Some((path.to_owned(), ticket));
                tracing::info!(holder = %path, "debugger lock taken");
                return LockGuard {
                    table: self.clone(),
                    ticket,
                };
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push_back((path.to_owned(), ticket, tx));
            tracing::info!(waiter = %path, queue = s.waiters.len(), "waiting for the debugger lock");
            (rx, ticket)
        };
        let (rx, ticket) = rx;
        // Withdraws the request (or passes the lock on) if this future is dropped.
        let mut pending = Pending {
            table: self.clone(),
            ticket,
            done: false,
        };
        // The sender is only dropped by `release` handing over, or by a withdrawal.
        let _ = rx.await;
        pending.done = true;
        LockGuard {
            table: self.clone(),
            ticket,
        }
    }

    /// The path of the actor holding the lock.
    pub fn holder(&self) -> Option<String> {
        self.state().holder.as_ref().map(|(p, _)| p.clone())
    }

    /// The paths waiting, in order.
    pub fn waiters(&self) -> Vec<String> {
        self.state()
            .waiters
            .iter()
            .map(|(p, _, _)| p.clone())
            .collect()
    }

    /// An actor at `path` or below it (`path/...`) that holds or waits for the lock.
    pub fn busy_under(&self, path: &str) -> Option<String> {
        let s = self.state();
        let under = |p: &str| {
            p == path
                || p.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        s.holder
            .iter()
            .map(|(p, _)| p)
            .chain(s.waiters.iter().map(|(p, _, _)| p))
            .find(|p| under(p))
            .cloned()
    }

    /// Release ticket `ticket` (the holder's) or withdraw it (a waiter's).
    fn release(&self, ticket: u64) {
        let mut s = self.state();
        if s.holder.as_ref().is_some_and(|(_, t)| *t == ticket) {
            let (old, _) = s.holder.take().expect("checked");
            tracing::info!(holder = %old, "debugger lock released");
            while let Some((path, t, tx)) = s.waiters.pop_front() {
                s.holder = Some((path.clone(), t));
                if tx.send(()).is_ok() {
                    tracing::info!(holder = %path, "debugger lock handed over");
                    return;
                }
                // That waiter gave up meanwhile: on to the next.
                s.holder = None;
            }
        } else {
            s.waiters.retain(|(_, t, _)| *t != ticket);
        }
    }
}

struct Pending {
    table: LockTable,
    ticket: u64,
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            // Withdrawn (or handed the lock just now and gone): either way, let go.
            self.table.release(self.ticket);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.table.release(self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_are_served_in_order_and_a_withdrawn_one_is_skipped() {
        let t = LockTable::default();
        let first = t.acquire("root/a").await;
        let t2 = t.clone();
        let b = tokio::spawn(async move {
            let g = t2.acquire("root/b").await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(g);
            "b"
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let t3 = t.clone();
        let c = tokio::spawn(async move { t3.acquire("root/c").await });
        let t4 = t.clone();
        let gone = tokio::spawn(async move { t4.acquire("root/gone").await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(t.waiters(), ["root/b", "root/c", "root/gone"]);
        gone.abort();
        let _ = gone.await;
        assert_eq!(t.waiters(), ["root/b", "root/c"], "withdrawn");
        assert_eq!(t.holder().as_deref(), Some("root/a"));
        drop(first);
        assert_eq!(b.await.unwrap(), "b");
        let c = c.await.unwrap();
        assert_eq!(t.holder().as_deref(), Some("root/c"));
        drop(c);
        assert_eq!(t.holder(), None);
    }

    #[tokio::test]
    async fn busy_under_matches_a_subtree_not_a_prefix_of_a_name() {
        let t = LockTable::default();
        let _g = t.acquire("root/ab/leaf").await;
        assert_eq!(t.busy_under("root/ab").as_deref(), Some("root/ab/leaf"));
        assert_eq!(t.busy_under("root/a"), None, "root/a is not root/ab");
        assert_eq!(t.busy_under("root").as_deref(), Some("root/ab/leaf"));
        assert_eq!(
            t.busy_under("root/ab/leaf").as_deref(),
            Some("root/ab/leaf")
        );
    }
}
