//! Capacity (SPEC §4.3): admission against every limit, the queue, and
//! promotion when a concurrency slot frees, on one replica and on two.

use chrono::Duration;
use mentorship::{
    app::Rules,
    domain::capacity::Limits,
    grpc::pb::{self, ActorKind, SessionStatus},
};
use tonic::Code;
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::helpers::*;

fn limits(per_mentee: i64, system: i64, queue: i64) -> Rules {
    Rules {
        limits: Limits {
            per_mentee,
            system,
            queue,
        },
        ..Rules::default()
    }
}

/// A mentor whose own limit is `limit`, with a listing; returns (mentor, listing).
async fn mentor_with_limit(app: &TestApp, limit: i32) -> (Uuid, Uuid) {
    mentor_with_listing(&app.coordinator(), limit).await
}

/// A SCHEDULED session of `mentee` with the mentor of `listing`, in its own hour.
async fn scheduled_for(app: &TestApp, listing: Uuid, mentee: Uuid, hour: i64) -> pb::Session {
    let start = monday_at(0) + Duration::days(60) + Duration::hours(hour);
    let b = app
        .coordinator()
        .create_booking(booking_request(listing, mentee, start, start + Duration::minutes(30)))
        .await
        .expect("booking");
    accept(app, &b.id).await.expect("accept").session.expect("session")
}

/// The transaction id of each event of a session, in seq order.
async fn event_txids(app: &TestApp, session_id: &str) -> Vec<i64> {
    sqlx::query_scalar("SELECT txid FROM session_events WHERE session_id = $1::uuid ORDER BY seq")
        .bind(session_id)
        .fetch_all(&app.pool)
        .await
        .expect("txids")
}

