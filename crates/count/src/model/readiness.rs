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
    /// A part that stopped unexpectedly: the process is exiting.
    failed: Option<&'static str>,
}

impl Readiness {
    /// Readiness that also waits for a first discovery when `discovery` is set.
    pub fn new(discovery: bool) -> Readiness {
        Readiness {
            waiting: std::sync::Mutex::new(Waiting {
                discovery,
                first_polls: BTreeSet::new(),
                failed: None,
            }),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether everything waited for has happened.
    pub fn is_ready(&self) -> bool {
        let w = self.waiting();
        !w.discovery && w.first_polls.is_empty() && w.failed.is_none()
    }

    /// A part of the exporter (`supervisor`, `state committer`) stopped
    /// unexpectedly: neither healthy nor ready any more.
    pub fn fail(&self, part: &'static str) {
        self.waiting().failed = Some(part);
    }

    /// The part that stopped unexpectedly, if one did.
    pub fn failed(&self) -> Option<&'static str> {
        self.waiting().failed
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
