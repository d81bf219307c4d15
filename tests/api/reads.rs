//! GetSession's coalesced reads (`store::coalescer`): calls that arrive while
//! every batch slot is busy are read by one statement, and each still gets
//! its own answer, access check and error.

use std::time::Duration as StdDuration;

use mentorship::{grpc::pb, store::coalescer::Coalescer};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::helpers::*;

/// The backends of batch statements waiting on the table lock of
/// [`fill_the_slots`].
const BLOCKED_BATCHES: &str = "FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock'
       AND query LIKE '%FROM sessions WHERE id = ANY($1)'";

/// How many batch statements wait on the table lock.
async fn blocked_batches(app: &TestApp) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) {BLOCKED_BATCHES}")))
        .fetch_one(&app.pool)
        .await
        .expect("pg_stat_activity")
}

/// Polls (bounded) until `done`.
async fn until<F: AsyncFn() -> bool>(what: &str, done: F) {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
}

/// A session as stored: without its active duration, which grows as it is read.
fn stored(s: pb::Session) -> pb::Session {
    pb::Session {
        active_duration: None,
        ..s
    }
}

type Call = tokio::task::JoinHandle<Result<pb::Session, Status>>;

/// GetSession of `id` as `token`, in a task of its own.
fn get(app: &TestApp, token: &str, id: String) -> Call {
    let caller = app.on(0, token);
    tokio::spawn(async move { caller.get_session(&id).await })
}

/// Every read of `sessions` held by a table lock; then one GetSession per
/// batch slot, `(token, session id)` from `in_slots` in turn, each let in only
/// once the one before it waits on the lock, so every slot holds a batch of
/// one; then the `queued` calls, which can only queue behind them. Returns
/// both kinds of calls, the lock still held.
async fn fill_the_slots(
    app: &TestApp,
    lock: &mut sqlx::PgConnection,
    in_slots: (String, String),
    queued: Vec<(String, String)>,
) -> (Vec<Call>, Vec<Call>) {
    let reads: &Coalescer = &app.replicas[0].app.coalescer;
    sqlx::query("BEGIN").execute(&mut *lock).await.expect("begin");
    sqlx::query("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let mut slots = Vec::new();
    for i in 0..reads.batches() {
        slots.push(get(app, &in_slots.0, in_slots.1.clone()));
        until("the call's batch waits on the lock", async || {
            blocked_batches(app).await == i as i64 + 1
        })
        .await;
    }
    let (calls, _) = reads.counts();
    let queued: Vec<Call> = queued.into_iter().map(|(token, id)| get(app, &token, id)).collect();
    let n = queued.len() as u64;
    until("the other calls arrive", async || reads.counts().0 == calls + n).await;
    (slots, queued)
}

#[tokio::test]
async fn calls_queued_together_are_read_by_one_statement_and_each_gets_its_own_answer() {
    let app = spawn_waiting_for_locks(roomy_rules(), StdDuration::from_secs(60)).await;
    let reads = &app.replicas[0].app.coalescer;
    let mut worlds = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let w = world(&app).await;
        sessions.push(on_demand(&app, &w, None).await.expect("create"));
        worlds.push(w);
    }
    // Queued behind the slots: each mentee reads its own session (twice),
    // one mentee reads another's, and a coordinator reads one that does not exist.
    let mut more = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..2 {
        for (w, s) in worlds.iter().zip(&sessions) {
            more.push((w.mentee_token(), s.id.clone()));
            expected.push(Ok(s.id.clone()));
        }
        more.push((worlds[0].mentee_token(), sessions[1].id.clone()));
        expected.push(Err(Code::PermissionDenied));
        more.push((coordinator(), Uuid::new_v4().to_string()));
        expected.push(Err(Code::NotFound));
    }
    let (_, statements) = reads.counts();
    let mut lock = app.pool.acquire().await.expect("connection");
    let in_slots = (coordinator(), sessions[0].id.clone());
    let (slots, queued) = fill_the_slots(&app, &mut lock, in_slots, more).await;
    sqlx::query("COMMIT").execute(&mut *lock).await.expect("commit");

    let mut answers = Vec::new();
    for call in slots.into_iter().chain(queued) {
        answers.push(call.await.expect("task"));
    }
    assert_eq!(
        reads.counts().1 - statements,
        reads.batches() as u64 + 1,
        "one statement per slot, and one for every call queued behind them"
    );

    let expected = std::iter::repeat_n(Ok(sessions[0].id.clone()), reads.batches()).chain(expected);
    for (answer, expected) in answers.into_iter().zip(expected) {
        match (answer, expected) {
            (Ok(s), Ok(id)) => {
                assert_eq!(s.id, id);
                assert_eq!(stored(s), stored(get_session(&app, &id).await), "the whole session");
            }
            (Err(status), Err(code)) => assert_eq!(status.code(), code, "{status:?}"),
            (got, expected) => panic!("{got:?}, expected {expected:?}"),
        }
    }
}

