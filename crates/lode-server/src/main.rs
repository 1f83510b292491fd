//! The `lodestone` binary: parses the command line, sets up logging, runs the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lode_server::Server;
use lode_server::cli::ServeArgs;
use lode_server::client::Connection;
use lode_server::commands::Manage;
use tracing_subscriber::EnvFilter;

/// Lodestone, a self-hostable IoT platform.
#[derive(Debug, Parser)]
#[command(name = "lodestone", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: MQTT broker, listeners and HTTP endpoints.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Manage(Manage),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Manage(command) => manage(command, &cli.connection),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Storage engine internals log every flush and compaction at info; keep them quiet
    // unless asked for by name.
    let directives = format!("fjall=warn,lsm_tree=warn,{}", args.log);
    let filter = EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", args.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = lode_server::config::load(&args)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // Without the LIFO slot, connections woken together are served in the order their
    // data arrived, so packets from different clients are handled in arrival order.
    // The option needs `--cfg tokio_unstable` (set in .cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    let runtime = builder.build()?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await
    })
}

fn manage(command: Manage, connection: &Connection) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(lode_server::commands::run(command, connection))
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