#[tokio::test]
async fn admission_queues_past_each_limit_and_refuses_when_the_queue_is_full() {
    let app = spawn_with(1, limits(1, 50, 2)).await;
    let c = app.coordinator();
    let w = world(&app).await;
    let (_, other_listing) = mentor_with_limit(&app, 3).await;

    // The mentee's one concurrency slot: its second session queues.
    let first = scheduled_for(&app, w.listing, w.mentee, 0).await;
    let second = scheduled_for(&app, other_listing, w.mentee, 1).await;
    assert_eq!(
        c.start_session(&first.id).await.expect("start").status(),
        SessionStatus::Active
    );
    let queued = c.start_session(&second.id).await.expect("start");
    assert_eq!(queued.status(), SessionStatus::Queued);
    assert_eq!(queued.queue_position, 1);
    assert!(queued.estimated_wait.is_some());
    let events = event_log(&app, &second.id).await;
    assert_eq!(
        (events[1].from_status(), events[1].to_status()),
        (SessionStatus::Scheduled, SessionStatus::Queued)
    );
    assert_eq!(
        get_session(&app, &second.id).await,
        queued,
        "computed on read the same way"
    );

    // On demand, too: CREATED straight into the queue.
    let on_demand_queued = on_demand(&app, &w, None).await.expect("create");
    assert_eq!(on_demand_queued.status(), SessionStatus::Queued);
    assert_eq!(on_demand_queued.queue_position, 2);
    assert_eq!(
        event_log(&app, &on_demand_queued.id).await[0].to_status(),
        SessionStatus::Queued
    );

    // The queue holds two: the third is refused and leaves nothing behind.
    let third = scheduled_for(&app, other_listing, w.mentee, 2).await;
    let (sessions, events) = (app.count("sessions").await, app.count("session_events").await);
    let status = assert_status(c.start_session(&third.id).await, Code::ResourceExhausted, "QUEUE_FULL");
    let info = status.get_details_error_info().expect("info");
    assert_eq!(info.metadata.get("limit").map(String::as_str), Some("queue"));
    assert_eq!(info.metadata.get("current").map(String::as_str), Some("2"));
    assert_eq!(info.metadata.get("maximum").map(String::as_str), Some("2"));
    assert_status(on_demand(&app, &w, None).await, Code::ResourceExhausted, "QUEUE_FULL");
    assert_eq!(get_session(&app, &third.id).await.status(), SessionStatus::Scheduled);
    assert_eq!(
        (app.count("sessions").await, app.count("session_events").await),
        (sessions, events),
        "a refused admission leaves no row and no event"
    );

    // The queue at a glance, for coordinators and services only.
    let status = c.call(pb::GetQueueStatusRequest {}).await.expect("queue status");
    assert_eq!(
        (
            status.total_queued,
            status.active_session_count,
            status.max_concurrent_sessions
        ),
        (2, 1, 50)
    );
    assert!(status.estimated_wait.is_some_and(|w| w.seconds > 0));
    assert_status(
        app.as_(&w.mentee_token()).call(pb::GetQueueStatusRequest {}).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // A mentee may leave the queue.
    let left = app
        .as_(&w.mentee_token())
        .cancel_session(&second.id, "changed my mind")
        .await
        .expect("cancel");
    assert_eq!(left.status(), SessionStatus::Cancelled);
}

#[tokio::test]
async fn a_freed_slot_promotes_the_oldest_admissible_session_in_the_same_transaction() {
    // Two system slots; mentor M takes one session at a time.
    let app = spawn_with(1, limits(1, 2, 10)).await;
    let c = app.coordinator();
    let (_, m_listing) = mentor_with_limit(&app, 1).await;
    let (_, n_listing) = mentor_with_limit(&app, 3).await;
    let (_, p_listing) = mentor_with_limit(&app, 3).await;
    let mentees: Vec<Uuid> = futures::future::join_all((0..4).map(|_| add_mentee(&app))).await;
    let on_m = scheduled_for(&app, m_listing, mentees[0], 0).await;
    let on_n = scheduled_for(&app, n_listing, mentees[1], 1).await;
    let blocked_by_mentor = scheduled_for(&app, m_listing, mentees[2], 2).await;
    let blocked_by_system = scheduled_for(&app, p_listing, mentees[3], 3).await;
    for s in [&on_m, &on_n] {
        assert_eq!(
            c.start_session(&s.id).await.expect("start").status(),
            SessionStatus::Active
        );
    }
    // The system is full: both queue, the one for M first.
    let m_queued = c.start_session(&blocked_by_mentor.id).await.expect("start");
    let p_queued = c.start_session(&blocked_by_system.id).await.expect("start");
    assert_eq!(
        (m_queued.status(), p_queued.status()),
        (SessionStatus::Queued, SessionStatus::Queued)
    );
    assert_eq!((m_queued.queue_position, p_queued.queue_position), (1, 2));

    let mut watcher = c
        .watch_session(&blocked_by_system.id, Some(2))
        .await
        .expect("watch the queued session");

    // N's session completes: one system slot frees. M is still full, so the
    // oldest queued session waits and the one behind it goes, at once.
    let done = c.complete_session(&on_n.id, None).await.expect("complete");
    let promoted = get_session(&app, &blocked_by_system.id).await;
    assert_eq!(promoted.status(), SessionStatus::Active);
    assert_eq!(
        get_session(&app, &blocked_by_mentor.id).await.status(),
        SessionStatus::Queued
    );
    let events = event_log(&app, &blocked_by_system.id).await;
    let last = events.last().expect("event");
    assert_eq!(
        (last.from_status(), last.to_status()),
        (SessionStatus::Queued, SessionStatus::Active)
    );
    assert_eq!(last.actor.as_ref().expect("actor").kind(), ActorKind::System);
    // Its watcher sees the promotion.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), watcher.message())
        .await
        .expect("delivered")
        .expect("stream")
        .expect("an item");
    match seen.item {
        Some(pb::watch_session_response::Item::Event(e)) => {
            assert_eq!((e.seq, e.to_status()), (3, SessionStatus::Active))
        }
        other => panic!("expected the promotion event, got {other:?}"),
    }
    // The promotion committed in the transaction of the completion.
    let completed_in = *event_txids(&app, &done.id).await.last().expect("txid");
    let promoted_in = *event_txids(&app, &blocked_by_system.id).await.last().expect("txid");
    assert_eq!(promoted_in, completed_in);

    // M's session is cancelled: its slot goes to the session queued for M.
    c.cancel_session(&on_m.id, "done early").await.expect("cancel");
    assert_eq!(
        get_session(&app, &blocked_by_mentor.id).await.status(),
        SessionStatus::Active
    );
    // Both promoted sessions waited; the p95 is one of their waits.
    let status = c.call(pb::GetQueueStatusRequest {}).await.expect("queue status");
    assert_eq!((status.total_queued, status.active_session_count), (0, 2));
    assert!(status.p95_queue_wait.is_some());
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM system_slots WHERE session_id IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("slots");
    assert_eq!(slots, 2, "the holders of the system's two slots");
}

#[tokio::test]
async fn a_session_queued_past_its_timeout_is_cancelled() {
    let app = spawn_with(1, limits(1, 50, 10)).await;
    let w = world(&app).await;
    on_demand(&app, &w, None).await.expect("the mentee's one slot");
    let queued = on_demand(&app, &w, None).await.expect("queued");
    assert_eq!(queued.status(), SessionStatus::Queued);
    app.expire_deadline(&queued.id).await;
    assert_eq!(app.sweep().await, 1);
    let done = get_session(&app, &queued.id).await;
    assert_eq!(done.status(), SessionStatus::Cancelled);
    assert_eq!(done.cancel_reason, "QUEUE_TIMEOUT");
    assert_eq!(done.queue_position, 0);
}

/// One round: 20 sessions start in parallel across two replicas against a
/// limit that admits `admitted`; exactly that many become ACTIVE and the rest
/// QUEUED with positions 1..n, no gaps.
async fn start_twenty_in_parallel(app: &TestApp, sessions: &[pb::Session], admitted: usize, round: usize) {
    let tok = coordinator();
    let handles: Vec<_> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let c = app.on((i + round) % 2, &tok);
            let id = s.id.clone();
            tokio::spawn(async move { c.start_session(&id).await })
        })
        .collect();
    for h in handles {
        h.await.expect("join").expect("every start is admitted or queued");
    }
    let mut active = 0;
    let mut positions = Vec::new();
    for s in sessions {
        let now = get_session(app, &s.id).await;
        match now.status() {
            SessionStatus::Active => active += 1,
            SessionStatus::Queued => positions.push(now.queue_position),
            other => panic!("round {round}: {other:?}"),
        }
    }
    positions.sort();
    assert_eq!(active, admitted, "round {round}: exactly the allowed number is ACTIVE");
    let want: Vec<i32> = (1..=(sessions.len() - admitted) as i32).collect();
    assert_eq!(positions, want, "round {round}: positions 1..n, no gaps");
    // Clear the round: the queue first, so nothing is promoted on the way out.
    let mut clear = Vec::new();
    for s in sessions {
        let now = get_session(app, &s.id).await;
        clear.push((now.status() == SessionStatus::Active, s.id.clone()));
    }
    clear.sort();
    for (_, id) in clear {
        app.coordinator()
            .cancel_session(&id, "next round")
            .await
            .expect("cancel");
    }
}

