//! The `sluice` command: parse arguments, load the config, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::{config, demo, logging, server, tls};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A layer-7 reverse proxy and load balancer"
)]
struct Cli {
    /// The config file.
    #[arg(short, long, global = true, default_value = "config/sluice.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config, like `nginx -t`.
    Check,
    /// Start three demo backends and the proxy in front of them.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.command {
        Some(Command::Demo) => demo::config(),
        _ => config::load(&cli.config),
    };
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Check) = cli.command {
        // Certificates and keys are part of a valid config: `check` reads
        // them as startup would.
        match tls::load(&config) {
            Ok(certs) => {
                for warning in certs.warnings() {
                    eprintln!("warning: {warning}");
                }
            }
            Err(err) => {
                eprintln!("{}: {err}", config.path.display());
                return ExitCode::FAILURE;
            }
        }
        print!("{}", config::summary(&config));
        return ExitCode::SUCCESS;
    }
    logging::init(&config.log);
    // One worker needs no work stealing: the current-thread scheduler runs
    // every task on the thread that polls the listeners, like one nginx
    // worker. Blocking work (config loads) still has its own threads.
    let mut runtime = match config.global.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                runtime.worker_threads(n);
            }
            runtime
        }
    };
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sluice: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Some(Command::Demo) => demo::run(config).await.map_err(|e| e.to_string()),
            _ => server::run(config).await.map_err(|e| e.to_string()),
        }
    });
    // Connections still open after shutdown_timeout are cut here.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("sluice: {err}");
            ExitCode::FAILURE
        }
    }
}
