//! A private PostgreSQL started from the local binaries, for `cargo run`
//! (when `DATABASE_URL` is unset) and for the test suite.
//!
//! PostgreSQL refuses to run as root, so when we are root the cluster is
//! created and run as the `postgres` user. The server is a child process that
//! gets SIGINT (fast shutdown) if this process dies, so no cluster outlives us.

use std::{
    fs,
    net::TcpListener,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// A running private PostgreSQL server.
pub struct DevDb {
    child: Option<Child>,
    port: u16,
    /// The directory the caller named (`.mentorship` of a checkout).
    data_dir: PathBuf,
    /// Where the cluster's files live: `data_dir`, or a directory the
    /// cluster's user can reach (see [`cluster_dir`]).
    cluster_dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    durability: Durability,
}

/// Where clusters go when their user cannot reach the data directory.
pub const RELOCATED_BASE: &str = "/var/lib/mentorship";

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Normal fsync: `cargo run` keeps its data across restarts.
    Durable,
    /// fsync off, data discarded on drop: tests.
    Throwaway,
    /// As [`Durability::Throwaway`], but every commit is written to the WAL
    /// before it is acknowledged (`synchronous_commit` on): a crash of the
    /// server (not of the machine) loses nothing acknowledged. The fault
    /// tests crash it.
    CrashSafe,
}

impl DevDb {
    /// Starts (creating on first use) a cluster for `dir` on a free loopback
    /// port. When the cluster already runs (another process started it),
    /// this fails and says how to share it.
    pub fn start(dir: &Path, durability: Durability) -> anyhow::Result<DevDb> {
        DevDb::open(dir, durability, false)
    }

    /// The cluster for `dir`: the one a running `mentorship serve` started,
    /// when there is one (connected to, never stopped, its log untouched),
    /// else a new start. For the commands that need the database beside a
    /// running server (`purge`, `token`, `migrate`).
    pub fn attach_or_start(dir: &Path) -> anyhow::Result<DevDb> {
        DevDb::open(dir, Durability::Durable, true)
    }

    /// Whether this process started the server (and stops it when dropped).
    pub fn started_here(&self) -> bool {
        self.child.is_some()
    }

