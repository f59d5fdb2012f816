//! What one actor keeps for discovery: the registrar's table (a root), the direct
//! channels its lookups opened, and what it reports about itself (`Status`: uptime,
//! calls in flight). The actor holds it; the lookups and the registrar's functions use
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use spawn_api::Addr;

use crate::portal::Portal;
use crate::registrar::Table;

pub(crate) struct Discovery {
    /// `Some` in a root: it is its tree's registrar.
    pub(crate) table: Option<Arc<Table>>,
    /// Direct channels opened by lookups (and to the registrar), by address.
    pub(crate) portals: tokio::sync::Mutex<HashMap<Addr, Portal>>,
    /// The calls, streams and contexts the actor serves right now.
    in_flight: Arc<AtomicUsize>,
    pub(crate) started: Instant,
    pub(crate) started_unix_ms: u64,
}

impl Discovery {
    pub(crate) fn new(table: Option<Arc<Table>>) -> Discovery {
        Discovery {
            table,
            portals: tokio::sync::Mutex::default(),
            in_flight: Arc::default(),
            started: Instant::now(),
            started_unix_ms: unix_ms(SystemTime::now()),
        }
    }

    /// Counts a served call while the returned guard lives.
    pub(crate) fn serving(&self) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.in_flight.clone())
    }

    /// The calls served right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Drop the lookups' portals (at the actor's end: their channels refer back to it).
    pub(crate) fn forget_portals(&self) {
        match self.portals.try_lock() {
            Ok(mut p) => p.clear(),
            Err(_) => tracing::debug!("a lookup still holds its portals at the actor's end"),
        }
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A served call, counted for `Status` while it lives.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
