//! The `weir` binary: flags, telemetry, runtime, and the chosen command.

use std::process::ExitCode;

use clap::Parser;
use weir_controller::cli::{self, Cli, Command, LogFormat};

// mimalloc instead of glibc malloc: compiling 10k+ routes spent about half its time in glibc's
// free-list upkeep (unlink_chunk, malloc_consolidate), and it returns memory more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// After a reload, gives the pages it freed back to the OS (`weir_controller::release`).
#[allow(unsafe_code)]
fn collect_freed_pages() {
    // SAFETY: `mi_collect` takes no pointers; it frees the calling thread's empty pages of the
    // global allocator (mimalloc, above) and purges the free parts of its arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

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
            weir_controller::release::install(collect_freed_pages);
            let runtime = cli::RuntimePlan::of(&args).main_runtime();
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
