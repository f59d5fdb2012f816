//! [`Extensions`]: per-actor state that layers above the core attach to an actor.
//!
//! A backend keeps what it needs per spawning actor here (a connection to a helper
//! process, say), and a backend that runs actors in-process hands its child things its
//! functions can reach through the runtime's `ActorCx::extensions` (a
//! sub-interpreter handle). Values live as long as the actor.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A map from type to one shared value of that type. Cheap to clone; clones share the
/// map.
///
/// ```
/// use spawn_api::Extensions;
/// #[derive(Debug, PartialEq)]
/// struct Counter(u32);
/// let ext = Extensions::default();
/// assert!(ext.get::<Counter>().is_none());
/// let c = ext.get_or_insert_with(|| Counter(1));
/// assert_eq!(*c, Counter(1));
/// // The first value stays.
/// assert_eq!(*ext.get_or_insert_with(|| Counter(2)), Counter(1));
/// ext.insert(Counter(3));
/// assert_eq!(*ext.get::<Counter>().unwrap(), Counter(3));
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    map: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("entries", &self.map.lock().unwrap().len())
            .finish()
    }
}

impl Extensions {
    /// The value of type `T`, if there is one.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let v = self.map.lock().unwrap().get(&TypeId::of::<T>())?.clone();
        v.downcast::<T>().ok()
    }

    /// Store `value`, replacing (and returning) any value of the same type.
    pub fn insert<T: Any + Send + Sync>(&self, value: T) -> Option<Arc<T>> {
        let old = self
            .map
            .lock()
            .unwrap()
            .insert(TypeId::of::<T>(), Arc::new(value))?;
        old.downcast::<T>().ok()
    }

    /// The value of type `T`, created by `make` if there is none yet. `make` runs with
    /// the map locked: it must not touch this map.
    pub fn get_or_insert_with<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Arc<T> {
        let mut map = self.map.lock().unwrap();
        let v = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(make()))
            .clone();
        drop(map);
        v.downcast::<T>()
            .unwrap_or_else(|_| unreachable!("entries are keyed by their own type"))
    }

    /// Remove the value of type `T`.
    pub fn remove<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let v = self.map.lock().unwrap().remove(&TypeId::of::<T>())?;
        v.downcast::<T>().ok()
    }
}