#[tokio::test]
async fn a_failed_batch_answers_each_of_its_calls_with_its_error_and_the_next_batch_reads() {
    let app = spawn_waiting_for_locks(roomy_rules(), StdDuration::from_secs(60)).await;
    let w = world(&app).await;
    let s = on_demand(&app, &w, None).await.expect("create");
    let call = (w.mentee_token(), s.id.clone());
    let mut lock = app.pool.acquire().await.expect("connection");
    let (slots, queued) = fill_the_slots(&app, &mut lock, call.clone(), vec![call; 6]).await;
    // The database ends the connections of the batches in the slots.
    let ended: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(pg_terminate_backend(pid)) {BLOCKED_BATCHES}"
    )))
    .fetch_one(&mut *lock)
    .await
    .expect("terminate");
    assert_eq!(ended as usize, slots.len());
    sqlx::query("COMMIT").execute(&mut *lock).await.expect("commit");

    for call in slots {
        let status = call.await.expect("task").expect_err("its batch failed");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    let expected = stored(get_session(&app, &s.id).await);
    for call in queued {
        assert_eq!(
            stored(call.await.expect("task").expect("read by the next batch")),
            expected
        );
    }
}

/// A row the service cannot read (a status written by a newer release, say)
/// fails only the calls that asked for it, not the rest of its batch.
#[tokio::test]
async fn a_row_that_cannot_be_read_fails_only_the_calls_that_asked_for_it() {
    let app = spawn_waiting_for_locks(roomy_rules(), StdDuration::from_secs(60)).await;
    let good = on_demand(&app, &world(&app).await, None).await.expect("create");
    let bad = on_demand(&app, &world(&app).await, None).await.expect("create");
    sqlx::raw_sql("ALTER TABLE sessions DROP CONSTRAINT sessions_status_check")
        .execute(&app.pool)
        .await
        .expect("drop the check");
    sqlx::query("UPDATE sessions SET status = 'HIBERNATING', active_since = NULL WHERE id = $1::uuid")
        .bind(&bad.id)
        .execute(&app.pool)
        .await
        .expect("a status this release does not know");
    let (good_call, bad_call) = ((coordinator(), good.id.clone()), (coordinator(), bad.id.clone()));
    let mut lock = app.pool.acquire().await.expect("connection");
    let queued = vec![bad_call, good_call.clone(), good_call.clone()];
    let (slots, queued) = fill_the_slots(&app, &mut lock, good_call, queued).await;
    sqlx::query("COMMIT").execute(&mut *lock).await.expect("commit");

    let expected = stored(get_session(&app, &good.id).await);
    for call in slots {
        assert_eq!(stored(call.await.expect("task").expect("a slot's read")), expected);
    }
    let mut queued = queued.into_iter();
    let status = queued
        .next()
        .expect("the bad call")
        .await
        .expect("task")
        .expect_err("unreadable");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    for call in queued {
        assert_eq!(
            stored(call.await.expect("task").expect("same batch, own row")),
            expected
        );
    }
}