#[tokio::test]
async fn parallel_starts_on_two_replicas_never_exceed_a_mentors_limit() {
    let app = spawn_with(2, limits(1, 10_000, 100)).await;
    for round in 0..scale(3, 200) {
        let (_, listing) = mentor_with_limit(&app, 1).await;
        let mut sessions = Vec::new();
        for hour in 0..20 {
            let mentee = add_mentee(&app).await;
            sessions.push(scheduled_for(&app, listing, mentee, hour).await);
        }
        start_twenty_in_parallel(&app, &sessions, 1, round).await;
    }
}

#[tokio::test]
async fn parallel_starts_on_two_replicas_never_exceed_the_system_limit() {
    let app = spawn_with(2, limits(1, 3, 100)).await;
    for round in 0..scale(3, 200) {
        let mut sessions = Vec::new();
        for _ in 0..20 {
            let w = world(&app).await;
            sessions.push(scheduled_for(&app, w.listing, w.mentee, 0).await);
        }
        start_twenty_in_parallel(&app, &sessions, 3, round).await;
    }
}

#[tokio::test]
async fn one_mentee_created_on_many_mentors_at_once_holds_one_slot() {
    let app = spawn_with(2, limits(1, 10_000, 100)).await;
    let mentee = add_mentee(&app).await;
    let mut listings = Vec::new();
    for _ in 0..10 {
        listings.push(mentor_with_limit(&app, 3).await.1);
    }
    let pairs: Vec<(Uuid, Uuid)> = listings.iter().map(|listing| (mentee, *listing)).collect();
    let statuses: Vec<SessionStatus> = create_sessions_at_once(&app, &pairs)
        .await
        .into_iter()
        .map(|created| created.expect("create").status())
        .collect();
    let active = statuses.iter().filter(|s| **s == SessionStatus::Active).count();
    assert_eq!(active, 1, "{statuses:?}");
    assert_eq!(slots_held(&app, "mentee_id", mentee).await, 1);
}

