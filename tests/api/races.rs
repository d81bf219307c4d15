//! Racing requests, in parallel, on two replicas of one database.

use chrono::Duration;
use mentorship::grpc::pb;
use tonic::Code;

use crate::helpers::*;

/// Rounds per race: small by default, the full count with MENTORSHIP_TEST_SCALE=full.
fn rounds() -> i64 {
    scale(15, 200) as i64
}

#[tokio::test]
async fn overlapping_bookings_accepted_in_parallel_on_two_replicas_exactly_one_wins() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    let other = add_mentee(&app).await;
    for round in 0..rounds() {
        let t = monday_at(6) + Duration::days(round);
        let a = draft(&app, &w, t, t + Duration::hours(1)).await;
        let b = app
            .bookings()
            .create_booking(authed(
                &coordinator(),
                booking_request(w.listing, other, t + Duration::minutes(30), t + Duration::minutes(90)),
            ))
            .await
            .expect("second draft")
            .into_inner()
            .booking
            .expect("booking");
        let accept = |replica: usize, id: String| {
            let mut client = app.replicas[replica].bookings.clone();
            let req = authed(
                &w.mentor_token(),
                pb::AcceptBookingRequest {
                    booking_id: id,
                    request_id: String::new(),
                },
            );
            tokio::spawn(async move { client.accept_booking(req).await })
        };
        let (ra, rb) = tokio::join!(accept(0, a.id.clone()), accept(1, b.id.clone()));
        let results = [ra.expect("join"), rb.expect("join")];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: exactly one accept succeeds: {results:?}");
        let loser = results.into_iter().find(|r| r.is_err()).expect("a loser");
        assert_status(loser, Code::FailedPrecondition, "BOOKING_OVERLAP");
    }
    let (accepted, sessions, drafts): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM bookings WHERE status = 'ACCEPTED'),
                (SELECT count(*) FROM sessions),
                (SELECT count(*) FROM bookings WHERE status = 'DRAFT')",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!((accepted, sessions, drafts), (rounds(), rounds(), rounds()));
}

#[tokio::test]
async fn one_booking_accepted_twice_in_parallel_makes_one_session() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    for round in 0..rounds() {
        let t = monday_at(6) + Duration::days(round);
        let b = draft(&app, &w, t, t + Duration::hours(1)).await;
        let accept = |replica: usize| {
            let mut client = app.replicas[replica].bookings.clone();
            let req = authed(
                &coordinator(),
                pb::AcceptBookingRequest {
                    booking_id: b.id.clone(),
                    request_id: String::new(),
                },
            );
            tokio::spawn(async move { client.accept_booking(req).await })
        };
        let (r0, r1) = tokio::join!(accept(0), accept(1));
        let results = [r0.expect("join"), r1.expect("join")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {results:?}"
        );
        let loser = results.into_iter().find(|r| r.is_err()).expect("a loser");
        assert_status(loser, Code::FailedPrecondition, "BOOKING_NOT_DRAFT");
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE booking_id = $1::uuid")
            .bind(&b.id)
            .fetch_one(&app.pool)
            .await
            .expect("count");
        assert_eq!(sessions, 1);
    }
}
