//! The `mentorship` binary: parses the command line and dispatches to
//! `mentorship::cli`.

use clap::Parser;
use mentorship::{
    cli,
    settings::args::{Cli, Command},
};

/// mimalloc: cheaper allocation than glibc's on the request path
/// (docs/ARCHITECTURE.md, "Dependencies and why").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    raise_open_files_limit();
    let args = Cli::parse();
    let logs = args.serve.log_format;
    match args.command {
        Some(Command::Token(token)) => cli::run(logs, cli::token(args.serve, token)),
        Some(Command::Migrate) => cli::run(logs, cli::migrate(args.serve)),
        Some(Command::Purge(purge)) => cli::run(logs, cli::purge(args.serve, purge)),
        Some(Command::Serve) | None => cli::run_parking(logs, return_freed_memory, cli::serve(args.serve)),
    }
}

/// How often an idle worker thread hands its freed memory back.
const RETURN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Run by each worker thread as it goes idle, at most every [`RETURN_EVERY`]:
/// mimalloc keeps a thread's freed pages for that thread to reuse and
/// returns them to the system only when the thread allocates again, so a
/// server gone quiet after a burst (thousands of connections closed) would
/// hold the burst's memory; collecting on an idle thread gives it back.
fn return_freed_memory() {
    use std::{cell::Cell, time::Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    if LAST.get().is_some_and(|last| now.duration_since(last) < RETURN_EVERY) {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect only walks and releases the calling thread's own
    // mimalloc heap, which is this binary's global allocator.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

/// Raises the soft limit on open files to the hard one: every client
/// connection is a file, and a soft limit of 1024 (a common default) would
/// refuse connections (the accept loop meeting EMFILE) long before
/// `server.max_connections`.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