/// Promotion looks past any number of queued sessions that cannot go: a
/// freed system slot reaches the first session that can use it.
#[tokio::test]
async fn a_long_blocked_queue_does_not_hide_a_session_that_can_go() {
    let app = spawn_with(1, limits(1, 2, 100)).await;
    let c = app.coordinator();
    let (_, m_listing) = mentor_with_limit(&app, 100).await;
    let (_, n_listing) = mentor_with_limit(&app, 3).await;
    let (_, p_listing) = mentor_with_limit(&app, 3).await;
    let on_demand_for = async |mentee: Uuid, listing: Uuid| {
        c.create_session(pb::CreateSessionRequest {
            mentee_id: mentee.to_string(),
            listing_id: listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("create")
    };
    // One mentee holds its one slot and queues 60 more sessions behind it.
    let busy = add_mentee(&app).await;
    assert_eq!(on_demand_for(busy, m_listing).await.status(), SessionStatus::Active);
    for _ in 0..60 {
        assert_eq!(on_demand_for(busy, m_listing).await.status(), SessionStatus::Queued);
    }
    // Another takes the system's second slot; a third waits for the system only.
    let second = on_demand_for(add_mentee(&app).await, n_listing).await;
    assert_eq!(second.status(), SessionStatus::Active);
    let last = on_demand_for(add_mentee(&app).await, p_listing).await;
    assert_eq!((last.status(), last.queue_position), (SessionStatus::Queued, 61));
    c.complete_session(&second.id, None).await.expect("complete");
    assert_eq!(get_session(&app, &last.id).await.status(), SessionStatus::Active);
}

/// A session that must wait joins the queue only after every release in
/// flight has committed, and then decides again: a slot freed at that very
/// moment is not missed.
#[tokio::test]
async fn a_start_racing_a_release_sees_the_freed_slot() {
    let app = spawn_with(1, limits(1, 50, 10)).await;
    let (_, listing) = mentor_with_limit(&app, 1).await;
    let holder = scheduled_for(&app, listing, add_mentee(&app).await, 0).await;
    let waiting = scheduled_for(&app, listing, add_mentee(&app).await, 1).await;
    app.coordinator().start_session(&holder.id).await.expect("start");

    // A release in flight: the mentor's slot is given up, not yet committed.
    let mut release = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock_shared(5, 1)")
        .execute(&mut *release)
        .await
        .expect("queue lock, shared");
    sqlx::query(
        "UPDATE sessions SET status = 'COMPLETED', active_since = NULL, ended_at = now(),
                deadline = NULL, deadline_kind = NULL WHERE id = $1::uuid",
    )
    .bind(&holder.id)
    .execute(&mut *release)
    .await
    .expect("complete");
    sqlx::query("UPDATE system_slots SET session_id = NULL WHERE session_id = $1::uuid")
        .bind(&holder.id)
        .execute(&mut *release)
        .await
        .expect("free the system slot");

    let c = app.coordinator();
    let id = waiting.id.clone();
    let start = tokio::spawn(async move { c.start_session(&id).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!start.is_finished(), "the start waits for the release to commit");
    release.commit().await.expect("commit the release");
    let started = start.await.expect("join").expect("start");
    assert_eq!(started.status(), SessionStatus::Active, "the freed slot was not missed");
}

/// ListSessions and BatchGetSessions fill in a whole page's queue places
/// with one statement: each QUEUED session on the page shows its own place
/// and a wait that grows with it, the same as GetSession shows for it
/// alone, and the others none.
#[tokio::test]
async fn a_page_of_queued_sessions_shows_each_ones_place_as_get_session_does() {
    let app = spawn_with(1, limits(1, 2, 100)).await;
    let c = app.coordinator();
    let (_, listing) = mentor_with_limit(&app, 100).await;
    let busy = add_mentee(&app).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let s = c
            .create_session(pb::CreateSessionRequest {
                mentee_id: busy.to_string(),
                listing_id: listing.to_string(),
                ..Default::default()
            })
            .await
            .expect("create");
        ids.push(s.id);
    }
    let page = c
        .list_sessions(pb::ListSessionsRequest {
            page_size: 50,
            mentee_id: busy.to_string(),
            order_by: "created_at asc".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .sessions;
    assert_eq!(
        page.iter().map(|s| &s.id).collect::<Vec<_>>(),
        ids.iter().collect::<Vec<_>>()
    );
    let batch = c
        .call(pb::BatchGetSessionsRequest {
            session_ids: ids.clone(),
        })
        .await
        .expect("batch get")
        .sessions;
    let positions: Vec<i32> = page.iter().map(|s| s.queue_position).collect();
    assert_eq!(
        positions,
        [0, 1, 2, 3, 4, 5, 6, 7],
        "the active one, then the queue in order"
    );
    // Checked apart from the code that fills them in: each place further
    // back waits longer, and only the queued ones have a wait.
    let waits: Vec<i64> = page
        .iter()
        .map(|s| s.estimated_wait.as_ref().map_or(-1, |d| d.seconds))
        .collect();
    assert_eq!(waits[0], -1, "the active session has no wait: {waits:?}");
    assert!(
        waits[1] > 0 && waits.windows(2).skip(1).all(|w| w[0] < w[1]),
        "{waits:?}"
    );
    for (listed, batched) in page.iter().zip(&batch) {
        let alone = get_session(&app, &listed.id).await;
        for shown in [listed, batched] {
            assert_eq!(
                (shown.queue_position, &shown.estimated_wait),
                (alone.queue_position, &alone.estimated_wait),
                "session {}",
                listed.id
            );
        }
    }
}
