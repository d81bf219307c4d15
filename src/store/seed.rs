//! Bulk data for history benchmarks and the export test: mentors, mentees,
//! listings, bookings, sessions in every status with their events, booking
//! events and assignment rows, written with set-based SQL in batches.
//!
//! Seeded rows satisfy every constraint of the schema, but they bypass
//! admission: ACTIVE and PAUSED sessions hold no system slot, so a seeded
//! database is for reading (lists, export, retention), not for capacity.
//! Every run adds new rows (ids derive from a random tag).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Error, config::SessionConfig};

/// How much to seed.
#[derive(Debug, Clone, Copy)]
pub struct Seed {
    pub sessions: i64,
    pub mentors: i64,
    pub mentees: i64,
    /// Sessions per transaction.
    pub batch: i64,
}

/// How many seeded sessions are QUEUED (the first ones).
const QUEUED: i64 = 100;

/// Seeds `seed.sessions` sessions; returns the run's tag. Idempotent per
/// tag is not a goal: call it on a database meant for it.
pub async fn seed(pool: &PgPool, seed: Seed, now: DateTime<Utc>) -> Result<String, Error> {
    let tag = Uuid::new_v4().simple().to_string();
    let config = serde_json::to_value(SessionConfig::default()).map_err(|e| Error::Internal(e.into()))?;
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO mentors (id, user_id, display_name, skill_areas, max_concurrent_sessions, timezone)
         SELECT md5($1 || 'mentor' || n)::uuid, md5($1 || 'user' || n)::uuid, 'Mentor ' || n,
                ARRAY['rust', 'sql'], 3, 'UTC'
         FROM generate_series(0, $2 - 1) n",
    )
    .bind(&tag)
    .bind(seed.mentors)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO listings (id, mentor_id, title, skill_area)
         SELECT md5($1 || 'listing' || n)::uuid, md5($1 || 'mentor' || n)::uuid, 'Listing ' || n, 'rust'
         FROM generate_series(0, $2 - 1) n",
    )
    .bind(&tag)
    .bind(seed.mentors)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO mentees (id, display_name)
         SELECT md5($1 || 'mentee' || n)::uuid, 'Mentee ' || n FROM generate_series(0, $2 - 1) n",
    )
    .bind(&tag)
    .bind(seed.mentees)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let mut from = 0;
    while from < seed.sessions {
        let to = (from + seed.batch).min(seed.sessions);
        seed_batch(pool, &tag, seed, from, to, now, &config).await?;
        from = to;
    }
    Ok(tag)
}

