//! TCP keepalive and a user timeout on the service's database sockets, so
//! the kernel gives up on a connection whose peer has vanished (a cut
//! network, a dead host) instead of waiting minutes for TCP to do so.
//!
//! sqlx opens its sockets itself and has no hook to set socket options. So
//! each time a pool opens a connection, [`arm`] finds the process's TCP
//! sockets whose peer is the database's address (from `/proc/self/fd`, on
//! Linux) and sets the options on every one: the new connection's among
//! them. Setting them again on a socket that has them changes nothing.
//! Elsewhere it does nothing; the application's own bounds still hold
//! (docs/OPERATIONS.md, "Silent database connections").

use std::{net::SocketAddr, time::Duration};

use sqlx::postgres::PgConnectOptions;

/// Probes start after this long without traffic...
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// ...one every this long...
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// ...and this many unanswered probes close the connection (idle and silent
/// for 25 s in all).
pub(crate) const KEEPALIVE_PROBES: u32 = 3;
/// Data sent and not acknowledged for this long closes the connection
/// (`TCP_USER_TIMEOUT`). It bounds a wait on a peer that is gone; a slow
/// statement is no such wait, for the server acknowledges what it received.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(20);

/// Sets keepalive and the user timeout on every TCP socket of this process
/// connected to the database at `options` (its host is resolved here, as
/// sqlx resolves it for each connection); returns how many. Nothing for a
/// Unix socket.
pub(crate) async fn arm(options: &PgConnectOptions) -> usize {
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        return 0;
    }
    let host = options.get_host().trim_matches(['[', ']']);
    match tokio::net::lookup_host((host, options.get_port())).await {
        Ok(peers) => arm_sockets(&peers.collect::<Vec<_>>()),
        Err(_) => 0,
    }
}

#[cfg(target_os = "linux")]
fn arm_sockets(peers: &[SocketAddr]) -> usize {
    use std::os::fd::BorrowedFd;

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let mut armed = 0;
    for entry in entries.flatten() {
        // Only sockets: their link reads `socket:[inode]`.
        let is_socket =
            std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok());
        let Some(fd) = fd.filter(|_| is_socket) else {
            continue;
        };
        // SAFETY: the descriptor is only used for the socket calls below,
        // never closed or kept. If another thread closes it meanwhile, each
        // call fails with EBADF; if the number is reused at once, the peer is
        // read again first, and a socket to the database gets the options it
        // should have anyway.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let to_the_database = socket
            .peer_addr()
            .ok()
            .and_then(|peer| peer.as_socket())
            .is_some_and(|peer| peers.contains(&peer));
        if to_the_database
            && socket.set_tcp_keepalive(&keepalive).is_ok()
            && socket.set_tcp_user_timeout(Some(USER_TIMEOUT)).is_ok()
        {
            armed += 1;
        }
    }
    armed
}

#[cfg(not(target_os = "linux"))]
fn arm_sockets(_peers: &[SocketAddr]) -> usize {
    0
}
