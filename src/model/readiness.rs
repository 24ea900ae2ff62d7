//! What `/-/ready` answers: produced by the pollers and discovery, read
//! by the HTTP side.

use std::collections::BTreeSet;

use crate::target::Target;

/// What `/-/ready` waits for: the first discovery (if any) and the first
/// poll of every target known so far, whatever their outcome.
#[derive(Debug, Default)]
pub struct Readiness {
    /// A std lock: held only for set operations, never across an await.
    waiting: std::sync::Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    discovery: bool,
    first_polls: BTreeSet<Target>,
}

impl Readiness {
    /// Readiness that also waits for a first discovery when `discovery` is set.
    pub fn new(discovery: bool) -> Readiness {
        Readiness {
            waiting: std::sync::Mutex::new(Waiting {
                discovery,
                first_polls: BTreeSet::new(),
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether everything waited for has happened.
    pub fn is_ready(&self) -> bool {
        let w = self.waiting();
        !w.discovery && w.first_polls.is_empty()
    }

    /// The first discovery has run.
    pub fn discovery_done(&self) {
        self.waiting().discovery = false;
    }

    /// A new target: wait for its first poll.
    pub fn expect(&self, target: &Target) {
        self.waiting().first_polls.insert(target.clone());
    }

    /// A target finished its first poll, or is no longer watched.
    pub fn forget(&self, target: &Target) {
        self.waiting().first_polls.remove(target);
    }
}
