//! The suite's PostgreSQL: one private cluster per test process, a fresh
//! database per test, clusters of a test's own for the tests that crash it,
//! and the suite's scale.

use mentorship::devdb::DevDb;
use sqlx::Connection;
use tokio::sync::OnceCell;
use uuid::Uuid;

pub const SECRET: &[u8] = b"test-secret-0123456789abcdef-0123456789";
pub const TEMPLATE: &str = "mentorship_template";

/// How heavy the heavy tests are: rounds of races, property-test cases, fault
/// schedules. `MENTORSHIP_TEST_SCALE=full` runs the full counts the issues
/// ask for; anything else (the default) runs the small counts that keep
/// `cargo test` within a few minutes on two cores.
pub fn scale(small: usize, full: usize) -> usize {
    match std::env::var("MENTORSHIP_TEST_SCALE").as_deref() {
        Ok("full") => full,
        _ => small,
    }
}

/// The suite's PostgreSQL, started once per test process.
pub struct Cluster {
    pub db: DevDb,
}

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();

/// Starts the cluster and migrates the template database (once).
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            let db = own_cluster().await;
            mentorship::devdb::ensure_database(&db.url("postgres"), TEMPLATE)
                .await
                .expect("create template");
            let mut conn = sqlx::PgConnection::connect(&db.url(TEMPLATE))
                .await
                .expect("connect template");
            mentorship::store::MIGRATOR
                .run(&mut conn)
                .await
                .expect("migrate template");
            conn.close().await.expect("close");
            Cluster { db }
        })
        .await
}

/// A private throwaway cluster, for a test that stops or restarts
/// PostgreSQL (so it never disturbs the other tests' shared cluster).
pub async fn own_cluster() -> DevDb {
    tokio::task::spawn_blocking(DevDb::start_temporary)
        .await
        .expect("join")
        .expect("start private PostgreSQL")
}

/// [`own_cluster`] whose acknowledged commits survive a crash of the server
/// (`synchronous_commit` on), for the tests that crash it.
pub async fn own_crash_safe_cluster() -> DevDb {
    tokio::task::spawn_blocking(|| DevDb::start_temporary_with(mentorship::devdb::Durability::CrashSafe))
        .await
        .expect("join")
        .expect("start private PostgreSQL")
}

/// A fresh, migrated database; returns its URL.
pub async fn fresh_database() -> String {
    let cluster = cluster().await;
    let name = format!("t_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&cluster.db.url("postgres"))
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {TEMPLATE}"
    )))
    .execute(&mut conn)
    .await
    .expect("create test database");
    conn.close().await.ok();
    cluster.db.url(&name)
}
