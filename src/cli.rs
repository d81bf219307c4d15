//! The commands of the `mentorship` binary: `serve` (the default),
//! `migrate`, `token` and `purge`. `main.rs` only parses the command line and
//! dispatches here.

use std::{net::SocketAddr, path::Path, sync::Arc};

use anyhow::{Context, bail};

use crate::{
    app::App,
    devdb::{self, DevDb, Durability},
    grpc::auth::{Claims, Verifier, mint_hs256},
    settings::{
        args::{LogFormat, PurgeArgs, ServeArgs, TokenArgs},
        file::ServiceConfig,
    },
};

/// How long a shutdown waits for in-flight calls.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// File (in the data dir) holding the development HS256 secret of `cargo run`.
const DEV_SECRET_FILE: &str = "dev-jwt-secret";

/// Runs a command that needs the async runtime, logging to stderr in `format`.
pub fn run(format: LogFormat, command: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    run_parking(format, || {}, command)
}

/// [`run`], calling `on_park` on a worker thread each time it goes idle
/// (the binary returns its allocator's freed memory there).
pub fn run_parking(
    format: LogFormat,
    on_park: impl Fn() + Send + Sync + 'static,
    command: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    init_logging(format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(on_park)
        .build()?
        .block_on(command)
}

/// Log lines go to stderr, filtered by `RUST_LOG` (default `info,sqlx=warn`).
/// Each call's line carries its span (`grpc::trace`): as `rpc{...}` in text,
/// as the `span` object in JSON.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// Who opens the private cluster: the server starts it (and stops it on
/// exit); a tool uses the one a running server started, if there is one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opener {
    Server,
    Tool,
}

/// The database to use: `DATABASE_URL`, or the private cluster in the data dir.
async fn database(args: &ServeArgs, opener: Opener) -> anyhow::Result<(String, Option<DevDb>)> {
    if let Some(url) = &args.database_url {
        return Ok((url.expose().to_owned(), None));
    }
    let dir = args.data_dir.clone();
    let db = tokio::task::spawn_blocking(move || match opener {
        Opener::Server => DevDb::start(&dir, Durability::Durable),
        Opener::Tool => DevDb::attach_or_start(&dir),
    })
    .await??;
    devdb::ensure_database(&db.url("postgres"), "mentorship").await?;
    tracing::info!(
        data_dir = %args.data_dir.display(),
        cluster = %db.cluster_dir().display(),
        port = db.port(),
        "private PostgreSQL {}",
        if db.started_here() { "started" } else { "found running" }
    );
    Ok((db.url("mentorship"), Some(db)))
}

/// `mentorship migrate`: applies the migrations and exits.
pub async fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let (url, _db) = database(&args, Opener::Tool).await?;
    crate::connect(&url, 2).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// The config file, validated (defaults without one), with the settings
/// the environment and flags override.
fn config_file(args: &ServeArgs) -> anyhow::Result<ServiceConfig> {
    let mut file = match &args.config_file {
        Some(path) => ServiceConfig::load(path)?,
        None => ServiceConfig::default(),
    };
    if let Some(allow) = args.webhooks_allow_private_targets {
        file.webhooks.allow_private_targets = allow;
    }
    Ok(file)
}

/// `mentorship purge [--dry-run]`: purges (or reports) expired history once and exits.
pub async fn purge(args: ServeArgs, purge: PurgeArgs) -> anyhow::Result<()> {
    let rules = config_file(&args)?.rules()?;
    let (url, _db) = database(&args, Opener::Tool).await?;
    let app = App::new(crate::connect_for_tools(&url, 2).await?, rules);
    let days = app.rules.history.retention.num_days();
    if purge.dry_run {
        let plan = crate::jobs::retention::plan(&app).await?;
        println!("would purge (older than {days} days): {plan}");
        return Ok(());
    }
    match crate::jobs::retention::purge_once(&app).await? {
        Some(done) => println!("purged (older than {days} days): {done}"),
        None => bail!("another replica is purging right now; try again later"),
    }
    Ok(())
}

/// `mentorship serve` (the default): serves until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // The config file is validated before anything starts.
    let file = config_file(&args)?;
    let mut rules = file.rules()?;
    // A read unanswered past the statement timeout (which only the server
    // enforces) and a margin has a silent connection.
    rules.silent_connection = args.db_timeouts().statement + std::time::Duration::from_secs(5);
    let listen_addr = args
        .listen_addr
        .or(file.server.listen_addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 50051)));
    // Read before anything starts: a bad path fails at once.
    let tls = args.tls()?;
    let (url, devdb) = database(&args, Opener::Server).await?;
    let verifier = verifier(&args, listen_addr, devdb.is_some())?;
    let pool = crate::connect_with(&url, args.db_max_connections, args.db_timeouts()).await?;
    let listener = crate::grpc::connections::bind(listen_addr).with_context(|| format!("binding {listen_addr}"))?;
    let transport = crate::Transport {
        metrics_addr: args.metrics_addr.or(file.server.metrics_addr),
        tls,
        ..file.server.transport()
    };
    let tls = transport.tls.is_some();
    let server = crate::start(
        App::new(pool, rules),
        Arc::new(verifier),
        listener,
        Default::default(),
        transport,
    )
    .await?;
    if let Some(metrics) = server.metrics_addr {
        tracing::info!(addr = %metrics, "serving metrics at /metrics");
    }
    tracing::info!(addr = %server.addr, tls, "serving mentorship.v1");
    let stop = server.trigger();
    let serving = server.wait();
    tokio::pin!(serving);
    tokio::select! {
        result = &mut serving => return result,
        _ = wait_for_signal() => {}
    }
    // Health goes NOT_SERVING and open streams end; in-flight calls get a bounded grace.
    tracing::info!("shutting down");
    stop.cancel();
    match tokio::time::timeout(SHUTDOWN_GRACE, serving).await {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shutdown grace elapsed with calls still open; exiting"),
    }
    drop(devdb);
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The token verifier. Without a configured key the server refuses to start,
/// except on the private development database, where it uses (and creates on
/// first use) a development secret and explains how to mint tokens.
fn verifier(args: &ServeArgs, listen_addr: SocketAddr, development: bool) -> anyhow::Result<Verifier> {
    let max_lifetime = args.auth.jwt_max_lifetime_seconds.map(std::time::Duration::from_secs);
    Ok(key(args, listen_addr, development)?.with_max_lifetime(max_lifetime))
}

