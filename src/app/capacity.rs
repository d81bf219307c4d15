//! Capacity use cases (SPEC §4.3): admission, promotion, and where a queued
//! session stands. The rules are `domain::capacity`; the locks and counts
//! that keep them exact across replicas are `store::capacity`.

use std::collections::HashSet;

use uuid::Uuid;

use super::App;
use crate::domain::{
    Result,
    access::Actor,
    capacity::{self, Admission, Ahead, Limit, Usage},
    clocks,
    model::{EventType, Session},
    session::{self, Command, Requester, SessionStatus},
};
use crate::store::{
    Tx, capacity as store_capacity,
    sessions::{self as store_sessions, EventInput},
    unit::Unit,
};

/// What GetQueueStatus reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatusView {
    pub total_queued: i64,
    pub active_session_count: i64,
    pub max_concurrent_sessions: i64,
    pub estimated_wait: chrono::Duration,
    pub p95_queue_wait: Option<chrono::Duration>,
}

impl App {
    /// Admission of a session about to become ACTIVE (StartSession,
    /// CreateSession): ACTIVE when every limit allows it (its system
    /// concurrency slot is then taken), QUEUED while the queue has room,
    /// RESOURCE_EXHAUSTED (QUEUE_FULL) otherwise.
    ///
    /// A session that must wait takes the queue's lock, which waits for every
    /// release in flight (releases hold it shared), and then decides again:
    /// either it sees what they freed, or they see it in the queue. So a
    /// release and a session joining the queue never miss each other.
    pub(crate) async fn admit(&self, unit: &mut Unit, s: &Session) -> Result<SessionStatus> {
        let tx = unit.tx();
        store_capacity::lock_participants(tx, s.mentor_id, s.mentee_id).await?;
        if self.take_slot(tx, s.id, s.mentor_id, s.mentee_id).await? == Admission::Admit {
            return Ok(SessionStatus::Active);
        }
        let queued = store_capacity::lock_queue(tx).await?;
        if self.take_slot(tx, s.id, s.mentor_id, s.mentee_id).await? == Admission::Admit {
            return Ok(SessionStatus::Active);
        }
        if queued >= self.rules.limits.queue {
            return Err(capacity::queue_full(queued, self.rules.limits));
        }
        Ok(SessionStatus::Queued)
    }

    /// Counts what the mentee and the mentor hold and, when they allow it,
    /// takes a system concurrency slot for the session. The caller holds the
    /// mentor's and the mentee's locks.
    async fn take_slot(&self, tx: &mut Tx, session_id: Uuid, mentor_id: Uuid, mentee_id: Uuid) -> Result<Admission> {
        let holding = store_capacity::holding(tx, mentor_id, mentee_id).await?;
        let mut usage = Usage {
            mentee_holding: holding.mentee,
            mentor_holding: holding.mentor,
            mentor_limit: i64::from(holding.mentor_limit.unwrap_or(self.rules.default_mentor_limit)),
            system_free: true,
        };
        let limits = self.rules.limits;
        if capacity::admit(usage, limits) == Admission::Admit {
            usage.system_free = store_capacity::claim_system_slot(tx, session_id, limits.system).await?;
        }
        Ok(capacity::admit(usage, limits))
    }

    /// A concurrency slot was given up (a session left ACTIVE/PAUSED, or
    /// moved to another mentor): the system slot of `freed`, if any, goes
    /// back to the pool, and the queue moves up in the same transaction.
    pub(crate) async fn release(&self, unit: &mut Unit, freed: Option<Uuid>) -> Result<()> {
        let tx = unit.tx();
        store_capacity::lock_queue_shared(tx).await?;
        if let Some(session_id) = freed {
            store_capacity::release_system_slot(tx, session_id).await?;
        }
        self.promote(unit).await?;
        Ok(())
    }

