//! The real `mentorship` binary, for the tests that signal or measure a
//! process.

use std::process::{Child, Command, Stdio};

use tonic::transport::Channel;
use uuid::Uuid;

use super::*;

/// The real `mentorship` binary, serving on a loopback port it chose; killed on drop.
pub struct BinaryServer {
    pub child: Child,
    pub addr: String,
    pub channel: Channel,
    /// Its log (stderr).
    pub log: std::path::PathBuf,
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl BinaryServer {
    /// A caller with `token`.
    pub fn as_(&self, token: &str) -> Caller {
        Caller::new(&self.channel, token)
    }

    /// The process's resident memory now, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Everything it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the built binary on `database_url` with the test secret and `env`,
/// listening on port 0 (so no other process can take its port first);
/// learns the address from its log and waits until it answers health checks.
pub async fn spawn_binary(database_url: &str, env: &[(&str, &str)]) -> BinaryServer {
    spawn_binary_with(database_url, env, None).await
}

/// [`spawn_binary`] for a server that speaks TLS: the client checks it
/// with `tls` (the test CA, a client certificate for mutual TLS).
pub async fn spawn_binary_with(
    database_url: &str,
    env: &[(&str, &str)],
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> BinaryServer {
    let mut command = binary();
    command
        .env("DATABASE_URL", database_url)
        .env("MENTORSHIP_JWT_SECRET", std::str::from_utf8(SECRET).expect("utf8"))
        .envs(env.iter().copied());
    spawn_command(command, tls).await
}

/// The built binary as `cargo run` runs it: no `DATABASE_URL` and no key,
/// so it starts its private cluster and development key in `data_dir`.
pub async fn spawn_binary_in_development(data_dir: &std::path::Path) -> BinaryServer {
    let mut command = binary();
    command
        .env_remove("DATABASE_URL")
        .env_remove("MENTORSHIP_JWT_SECRET")
        .env("MENTORSHIP_DATA_DIR", data_dir);
    spawn_command(command, None).await
}

/// The log filter `TEST_LOG` asks for, if any: a `RUST_LOG`-style filter
/// (`debug,sqlx=warn`), or `1` for `info,sqlx=warn`.
pub fn test_log_filter() -> Option<String> {
    let asked = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty())?;
    Some(if asked == "1" {
        "info,sqlx=warn".to_owned()
    } else {
        asked
    })
}

/// `TEST_LOG=1 cargo test NAME` shows the logs of the replicas a test runs
/// in its process (the harness prints a test's output when it fails, or
/// always with `--nocapture`); without it they log nothing.
pub fn test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Some(filter) = test_log_filter() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// The built binary, listening on port 0 (so no other process can take its
/// port first) and logging at info (or as `TEST_LOG` says), unless the
/// caller's env says otherwise.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mentorship"));
    command
        .env("MENTORSHIP_LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", test_log_filter().unwrap_or_else(|| "info,sqlx=warn".into()));
    command
}

pub async fn spawn_command(mut command: Command, tls: Option<tonic::transport::ClientTlsConfig>) -> BinaryServer {
    let log = std::env::temp_dir().join(format!("mentorship-{}.log", Uuid::new_v4().simple()));
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
        .spawn()
        .expect("start the binary");
    let mut server = BinaryServer {
        child,
        addr: String::new(),
        channel: Channel::from_static("http://127.0.0.1:1").connect_lazy(),
        log,
    };
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    for _ in 0..300 {
        if let Some(status) = server.child.try_wait().expect("wait") {
            panic!("the binary exited before serving ({status}):\n{}", server.log_text());
        }
        let serving = server.log_text().lines().find_map(serving_addr);
        let scheme = if tls.is_some() { "https" } else { "http" };
        if let Some(addr) = serving {
            let endpoint = Channel::from_shared(format!("{scheme}://{addr}")).expect("uri");
            let endpoint = match &tls {
                Some(tls) => endpoint.tls_config(tls.clone()).expect("client TLS"),
                None => endpoint,
            };
            if let Ok(channel) = endpoint.connect().await
                && HealthClient::new(channel.clone())
                    .check(HealthCheckRequest::default())
                    .await
                    .is_ok()
            {
                server.addr = addr;
                server.channel = channel;
                return server;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the binary did not serve within 15 s:\n{}", server.log_text());
}

/// The address in the "serving mentorship.v1" line, in text or JSON.
pub fn serving_addr(line: &str) -> Option<String> {
    let rest = line.split_once("serving mentorship.v1")?.1;
    if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).ok()?;
        return Some(json["fields"]["addr"].as_str()?.to_owned());
    }
    Some(rest.split_once("addr=")?.1.split_whitespace().next()?.to_owned())
}