/// The verifier of the configured key (see [`verifier`]).
fn key(args: &ServeArgs, listen_addr: SocketAddr, development: bool) -> anyhow::Result<Verifier> {
    let auth = &args.auth;
    let (iss, aud) = (auth.jwt_issuer.as_deref(), auth.jwt_audience.as_deref());
    if let Some(path) = &auth.jwt_public_key_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return Verifier::public_key(&pem, iss, aud);
    }
    if let Some(secret) = &auth.jwt_secret {
        return Verifier::hs256(secret.expose().as_bytes(), iss, aud).context("MENTORSHIP_JWT_SECRET");
    }
    if !development {
        bail!(
            "no token verification key: set MENTORSHIP_JWT_SECRET (HS256) or \
             MENTORSHIP_JWT_PUBLIC_KEY_FILE (RS256/ES256)"
        );
    }
    let secret = dev_secret(&args.data_dir, true)?;
    let transport = match args.tls_cert_file {
        Some(_) => "-cacert <the CA of your certificate>",
        None => "-plaintext",
    };
    eprintln!(
        "\nDevelopment mode: tokens are signed with the key in {}/{DEV_SECRET_FILE}.\n\
         Mint one with:\n    cargo run -- token --role coordinator\n\
         and call with:\n    grpcurl {transport} -H \"authorization: Bearer $TOKEN\" {} list\n",
        args.data_dir.display(),
        listen_addr
    );
    Verifier::hs256(&secret, iss, aud)
}

/// Reads (or, when `create`, makes) the development secret.
fn dev_secret(dir: &Path, create: bool) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(DEV_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().as_bytes().to_vec()),
        Err(_) if create => {
            std::fs::create_dir_all(dir)?;
            let secret = hex::encode(rand::random::<[u8; 32]>());
            std::fs::write(&path, &secret)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            Ok(secret.into_bytes())
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "no MENTORSHIP_JWT_SECRET and no development key at {} (start the server once with `cargo run`)",
                path.display()
            )
        }),
    }
}

/// `mentorship token`: prints a development token. A mentor token's `sub`
/// is its profile's `user_id`, looked up in the database (the running
/// private cluster, or `DATABASE_URL`), unless `--sub` names it.
pub async fn token(args: ServeArgs, t: TokenArgs) -> anyhow::Result<()> {
    for role in &t.roles {
        if crate::domain::access::Role::parse(role).is_none() {
            bail!("unknown role {role:?}: use mentee, mentor, coordinator or service");
        }
    }
    if t.roles.iter().any(|r| r == "mentor") && t.mentor_id.is_none() {
        bail!("the mentor role needs --mentor-id <mentor profile id>");
    }
    let secret = match &args.auth.jwt_secret {
        Some(s) => s.expose().as_bytes().to_vec(),
        None => dev_secret(&args.data_dir, false)?,
    };
    let sub = match (t.sub, t.mentor_id) {
        (Some(sub), _) => sub,
        (None, Some(mentor_id)) if t.roles.iter().any(|r| r == "mentor") => mentor_user(&args, mentor_id).await?,
        (None, _) => uuid::Uuid::new_v4(),
    };
    let claims = Claims {
        sub: sub.to_string(),
        roles: t.roles.clone(),
        mentor_id: t.mentor_id.map(|m| m.to_string()),
        exp: chrono::Utc::now().timestamp() + t.ttl_seconds,
        iss: args.auth.jwt_issuer.clone(),
        aud: args.auth.jwt_audience.clone(),
        iat: Some(chrono::Utc::now().timestamp()),
        nbf: None,
    };
    println!("{}", mint_hs256(&secret, &claims)?);
    Ok(())
}

/// The `user_id` of mentor profile `mentor_id`: a mentor token must carry it
/// as its `sub` (MENTOR_IDENTITY_MISMATCH otherwise).
async fn mentor_user(args: &ServeArgs, mentor_id: uuid::Uuid) -> anyhow::Result<uuid::Uuid> {
    let (url, _db) = database(args, Opener::Tool).await?;
    // Migrated like the server's, so a database no server has used yet
    // answers "no such profile" rather than "no such table".
    let pool = crate::connect(&url, 1).await.context("connecting to the database")?;
    let owner = crate::store::directory::mentor_user(&pool, mentor_id)
        .await
        .map_err(|e| anyhow::anyhow!("reading mentor profile {mentor_id}: {e}"))?;
    owner.with_context(|| {
        format!(
            "there is no mentor profile {mentor_id} yet: create it (UpsertMentor) first, \
             or name the token's user with --sub"
        )
    })
}
