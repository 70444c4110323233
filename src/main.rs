//! The `pushgate` binary: a gateway node, or the `cluster` admin client.

use clap::Parser;

/// mimalloc: pushes allocate many small strings; glibc malloc spent about a
/// third of the CPU of a push in allocation and consolidation. Its options,
/// and when it hands memory back, are in `pushgate::allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use pushgate::config::{Cli, Command};

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // openraft is chatty at info; keep it a notch quieter than ours.
        let raft_level = match level {
            "debug" => "info",
            "info" => "warn",
            other => other,
        };
        tracing_subscriber::EnvFilter::new(format!("{level},openraft={raft_level},sled=warn"))
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr is a pipe whose reader
        // went away) is dropped. By default tracing-subscriber reports it
        // with eprintln!, which panics on the same broken stderr, and so
        // kills whatever task logged: the signal handler, a Raft task.
        .log_internal_errors(false)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}

fn main() {
    pushgate::allocator::tune();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(pushgate::allocator::release_idle_memory)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Some(Command::Cluster(cmd)) => runtime.block_on(pushgate::admin::run(cmd)).map_err(|e| e.to_string()),
        None => {
            init_logging(&cli.server.log_level, &cli.server.log_format);
            runtime.block_on(pushgate::server::run(cli.server)).map_err(|e| {
                tracing::error!(error = %e, "pushgate stopped");
                e.to_string()
            })
        }
    };
    if let Err(e) = result {
        eprintln!("pushgate: error: {e}");
        std::process::exit(1);
    }
}
