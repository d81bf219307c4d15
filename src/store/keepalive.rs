//! TCP keepalive and a user timeout on the pools' database sockets, so the
//! kernel gives up on a connection whose peer has vanished (a cut network,
//! a dead host) in 20 s instead of waiting minutes for TCP to do so.
//!
//! sqlx opens its sockets itself and has no hook to set socket options. So
//! each time a pool opens a connection, [`arm`] finds the process's TCP
//! sockets whose peer is the database's address (from `/proc/self/fd`, on
//! Linux) and sets the options on every one: the new connection's among
//! them. Setting them again on a socket that has them changes nothing.
//! Elsewhere it does nothing; the application's own bounds still hold
//! (docs/OPERATIONS.md, "Silent database connections").

use std::{net::SocketAddr, sync::Once, time::Duration};

use sqlx::postgres::PgConnectOptions;

/// Probes start after this long without traffic, and go every
/// [`KEEPALIVE_INTERVAL`]; a peer that answers none of them is given up at
/// [`USER_TIMEOUT`] (which, set, decides instead of the probe count).
pub(crate) const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Data sent, or keepalive probes, unacknowledged for this long close the
/// connection (`TCP_USER_TIMEOUT`). It bounds a wait on a peer that is
/// gone; a slow statement is no such wait, for the server's kernel
/// acknowledges what it received.
pub(crate) const USER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long resolving the database's host name may take.
const RESOLVE_LIMIT: Duration = Duration::from_secs(2);

/// Sets keepalive and the user timeout on every TCP socket of this process
/// connected to the database at `options` (its host resolved again here, as
/// sqlx resolves it for each connection); returns how many. Nothing for a
/// Unix socket. Finding none for a TCP host is logged, once.
pub(crate) async fn arm(options: &PgConnectOptions) -> usize {
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        return 0;
    }
    let (host, port) = (options.get_host().trim_matches(['[', ']']), options.get_port());
    let peers: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::time::timeout(RESOLVE_LIMIT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            _ => Vec::new(),
        },
    };
    // Reading the descriptors blocks (a little): off the async workers.
    let armed = tokio::task::spawn_blocking(move || arm_sockets(&peers))
        .await
        .unwrap_or(0);
    if armed == 0 && cfg!(target_os = "linux") {
        static NONE_ARMED: Once = Once::new();
        NONE_ARMED.call_once(|| {
            tracing::warn!(
                host,
                port,
                "found no socket to the database to set TCP keepalive on; \
                 the service's own bounds on silent connections still hold"
            );
        });
    }
    armed
}

#[cfg(target_os = "linux")]
fn arm_sockets(peers: &[SocketAddr]) -> usize {
    use std::os::fd::{FromRawFd, OwnedFd};

    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    let mut armed = 0;
    for entry in entries.flatten() {
        // Only sockets: their link reads `socket:[inode]`.
        let is_socket =
            std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let fd = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok());
        let Some(fd) = fd.filter(|_| is_socket) else {
            continue;
        };
        // A copy of our own: the check and the settings below then act on
        // one socket, even if the number is closed and reused meanwhile.
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor (or -1), which the
        // OwnedFd owns and closes.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            continue; // closed meanwhile
        }
        let copy = unsafe { OwnedFd::from_raw_fd(copy) };
        let socket = socket2::SockRef::from(&copy);
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
