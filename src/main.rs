//! The `talkover-exporter` binary: parse flags, set up logging, run the library.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use talkover_exporter::{Cli, LogFormat};
use tokio::net::TcpListener;
use tracing::error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_level.as_filter(), cli.log_format);
    let listen = cli.listen_address;
    let config = match cli.into_config() {
        Ok(c) => c,
        Err(e) => Cli::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            error!("starting the async runtime: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("binding --web.listen-address {listen}: {e}"))?;
        talkover_exporter::run(config, listener, shutdown_signal()).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A file a flag names is bad input, like a bad flag: exit 2.
        Err(e) if matches!(e.downcast_ref(), Some(talkover_exporter::Error::Invalid(_))) => {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, e)
                .exit()
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALKOVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Completes on Ctrl-C or SIGTERM (how containers are stopped).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