/// Sessions `from..to`. Session n: mentor n % mentors, mentee n % mentees,
/// start_time 30 minutes after session n - 1's (no two overlap), created in
/// threes (three sessions share each `created_at`, one second apart, so
/// keyset pages meet ties), the last ones an hour before `now`.
async fn seed_batch(
    pool: &PgPool,
    tag: &str,
    seed: Seed,
    from: i64,
    to: i64,
    now: DateTime<Utc>,
    config: &serde_json::Value,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // A temporary table of this batch's sessions, so each table below is one INSERT … SELECT.
    // Statuses are drawn by a hash of n (so every mentor and mentee has a mix):
    // 75% COMPLETED, 10% CANCELLED, 5% FAILED, 5% SCHEDULED, 3% ACTIVE,
    // 2% PAUSED; the first `QUEUED` sessions are QUEUED, as a real queue is short.
    sqlx::query(
        "CREATE TEMPORARY TABLE seed_batch ON COMMIT DROP AS
         SELECT n,
                md5($1 || 'session' || n)::uuid AS id,
                md5($1 || 'booking' || n)::uuid AS booking_id,
                md5($1 || 'listing' || (n % $2))::uuid AS listing_id,
                md5($1 || 'mentor' || (n % $2))::uuid AS mentor_id,
                md5($1 || 'mentee' || (n % $3))::uuid AS mentee_id,
                $4::timestamptz - (($6 - n) / 3) * interval '1 second' - interval '1 hour' AS created_at,
                $4::timestamptz + (n - $6 / 2) * interval '30 minutes' AS start_time,
                CASE WHEN n < $8 THEN 'QUEUED'
                     WHEN bucket < 50 THEN 'SCHEDULED'
                     WHEN bucket < 80 THEN 'ACTIVE'
                     WHEN bucket < 100 THEN 'PAUSED'
                     WHEN bucket < 150 THEN 'FAILED'
                     WHEN bucket < 250 THEN 'CANCELLED'
                     ELSE 'COMPLETED' END AS status
         FROM generate_series($5::bigint, $7::bigint - 1) n,
              LATERAL (SELECT (hashint8(n)::bigint + 2147483648) % 1000 AS bucket) h",
    )
    .bind(tag)
    .bind(seed.mentors)
    .bind(seed.mentees)
    .bind(now)
    .bind(from)
    .bind(seed.sessions)
    .bind(to)
    .bind(QUEUED)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO bookings (id, listing_id, mentor_id, mentee_id, start_time, end_time, status, origin,
                               created_at, updated_at)
         SELECT booking_id, listing_id, mentor_id, mentee_id, start_time, start_time + interval '25 minutes',
                'ACCEPTED', 'REQUESTED', created_at, created_at
         FROM seed_batch",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO booking_events (booking_id, from_status, to_status, actor_kind, actor_id, occurred_at)
         SELECT booking_id, NULL, 'DRAFT', 'MENTEE', mentee_id::text, created_at FROM seed_batch
         UNION ALL
         SELECT booking_id, 'DRAFT', 'ACCEPTED', 'MENTOR', mentor_id::text, created_at FROM seed_batch",
    )
    .execute(&mut *tx)
    .await?;
    // Each status's events after CREATED: (seq, from, to), one step every 10 minutes.
    sqlx::query(
        "CREATE TEMPORARY TABLE seed_steps ON COMMIT DROP AS
         SELECT * FROM (VALUES
             ('QUEUED', 2, 'SCHEDULED', 'QUEUED'),
             ('ACTIVE', 2, 'SCHEDULED', 'ACTIVE'),
             ('PAUSED', 2, 'SCHEDULED', 'ACTIVE'), ('PAUSED', 3, 'ACTIVE', 'PAUSED'),
             ('COMPLETED', 2, 'SCHEDULED', 'ACTIVE'), ('COMPLETED', 3, 'ACTIVE', 'COMPLETED'),
             ('FAILED', 2, 'SCHEDULED', 'ACTIVE'), ('FAILED', 3, 'ACTIVE', 'FAILED'),
             ('CANCELLED', 2, 'SCHEDULED', 'CANCELLED')
         ) AS s(status, seq, from_status, to_status)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO sessions (id, booking_id, listing_id, mentor_id, mentee_id, start_time, end_time, status,
                               config, queued_at, started_at, ended_at, active_banked_us, active_since,
                               paused_at, report, failure, cancel_reason, last_seq, created_at, updated_at)
         SELECT b.id, b.booking_id, b.listing_id, b.mentor_id, b.mentee_id, b.start_time,
                b.start_time + interval '25 minutes', b.status, $1,
                CASE WHEN b.status = 'QUEUED' THEN step END,
                CASE WHEN b.status IN ('ACTIVE', 'PAUSED', 'COMPLETED', 'FAILED') THEN step END,
                CASE WHEN b.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN last END,
                CASE WHEN b.status IN ('PAUSED', 'COMPLETED', 'FAILED') THEN 600000000 ELSE 0 END,
                CASE WHEN b.status = 'ACTIVE' THEN step END,
                CASE WHEN b.status = 'PAUSED' THEN last END,
                CASE WHEN b.status = 'COMPLETED'
                     THEN '{\"summary\": \"seeded\", \"overall_score\": 80, \"data\": {}}'::jsonb END,
                CASE WHEN b.status = 'FAILED'
                     THEN '{\"error_message\": \"seeded\", \"details\": {}}'::jsonb END,
                CASE WHEN b.status = 'CANCELLED' THEN 'seeded' ELSE '' END,
                1 + (SELECT count(*) FROM seed_steps s WHERE s.status = b.status),
                b.created_at, last
         FROM seed_batch b,
              LATERAL (SELECT b.created_at + interval '10 minutes' AS step,
                              b.created_at + interval '10 minutes'
                                  * (SELECT count(*) FROM seed_steps s WHERE s.status = b.status) AS last) t",
    )
    .bind(config)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, type, from_status, to_status, actor_kind, actor_id,
                                     details, occurred_at)
         SELECT id, 1, 'CREATED', NULL, 'SCHEDULED', 'MENTOR', mentor_id::text,
                jsonb_build_object('booking_id', booking_id, 'origin', 'REQUESTED'), created_at
         FROM seed_batch
         UNION ALL
         SELECT b.id, s.seq, 'STATUS_CHANGED', s.from_status, s.to_status, 'COORDINATOR', '', '{}',
                b.created_at + (s.seq - 1) * interval '10 minutes'
         FROM seed_batch b JOIN seed_steps s ON s.status = b.status",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO mentor_assignments (session_id, mentor_id, strategy, actor_kind, assigned_at)
         SELECT id, mentor_id, 'booking', 'SYSTEM', created_at FROM seed_batch",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
