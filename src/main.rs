//! The `sluice` command: parse arguments, load the config, run.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluice::{app, config, demo, logging, probe, tls, workers};

/// How long `sluice probe` waits for the answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Start stateful demo backends and the proxy in front of them, and
    /// print the steps to try.
    Demo(DemoArgs),
    /// GET a URL: exit 0 on a 2xx or 3xx answer, 1 otherwise (for a
    /// container HEALTHCHECK without curl).
    Probe {
        /// An http:// URL, e.g. http://127.0.0.1:9900/
        url: String,
    },
}

/// The demo's ports; the rest of its config is embedded.
#[derive(Args)]
struct DemoArgs {
    /// The proxy's listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The admin API and dashboard. Not on loopback, it needs a token: one is
    /// made up and printed unless --token gives it.
    #[arg(long, default_value = "127.0.0.1:9900")]
    admin: SocketAddr,
    /// The admin API's bearer token.
    #[arg(long)]
    token: Option<String>,
    /// How many backends to start.
    #[arg(long, default_value_t = NonZeroU16::new(3).expect("3 is not zero"))]
    backends: NonZeroU16,
    /// The first backend's port; the others take the ports after it (0: any
    /// free ports).
    #[arg(long, default_value_t = 9101)]
    backend_port: u16,
    /// The address the backends listen on (0.0.0.0 to serve other hosts).
    #[arg(long, default_value = "127.0.0.1")]
    backend_host: IpAddr,
    /// Run only the backends, for proxies elsewhere.
    #[arg(long)]
    backends_only: bool,
}

impl From<DemoArgs> for demo::Options {
    fn from(args: DemoArgs) -> Self {
        demo::Options {
            listen: args.listen,
            admin: args.admin,
            token: args.token,
            backends: args.backends,
            backend_port: args.backend_port,
            backend_host: args.backend_host,
            backends_only: args.backends_only,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let check = matches!(cli.command, Some(Command::Check));
    let (config, demo) = match cli.command {
        Some(Command::Probe { url }) => return run_probe(&url),
        Some(Command::Demo(args)) => match demo::Demo::prepare(args.into()) {
            Ok(demo) => (demo.config.clone(), Some(demo)),
            Err(err) => {
                eprintln!("sluice: {err}");
                return ExitCode::FAILURE;
            }
        },
        Some(Command::Run | Command::Check) | None => match config::load(&cli.config) {
            Ok(config) => (config, None),
            Err(err) => {
                eprintln!("{err}");
                return ExitCode::FAILURE;
            }
        },
    };
    if check {
        // Certificates and keys are part of a valid config: `check` reads
        // them as startup would.
        match tls::load(&config) {
            Ok(certs) => {
                for warning in certs.warnings() {
                    eprintln!("warning: {warning}");
                }
            }
            Err(err) => {
                // At the key that names the file, like every other problem.
                let text = std::fs::read_to_string(&config.path).unwrap_or_default();
                match err.placed(&text, &config.path) {
                    Some(placed) => eprintln!("{placed}"),
                    None => eprintln!("{}: {err}", config.path.display()),
                }
                return ExitCode::FAILURE;
            }
        }
        print!("{}", config::summary(&config));
        return ExitCode::SUCCESS;
    }
    logging::init(&config.log);
    // Each worker is a current-thread runtime on its own thread, like an
    // nginx worker process: no work stealing, and a connection lives and
    // dies on the worker that accepted it. Blocking work (config loads)
    // still has its own threads.
    let (runtime, workers, threads) =
        match workers::start(workers::resolve(config.global.worker_threads)) {
            Ok(started) => started,
            Err(err) => {
                eprintln!("sluice: cannot start the workers: {err}");
                return ExitCode::FAILURE;
            }
        };
    let result = runtime.block_on(async {
        match demo {
            Some(demo) => demo.run(workers).await.map_err(|e| e.to_string()),
            None => app::run(config, workers).await.map_err(|e| e.to_string()),
        }
    });
    // Connections still open after shutdown_timeout are cut here.
    threads.stop();
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

/// `sluice probe URL`: one GET, judged by its status.
fn run_probe(url: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sluice: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(probe::get(url, PROBE_TIMEOUT)) {
        Ok(status) if status.is_success() || status.is_redirection() => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{url}: {err}");
            ExitCode::FAILURE
        }
    }
}
