//! The state file (`--state.file`): each webhook's state, committed
//! before it is published ("commit, then publish").
//!
//! - `schema`: how a state is laid out in rows, by format version.
//! - `store`: the redb database, its format checks, unusable files moved aside.
//! - `committer`: gathers what pollers hand it, writes what changed in one
//!   durable transaction per window, then publishes; keeps each webhook's
//!   last state for a poller that died.
//! - `sink`: where a poller hands its state.

mod committer;
mod schema;
mod sink;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Published;
use crate::model::{FailurePolicy, TargetSnapshot, TargetState};
use crate::target::Target;
use committer::{commit_window, run_committer, CommitterConfig};

#[cfg(any(test, feature = "bench"))]
pub use schema::stored_size;
pub use sink::Sink;
pub use store::{Problem, StateError, StateStore};

/// The state file opened, and the committer that writes it.
#[derive(Debug)]
pub struct Persistence {
    /// Where every poller hands its state.
    pub sink: Sink,
    /// The states the file held, for their pollers to resume from.
    pub restored: BTreeMap<Target, TargetState>,
    /// The committer: it ends after its last commit, once every clone of
    /// `sink` is dropped.
    pub committer: JoinHandle<()>,
}

/// Opens `file` (none: nothing is written, and the committer only keeps
/// each webhook's last state for a poller that dies), restores what it
/// holds, publishes it (it is durable already: scrapes see it before any
/// poll), and starts the committer.
/// `wanted`, if known, is the set of webhooks to keep; with discovery it is
/// not known yet, and every stored state waits for its grace period.
pub fn start(
    file: Option<&Path>,
    wanted: Option<&BTreeSet<Target>>,
    poll_interval: Duration,
    failures: FailurePolicy,
    published: Arc<Published>,
) -> Result<Persistence, StateError> {
    let (store, mut restored) = match file {
        None => (None, BTreeMap::new()),
        Some(path) => {
            let (store, restored) = StateStore::open(path, wanted)?;
            (Some(store), restored)
        }
    };
    for state in restored.values_mut() {
        // Kept under other flags, maybe: bodies kept before must go if
        // they are off now (they can hold customer data).
        Arc::make_mut(&mut state.failures).enforce(failures);
    }
    for (target, state) in &restored {
        published.publish(TargetSnapshot::of(target, state, &Default::default()));
    }
    let window = match store {
        Some(_) => commit_window(poll_interval),
        None => Duration::ZERO,
    };
    let (tx, rx) = mpsc::channel(4096);
    let committer = tokio::spawn(run_committer(
        CommitterConfig {
            store,
            restored: restored.clone(),
            window,
        },
        rx,
        published.clone(),
    ));
    Ok(Persistence {
        sink: Sink::new(published, tx),
        restored,
        committer,
    })
}
