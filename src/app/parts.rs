//! The parts that live as long as the process, watched: one that ends
//! before shutdown ends the process too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::error;

use super::Error;
use crate::model::Readiness;

/// Waits for the supervisor and the committer to end. Before shutdown
/// began, that is a failure: it is logged, `/-/healthy` answers 503 from
/// then on, and the process shuts down and exits non-zero, as Prometheus'
/// own components do, so an orchestrator restarts it.
pub(super) async fn watch_parts(
    mut supervisor: JoinHandle<()>,
    committer: JoinHandle<()>,
    stopping: watch::Receiver<bool>,
    died: watch::Sender<Option<&'static str>>,
    readiness: Arc<Readiness>,
) -> Result<(), Error> {
    let mut committer = Some(committer);
    let mut failure = None;
    let mut supervisor_done = false;
    while !supervisor_done || committer.is_some() {
        let (part, result) = tokio::select! {
            r = &mut supervisor, if !supervisor_done => {
                supervisor_done = true;
                ("supervisor", r)
            }
            r = async { committer.as_mut().expect("guarded").await }, if committer.is_some() => {
                committer = None;
                ("state committer", r)
            }
            // Once a part has died, the rest get a deadline: pollers the
            // dead supervisor owned may never let the committer finish.
            _ = tokio::time::sleep(Duration::from_secs(10)), if failure.is_some() => break,
        };
        if *stopping.borrow() && result.is_ok() {
            continue;
        }
        let how = match result {
            Ok(()) => "it returned".to_string(),
            Err(e) if e.is_panic() => {
                format!("panic: {}", crate::collect::panic_message(e.into_panic()))
            }
            Err(e) => e.to_string(),
        };
        error!(part, how = %how, "a part of the exporter stopped unexpectedly; exiting");
        readiness.fail(part);
        died.send_replace(Some(part));
        failure.get_or_insert(Error::PartDied { part, how });
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor that panics ends the process's run with an error that
    /// names it (so `main` exits non-zero), and healthy and ready say so
    /// meanwhile; the committer it leaves behind gets a deadline.
    #[tokio::test(start_paused = true)]
    async fn a_part_that_dies_ends_the_run_with_an_error() {
        let supervisor = tokio::spawn(async { panic!("the supervisor broke") });
        let committer = tokio::spawn(std::future::pending::<()>());
        let (_stop_tx, stopping) = watch::channel(false);
        let (died_tx, died_rx) = watch::channel(None);
        let readiness = Arc::new(Readiness::new(false));
        let result = watch_parts(supervisor, committer, stopping, died_tx, readiness.clone()).await;
        match result {
            Err(Error::PartDied { part, how }) => {
                assert_eq!(part, "supervisor");
                assert!(how.contains("the supervisor broke"), "{how}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(*died_rx.borrow(), Some("supervisor"));
        assert_eq!(readiness.failed(), Some("supervisor"));
        assert!(!readiness.is_ready());
    }

    /// After shutdown began, parts ending is the normal way out.
    #[tokio::test]
    async fn parts_ending_after_shutdown_are_no_failure() {
        let (stop_tx, stopping) = watch::channel(false);
        let supervisor = tokio::spawn({
            let mut stop = stop_tx.subscribe();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        });
        let committer = tokio::spawn(async {});
        let (died_tx, _died_rx) = watch::channel(None);
        stop_tx.send_replace(true);
        let result = watch_parts(
            supervisor,
            committer,
            stopping,
            died_tx,
            Arc::new(Readiness::new(false)),
        )
        .await;
        assert!(result.is_ok(), "{result:?}");
    }
}
