//! `--demo`: the simulated API in this process.

use tokio::net::TcpListener;
use tracing::info;

use super::Error;
use crate::target::Target;
use talkover_sim::Simulator;

/// Starts the demo's simulated API; returns its URL and webhooks.
pub(super) async fn start_demo(
    listen: std::net::SocketAddr,
) -> Result<(url::Url, Vec<Target>), Error> {
    let sim = Simulator::demo();
    let sim_listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            what: format!("binding the demo simulator to {listen}"),
            source,
        })?;
    let addr = sim_listener.local_addr().map_err(|source| Error::Io {
        what: "reading the demo simulator address".into(),
        source,
    })?;
    info!(url = %format!("http://{addr}/"), "demo: simulated Talkover API started");
    let targets = sim.targets();
    tokio::spawn(sim.clone().drive());
    tokio::spawn(sim.serve(sim_listener));
    let url = url::Url::parse(&format!("http://{addr}/"))?;
    Ok((url, targets))
}