    /// Promotes, oldest first, every queued session that can be admitted now:
    /// one whose mentor or mentee is still full does not hold back one behind
    /// it that can go. The whole queue is looked at (its length is bounded),
    /// skipping the mentors and mentees found full. Sessions another
    /// transaction is working on are skipped without waiting, so promotion
    /// never deadlocks: that transaction (an admission under the mentor's
    /// lock decides again after the queue lock) or the sweeper's pass takes
    /// them. Returns how many were promoted. It is the last thing a
    /// transaction does: it leaves locks on the sessions it looked at.
    pub(crate) async fn promote(&self, unit: &mut Unit) -> Result<usize> {
        let (mut full_mentors, mut full_mentees) = (HashSet::new(), HashSet::new());
        let mut promoted = 0;
        for q in store_capacity::queue_head(unit.tx(), i64::MAX).await? {
            if full_mentors.contains(&q.mentor_id) || full_mentees.contains(&q.mentee_id) {
                continue;
            }
            let tx = unit.tx();
            // The locked row is what counts: a reassignment may have moved it since the queue was read.
            let Some(before) = store_sessions::lock_queued_unless_busy(tx, q.id).await? else {
                continue;
            };
            if !store_capacity::try_lock_participants(tx, before.mentor_id, before.mentee_id).await? {
                continue;
            }
            match self
                .take_slot(tx, before.id, before.mentor_id, before.mentee_id)
                .await?
            {
                Admission::Admit => {}
                Admission::Wait(Limit::Mentor) => {
                    full_mentors.insert(before.mentor_id);
                    continue;
                }
                Admission::Wait(Limit::Mentee) => {
                    full_mentees.insert(before.mentee_id);
                    continue;
                }
                // No system slot is free: nobody behind can go either.
                Admission::Wait(_) => break,
            }
            let decision = session::decide(
                before.id,
                before.status,
                Command::Promote,
                Requester::System,
                before.participants(),
            )?;
            let mut s = before.clone();
            clocks::enter(&mut s, decision.to, super::now());
            let event = EventInput {
                event_type: EventType::StatusChanged,
                actor: &Actor::system(),
                reason: "",
                details: serde_json::json!({ "command": Command::Promote.name() }),
            };
            unit.save_session(&before, &s, event).await?;
            promoted += 1;
        }
        Ok(promoted)
    }

    /// A promotion pass in a transaction of its own: the backstop for a
    /// release that raced with a session joining the queue.
    pub async fn promote_waiting(&self) -> Result<usize> {
        let mut unit = self.unit().await?;
        store_capacity::lock_queue_shared(unit.tx()).await?;
        let promoted = self.promote(&mut unit).await?;
        self.commit(unit).await?;
        Ok(promoted)
    }

    /// GetQueueStatus: the queue's length, the slots held and their limit,
    /// the wait of a session joining the back of the whole queue now, and
    /// the p95 queue wait over the last 24 hours.
    pub async fn queue_status(&self) -> Result<QueueStatusView> {
        let mut conn = self.connection().await?;
        let status = store_capacity::queue_status(&mut *conn).await?;
        let typical = store_capacity::typical_active_time(&mut *conn)
            .await?
            .unwrap_or_else(|| chrono::Duration::seconds(self.rules.default_session_config.max_duration_secs));
        let limits = self.rules.limits;
        let estimated_wait = if status.holding < limits.system && status.queued == 0 {
            chrono::Duration::zero()
        } else {
            capacity::estimated_wait(status.queued + 1, limits.system, typical)
        };
        Ok(QueueStatusView {
            total_queued: status.queued,
            active_session_count: status.holding,
            max_concurrent_sessions: limits.system,
            estimated_wait,
            p95_queue_wait: status
                .p95_wait_secs
                .map(|s| chrono::Duration::milliseconds((s * 1000.0).round() as i64)),
        })
    }

    /// Fills in where a QUEUED session stands (computed on read, never stored).
    pub(crate) async fn with_queue_info(&self, db: &mut sqlx::PgConnection, s: Session) -> Result<Session> {
        let mut one = self.with_queue_infos(db, vec![s]).await?;
        one.pop()
            .ok_or_else(|| crate::domain::Error::Internal(anyhow::anyhow!("a session went missing")))
    }

    /// [`App::with_queue_info`] for a page: one statement whatever the
    /// number of QUEUED sessions on it, none when there is none.
    pub(crate) async fn with_queue_infos(
        &self,
        db: &mut sqlx::PgConnection,
        mut page: Vec<Session>,
    ) -> Result<Vec<Session>> {
        let queued: Vec<store_capacity::InQueue> = page
            .iter()
            .filter(|s| s.status == SessionStatus::Queued)
            .filter_map(|s| {
                Some(store_capacity::InQueue {
                    session_id: s.id,
                    mentor_id: s.mentor_id,
                    mentee_id: s.mentee_id,
                    queued_at: s.queued_at?,
                })
            })
            .collect();
        if queued.is_empty() {
            return Ok(page);
        }
        let limits = self.rules.limits;
        let (views, typical) = store_capacity::queue_views(&mut *db, &queued, limits.system).await?;
        for s in page.iter_mut() {
            let Some(view) = views.get(&s.id) else { continue };
            let typical = typical.unwrap_or_else(|| chrono::Duration::seconds(s.config.max_duration_secs));
            let usage = Usage {
                mentee_holding: view.holding.mentee,
                mentor_holding: view.holding.mentor,
                mentor_limit: i64::from(view.holding.mentor_limit.unwrap_or(self.rules.default_mentor_limit)),
                system_free: view.system_free,
            };
            let ahead = Ahead {
                mentor: view.ahead_mentor,
                mentee: view.ahead_mentee,
                all: view.ahead_all,
            };
            s.queue = Some(capacity::standing(usage, ahead, limits, typical));
        }
        Ok(page)
    }
}
