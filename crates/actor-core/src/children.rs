//! A nursery's children as data: what the nursery and its actor keep about each child
//! ([`ChildSlot`]), about the nursery as a whole ([`NurseryState`]) and about each child
//! once it is gone ([`ChildReport`]). The behaviour (spawning, supervising, the scope)
//! is in `nursery`; an actor keeps the state of nurseries whose scope was dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_vars::RuntimeVars;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::ChildError;
use crate::teardown::ChildReport;
use spawn_api::ActorId;

pub(crate) struct NurseryState {
    pub(crate) children: Mutex<Vec<Arc<ChildSlot>>>,
    pub(crate) closed: AtomicBool,
    pub(crate) failed: CancellationToken,
    pub(crate) errors: Mutex<Vec<ChildError>>,
    pub(crate) reports: Mutex<Vec<ChildReport>>,
}

impl NurseryState {
    pub(crate) fn new() -> NurseryState {
        NurseryState {
            children: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            failed: CancellationToken::new(),
            errors: Mutex::new(Vec::new()),
            reports: Mutex::new(Vec::new()),
        }
    }

    /// The errors reported so far, taken.
    pub(crate) fn take_errors(&self) -> Vec<ChildError> {
        std::mem::take(&mut *self.errors.lock().unwrap())
    }

    pub(crate) fn report_error(&self, e: ChildError) {
        tracing::warn!(error = %e, "child failed");
        self.errors.lock().unwrap().push(e);
        self.failed.cancel();
    }

    /// Close to new children and order every child's teardown; returns the children.
    pub(crate) fn close_and_order(&self) -> Vec<Arc<ChildSlot>> {
        let slots = {
            let c = self.children.lock().unwrap();
            self.closed.store(true, Ordering::SeqCst);
            c.clone()
        };
        for s in &slots {
            s.order_teardown(None);
        }
        slots
    }
}

/// One child as its nursery sees it.
pub(crate) struct ChildSlot {
    pub(crate) id: ActorId,
    pub(crate) path: String,
    pub(crate) vars: RuntimeVars,
    pub(crate) run_in_actor: bool,
    pub(crate) order: Mutex<Option<oneshot::Sender<Option<Duration>>>>,
    pub(crate) reaped_tx: watch::Sender<bool>,
}

impl ChildSlot {
    /// Tell the supervisor to tear the child down (first order wins).
    pub(crate) fn order_teardown(&self, soft: Option<Duration>) {
        if let Some(tx) = self.order.lock().unwrap().take() {
            let _ = tx.send(soft);
        }
    }

    /// Resolves once the child is reaped.
    pub(crate) async fn reaped(&self) {
        let mut rx = self.reaped_tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}
