//! `facesim-server`: parses the configuration, sets up logging and runs the server until SIGINT
//! or SIGTERM.

use std::io::IsTerminal;

use clap::Parser;
use facesim_server::{serve, Config, Started};
use tracing_subscriber::EnvFilter;

facesim_server::use_jemalloc!();

fn main() -> anyhow::Result<()> {
    // Before any thread exists (the runtime's included).
    facesim_server::cpu::park_idle_candle_threads();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // By default a failed log write is reported with `eprintln!`, which panics when stderr
        // itself is gone (a log collector died, `| head` exited): a lost log line must not
        // take an RPC down with it.
        .log_internal_errors(false)
        .init();

    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    serve(config, listener, shutdown_signal(), |started: Started| {
        if let Some(token) = started.new_admin_token {
            // Printed once, on the very first start; only its hash is stored.
            println!("================================================================");
            println!(" facesim: created user `admin`. Its token is shown only now:");
            println!();
            println!("   export FACESIM_TOKEN={token}");
            println!();
            println!(" Keep it safe. To choose the token yourself, set FACESIM_ADMIN_TOKEN.");
            println!("================================================================");
        }
        let transport = if started.tls { "TLS" } else { "plaintext" };
        tracing::info!(addr = %started.addr, transport, "facesim server listening (gRPC, gRPC-Web)");
    })
    .await?;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}
