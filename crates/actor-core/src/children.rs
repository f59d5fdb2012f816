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
    /// The supervisors of this nursery's supervised children, in the order they started.
    pub(crate) supervisors: Mutex<Vec<Arc<dyn StopOrder>>>,
}

/// A supervisor as its nursery sees it: the order its children must stop in.
pub(crate) trait StopOrder: Send + Sync {
    /// Stop restarting; the slots of the live children, in the order they must stop
    /// (reverse start order).
    fn stop_order(&self) -> Vec<Arc<ChildSlot>>;
}

/// Where a supervised child's end goes, tagged so its supervisor knows which child (and
/// which incarnation) it was.
pub(crate) struct ChildWatch {
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<ChildEnded>,
    pub(crate) tag: u64,
}

/// A supervised child was reaped.
pub(crate) struct ChildEnded {
    pub(crate) tag: u64,
    /// Why, if it failed.
    pub(crate) error: Option<ChildError>,
}

impl NurseryState {
    pub(crate) fn new() -> NurseryState {
        NurseryState {
            children: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            failed: CancellationToken::new(),
            errors: Mutex::new(Vec::new()),
            reports: Mutex::new(Vec::new()),
            supervisors: Mutex::new(Vec::new()),
        }
    }

    /// Stop every supervisor's children, the supervisors in reverse start order and each
    /// one's children one after the other in reverse start order, each through its whole
    /// ladder.
    pub(crate) async fn stop_supervised(&self) {
        let sups: Vec<_> = self.supervisors.lock().unwrap().clone();
        for sup in sups.iter().rev() {
            for slot in sup.stop_order() {
                slot.order_teardown(None);
                slot.reaped().await;
            }
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
    /// Supervised children stop in their supervisors' order, in the background (see
    /// [`NurseryState::stop_supervised`]), when a runtime is there to run it.
    pub(crate) fn close_and_order(self: &Arc<Self>) -> Vec<Arc<ChildSlot>> {
        let slots = {
            let c = self.children.lock().unwrap();
            self.closed.store(true, Ordering::SeqCst);
            c.clone()
        };
        let ordered_later = !self.supervisors.lock().unwrap().is_empty()
            && match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let me = self.clone();
                    rt.spawn(async move {
                        me.stop_supervised().await;
                        for s in me.children.lock().unwrap().iter() {
                            s.order_teardown(None);
                        }
                    });
                    true
                }
                Err(_) => false,
            };
        for s in &slots {
            if !(ordered_later && s.watch.is_some()) {
                s.order_teardown(None);
            }
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
    /// Set for a supervised child: where its end goes instead of failing the nursery.
    pub(crate) watch: Option<ChildWatch>,
    /// Why its teardown was ordered, for the cancel it is sent (its supervisor's words);
    /// `None`: the nursery's usual reason.
    pub(crate) cancel_reason: Mutex<Option<String>>,
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
