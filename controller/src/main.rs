//! The `weir` binary: flags, telemetry, runtime, and the chosen command.

use std::process::ExitCode;

use clap::Parser;
use weir_controller::cli::{self, Cli, Command, LogFormat};

// mimalloc instead of glibc malloc: compiling 10k+ routes spent about half its time in glibc's
// free-list upkeep (unlink_chunk, malloc_consolidate), and it returns memory more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds(args) => cli::crds(&args),
        Command::Validate(args) => {
            cli::init_tracing(LogFormat::Text);
            cli::validate(&args)
        }
        Command::Run(args) => {
            cli::init_tracing(args.log_format);
            // One worker (as benchmarks pin it): a current-thread runtime, which avoids the
            // cross-thread wake-ups of a one-worker multi-thread scheduler.
            let runtime = match cli::worker_threads() {
                1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
                n => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n)
                    .enable_all()
                    .build(),
            };
            let runtime = match runtime {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cli::run(args)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