    fn open(dir: &Path, durability: Durability, attach: bool) -> anyhow::Result<DevDb> {
        let bin = bin_dir()?;
        let run_as = postgres_user()?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = fs::canonicalize(dir)?;
        let cluster_dir = cluster_dir(&dir, run_as)?;
        let pgdata = cluster_dir.join("pgdata");
        if !pgdata.join("PG_VERSION").exists() {
            let mut initdb = Command::new(bin.join("initdb"));
            initdb.arg("-D").arg(&pgdata).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ]);
            let out = as_user(&mut initdb, run_as)
                .stdin(Stdio::null())
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed in {}: {}",
                    pgdata.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if let Some(port) = running_port(&pgdata) {
            if !attach {
                bail!(
                    "the private PostgreSQL of {} already runs on port {port} (another `mentorship` \
                     serving from this checkout?); stop that one, or run this one beside it with \
                     DATABASE_URL=postgres://postgres@127.0.0.1:{port}/mentorship",
                    dir.display()
                );
            }
            let db = DevDb {
                child: None,
                port,
                data_dir: dir,
                cluster_dir,
                bin,
                run_as,
                durability: Durability::Durable,
            };
            db.wait_accepting(Instant::now() + Duration::from_secs(10))
                .with_context(|| format!("the running cluster in {}", pgdata.display()))?;
            return Ok(db);
        }
        let mut db = DevDb {
            child: None,
            port: free_port()?,
            data_dir: dir,
            cluster_dir,
            bin,
            run_as,
            durability,
        };
        db.spawn()?;
        Ok(db)
    }

    /// Starts the server on the cluster's port and waits until it accepts connections.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log_path = self.cluster_dir.join("postgres.log");
        let log = fs::File::create(&log_path).context("creating postgres.log")?;
        if let Some((uid, gid)) = self.run_as {
            chown(&log_path, uid, gid)?;
        }
        let mut postgres = Command::new(self.bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(self.cluster_dir.join("pgdata"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "max_connections=300"]);
        if self.durability != Durability::Durable {
            postgres.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        if self.durability == Durability::Throwaway {
            postgres.args(["-c", "synchronous_commit=off"]);
        }
        as_user(&mut postgres, self.run_as)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets the signal the kernel
        // sends this child when its parent thread dies.
        unsafe {
            postgres.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.child = Some(spawn_on_lasting_thread(postgres)?);
        self.wait_ready(&log_path)
    }

    /// Stops the server (fast shutdown) and starts it again on the same port,
    /// as a PostgreSQL restart looks to its clients.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Where the cluster's files are (the data dir, or the relocated one).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Starts a throwaway cluster in a fresh directory under the system temp dir.
    pub fn start_temporary() -> anyhow::Result<DevDb> {
        DevDb::start_temporary_with(Durability::Throwaway)
    }

    /// [`DevDb::start_temporary`] with the given durability.
    pub fn start_temporary_with(durability: Durability) -> anyhow::Result<DevDb> {
        let base = std::env::temp_dir().join("mentorship-pg");
        fs::create_dir_all(&base)?;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777))?;
        remove_stale(&base);
        let dir = base.join(format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        DevDb::start(&dir, durability)
    }

    /// URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until the server on this cluster's port accepts connections.
    fn wait_accepting(&self, deadline: Instant) -> anyhow::Result<()> {
        while !self.accepting() {
            if Instant::now() > deadline {
                bail!("postgres on port {} does not accept connections", self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn accepting(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "postgres exited ({status}) during start; its log {} says:\n{}",
                    log.display(),
                    fs::read_to_string(log).unwrap_or_default()
                );
            }
            if self.accepting() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("postgres did not become ready within 60 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown; waits for the server to exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// Immediate shutdown (`pg_ctl -m immediate`): the server exits without
    /// a checkpoint, as in a crash, and recovers from the WAL when started
    /// again. Waits for it to exit.
    pub fn crash(&mut self) {
        self.signal(libc::SIGQUIT);
    }

    fn signal(&mut self, signal: libc::c_int) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for DevDb {
    fn drop(&mut self) {
        self.stop();
        if self.durability == Durability::Throwaway {
            let _ = fs::remove_dir_all(&self.cluster_dir);
            let _ = fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Where the cluster's files live. Normally in `dir` itself. But when the
/// cluster runs as another user (we are root, PostgreSQL runs as `postgres`)
/// that cannot reach `dir` — a checkout under `/root`, mode 0700 — it goes
/// under [`RELOCATED_BASE`], in a directory named by a hash of `dir`'s path,
/// so each checkout keeps its own cluster across runs. A note in `dir` says
/// where it went.
fn cluster_dir(dir: &Path, run_as: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    let Some((uid, gid)) = run_as else {
        return Ok(dir.to_owned());
    };
    let owner = fs::metadata(dir)?;
    chown(dir, uid, gid)?;
    if can_reach(dir, uid, gid) {
        return Ok(dir.to_owned());
    }
    // Not reachable: the directory stays its owner's.
    chown(
        dir,
        std::os::unix::fs::MetadataExt::uid(&owner),
        std::os::unix::fs::MetadataExt::gid(&owner),
    )?;
    use sha2::Digest;
    let hash = hex::encode(&sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes())[..8]);
    let base = Path::new(RELOCATED_BASE);
    fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    fs::set_permissions(base, fs::Permissions::from_mode(0o755))?;
    let cluster = base.join(hash);
    fs::create_dir_all(&cluster)?;
    chown(&cluster, uid, gid)?;
    fs::write(
        dir.join("cluster-location"),
        format!(
            "The postgres user cannot reach this directory, so the private cluster lives in {}\n",
            cluster.display()
        ),
    )?;
    Ok(cluster)
}

/// Whether `uid`/`gid` can enter and write `dir` (every parent must be searchable).
fn can_reach(dir: &Path, uid: u32, gid: u32) -> bool {
    Command::new("test")
        .arg("-w")
        .arg(dir)
        .arg("-a")
        .arg("-x")
        .arg(dir)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Creates database `name` when it does not exist yet.
pub async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // The name is ours (never client input) and quoted.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{}\"",
            name.replace('"', "")
        )))
        .execute(&mut conn)
        .await?;
    }
    Ok(())
}

/// The kernel signals the child when the *thread* that spawned it exits, so
/// spawn from a thread that lives as long as the process.
fn spawn_on_lasting_thread(mut command: Command) -> anyhow::Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("devdb-parent".into()).spawn(move || {
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    })?;
    rx.recv()?.context("starting postgres")
}

fn as_user(command: &mut Command, run_as: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = run_as {
        command.uid(uid).gid(gid);
    }
    command
}

/// When root, the uid and gid of `postgres` (initdb refuses root).
fn postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&"postgres") && fields.len() > 3 {
            return Ok(Some((fields[2].parse()?, fields[3].parse()?)));
        }
    }
    bail!("running as root, and there is no `postgres` user to run PostgreSQL as")
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} to postgres", path.display()))
}

/// The directory with initdb and postgres: `MENTORSHIP_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin`, else whatever is on PATH.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("MENTORSHIP_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("initdb").exists()))
        .unwrap_or(false);
    if on_path {
        return Ok(PathBuf::new());
    }
    bail!("PostgreSQL binaries not found: install PostgreSQL, set MENTORSHIP_PG_BIN, or set DATABASE_URL")
}

/// The port of the postmaster that runs on `pgdata`, from its
/// `postmaster.pid` (line 1 the pid, line 4 the port), when that process is
/// alive. A file left by a crash names a dead pid and is ignored (PostgreSQL
/// itself replaces it on start).
fn running_port(pgdata: &Path) -> Option<u16> {
    let pid_file = fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = pid_file.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    let port: u16 = lines.get(3)?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists (EPERM: it
    // exists and belongs to another user, as `postgres` does for root's
    // neighbours).
    let alive = pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
    alive.then_some(port)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Removes temporary clusters left by test processes that no longer run.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()?.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
