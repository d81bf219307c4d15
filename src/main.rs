//! The `mentorship` binary: parses the command line and dispatches to
//! `mentorship::cli`.

use clap::Parser;
use mentorship::{
    cli,
    config::{Cli, Command},
};

/// mimalloc: cheaper allocation than glibc's on the request path
/// (docs/ARCHITECTURE.md, "Dependencies and why").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    let logs = args.serve.log_format;
    match args.command {
        Some(Command::Token(token)) => cli::token(&args.serve, &token),
        Some(Command::Migrate) => cli::run(logs, cli::migrate(args.serve)),
        Some(Command::Purge(purge)) => cli::run(logs, cli::purge(args.serve, purge)),
        Some(Command::Serve) | None => cli::run(logs, cli::serve(args.serve)),
    }
}
