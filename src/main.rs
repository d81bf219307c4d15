//! The `mentorship` binary: parses the command line and dispatches to
//! `mentorship::cli`.

use clap::Parser;
use mentorship::{
    cli,
    config::{Cli, Command},
};

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    match args.command {
        Some(Command::Token(token)) => cli::token(&args.serve, &token),
        Some(Command::Migrate) => cli::run(cli::migrate(args.serve)),
        Some(Command::Purge(purge)) => cli::run(cli::purge(args.serve, purge)),
        Some(Command::Serve) | None => cli::run(cli::serve(args.serve)),
    }
}
