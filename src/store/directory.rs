//! Mentees, mentors (with availability) and listings.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, QueryBuilder};
use uuid::Uuid;

use super::{Tx, corrupt};
use crate::domain::{
    Error,
    availability::Window,
    command::{ListingInput, MentorInput},
    model::{Listing, Mentee, Mentor},
};

pub(crate) async fn upsert_mentee(tx: &mut Tx, id: Uuid, display_name: &str) -> Result<Mentee, Error> {
    sqlx::query_as!(
        Mentee,
        r#"INSERT INTO mentees (id, display_name) VALUES ($1, $2)
           ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name, updated_at = now()
           RETURNING id, display_name, created_at, updated_at"#,
        id,
        display_name
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(Error::from)
}

pub(crate) async fn get_mentee(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Mentee>, Error> {
    sqlx::query_as!(
        Mentee,
        "SELECT id, display_name, created_at, updated_at FROM mentees WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
    .map_err(Error::from)
}

#[derive(sqlx::FromRow)]
struct MentorRow {
    id: Uuid,
    user_id: Uuid,
    display_name: String,
    skill_areas: Vec<String>,
    max_concurrent_sessions: Option<i32>,
    accepting_sessions: bool,
    timezone: String,
    active_session_count: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl MentorRow {
    fn into_mentor(self, availability: Vec<Window>, default_limit: i32) -> Mentor {
        Mentor {
            id: self.id,
            user_id: self.user_id,
            display_name: self.display_name,
            skill_areas: self.skill_areas,
            max_concurrent_sessions: self.max_concurrent_sessions.unwrap_or(default_limit),
            accepting_sessions: self.accepting_sessions,
            timezone: self.timezone,
            availability,
            active_session_count: self.active_session_count.unwrap_or(0),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Creates or replaces a mentor and its availability windows.
pub(crate) async fn upsert_mentor(tx: &mut Tx, m: &MentorInput) -> Result<(), Error> {
    sqlx::query!(
        r#"INSERT INTO mentors (id, user_id, display_name, skill_areas, max_concurrent_sessions,
                                accepting_sessions, timezone)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET
               user_id = EXCLUDED.user_id, display_name = EXCLUDED.display_name,
               skill_areas = EXCLUDED.skill_areas,
               max_concurrent_sessions = EXCLUDED.max_concurrent_sessions,
               accepting_sessions = EXCLUDED.accepting_sessions, timezone = EXCLUDED.timezone,
               updated_at = now()"#,
        m.id,
        m.user_id,
        m.display_name,
        &m.skill_areas,
        m.max_concurrent_sessions,
        m.accepting_sessions,
        m.timezone
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!("DELETE FROM mentor_availability WHERE mentor_id = $1", m.id)
        .execute(&mut **tx)
        .await?;
    let days: Vec<i16> = m.availability.iter().map(|w| i16::from(w.day_of_week)).collect();
    let starts: Vec<i16> = m.availability.iter().map(|w| w.start_minute as i16).collect();
    let ends: Vec<i16> = m.availability.iter().map(|w| w.end_minute as i16).collect();
    sqlx::query!(
        r#"INSERT INTO mentor_availability (mentor_id, day_of_week, start_minute, end_minute)
           SELECT $1, * FROM UNNEST($2::smallint[], $3::smallint[], $4::smallint[])"#,
        m.id,
        &days,
        &starts,
        &ends
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A mentor with its windows and active session count.
pub(crate) async fn get_mentor(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    default_limit: i32,
) -> Result<Option<Mentor>, Error> {
    let row = sqlx::query_as!(
        MentorRow,
        r#"SELECT m.id, m.user_id, m.display_name, m.skill_areas, m.max_concurrent_sessions,
                  m.accepting_sessions, m.timezone, m.created_at, m.updated_at,
                  (SELECT count(*) FROM sessions s
                    WHERE s.mentor_id = m.id AND s.status IN ('ACTIVE', 'PAUSED')) AS active_session_count
           FROM mentors m WHERE m.id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let windows = availability(conn, id).await?;
    Ok(Some(row.into_mentor(windows, default_limit)))
}

/// A mentor's windows, for booking checks.
pub(crate) async fn availability(db: impl sqlx::PgExecutor<'_>, mentor_id: Uuid) -> Result<Vec<Window>, Error> {
    Ok(availability_of(db, &[mentor_id])
        .await?
        .remove(&mentor_id)
        .unwrap_or_default())
}

/// The windows of several mentors in one query, by mentor id.
pub(crate) async fn availability_of(
    db: impl sqlx::PgExecutor<'_>,
    mentor_ids: &[Uuid],
) -> Result<std::collections::HashMap<Uuid, Vec<Window>>, Error> {
    let rows = sqlx::query!(
        r#"SELECT mentor_id, day_of_week, start_minute, end_minute FROM mentor_availability
           WHERE mentor_id = ANY($1) ORDER BY mentor_id, day_of_week, start_minute"#,
        mentor_ids
    )
    .fetch_all(db)
    .await?;
    let mut windows: std::collections::HashMap<Uuid, Vec<Window>> = std::collections::HashMap::new();
    for r in rows {
        windows.entry(r.mentor_id).or_default().push(Window {
            day_of_week: u8::try_from(r.day_of_week).map_err(|_| corrupt("day_of_week"))?,
            start_minute: u16::try_from(r.start_minute).map_err(|_| corrupt("start_minute"))?,
            end_minute: u16::try_from(r.end_minute).map_err(|_| corrupt("end_minute"))?,
        });
    }
    Ok(windows)
}

/// Keyset page of mentors ordered by id.
pub(crate) async fn list_mentors(
    db: &mut sqlx::PgConnection,
    skill_area: Option<&str>,
    accepting_only: bool,
    after: Option<Uuid>,
    limit: i64,
    default_limit: i32,
) -> Result<Vec<Mentor>, Error> {
    let mut q = QueryBuilder::new(
        "SELECT m.id, m.user_id, m.display_name, m.skill_areas, m.max_concurrent_sessions, \
         m.accepting_sessions, m.timezone, m.created_at, m.updated_at, \
         (SELECT count(*) FROM sessions s WHERE s.mentor_id = m.id AND s.status IN ('ACTIVE', 'PAUSED')) \
         AS active_session_count FROM mentors m WHERE true",
    );
    if let Some(skill) = skill_area {
        q.push(" AND m.skill_areas @> ARRAY[")
            .push_bind(skill.to_owned())
            .push("]");
    }
    if accepting_only {
        q.push(" AND m.accepting_sessions");
    }
    if let Some(after) = after {
        q.push(" AND m.id > ").push_bind(after);
    }
    q.push(" ORDER BY m.id LIMIT ").push_bind(limit);
    let rows: Vec<MentorRow> = q.build_query_as().fetch_all(&mut *db).await?;
    // One query for every listed mentor's windows, not one per mentor.
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut windows = availability_of(db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let own = windows.remove(&row.id).unwrap_or_default();
            row.into_mentor(own, default_limit)
        })
        .collect())
}

pub(crate) async fn upsert_listing(tx: &mut Tx, l: &ListingInput) -> Result<Listing, Error> {
    sqlx::query_as!(
        Listing,
        r#"INSERT INTO listings (id, mentor_id, title, skill_area) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET mentor_id = EXCLUDED.mentor_id, title = EXCLUDED.title,
               skill_area = EXCLUDED.skill_area, updated_at = now()
           RETURNING id, mentor_id, title, skill_area, created_at, updated_at"#,
        l.id,
        l.mentor_id,
        l.title,
        l.skill_area
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(Error::from)
}

pub(crate) async fn get_listing(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Listing>, Error> {
    sqlx::query_as!(
        Listing,
        "SELECT id, mentor_id, title, skill_area, created_at, updated_at FROM listings WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
    .map_err(Error::from)
}

pub(crate) async fn mentor_exists(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM mentors WHERE id = $1) AS "exists!""#,
        id
    )
    .fetch_one(db)
    .await
    .map_err(Error::from)
}

/// The user a mentor profile belongs to; None when there is no such profile.
pub(crate) async fn mentor_user(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar("SELECT user_id FROM mentors WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?)
}

/// Whether a mentor accepts new bookings and assignments; None when unknown.
pub(crate) async fn mentor_accepting(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<bool>, Error> {
    Ok(
        sqlx::query_scalar!("SELECT accepting_sessions FROM mentors WHERE id = $1", id)
            .fetch_optional(db)
            .await?,
    )
}

/// Keyset page of listings ordered by id.
pub(crate) async fn list_listings(
    db: impl sqlx::PgExecutor<'_>,
    mentor_id: Option<Uuid>,
    skill_area: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Listing>, Error> {
    let mut q =
        QueryBuilder::new("SELECT id, mentor_id, title, skill_area, created_at, updated_at FROM listings WHERE true");
    if let Some(mentor) = mentor_id {
        q.push(" AND mentor_id = ").push_bind(mentor);
    }
    if let Some(skill) = skill_area {
        q.push(" AND skill_area = ").push_bind(skill.to_owned());
    }
    if let Some(after) = after {
        q.push(" AND id > ").push_bind(after);
    }
    q.push(" ORDER BY id LIMIT ").push_bind(limit);
    q.build_query_as::<ListingRow>()
        .fetch_all(db)
        .await
        .map_err(Error::from)
        .map(|rows| rows.into_iter().map(Into::into).collect())
}

#[derive(sqlx::FromRow)]
struct ListingRow {
    id: Uuid,
    mentor_id: Option<Uuid>,
    title: String,
    skill_area: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<ListingRow> for Listing {
    fn from(r: ListingRow) -> Self {
        Listing {
            id: r.id,
            mentor_id: r.mentor_id,
            title: r.title,
            skill_area: r.skill_area,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}
