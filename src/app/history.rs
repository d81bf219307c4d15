//! History read back (SPEC §4.4): timelines and comparisons, computed from
//! the stored events (`domain::history`).

use uuid::Uuid;

use super::{App, now};
use crate::domain::{
    Result,
    access::Principal,
    history::{self, ConfigDifference, Summary, Timeline},
    model::Session,
};
use crate::store::sessions as store_sessions;

impl App {
    /// A session the caller may see, with the timeline of all its events.
    pub async fn session_timeline(&self, who: &Principal, id: Uuid) -> Result<(Session, Timeline)> {
        let session = self.get_session(who, id).await?;
        let events = store_sessions::events(&mut *self.connection().await?, id, 0, i64::MAX).await?;
        Ok((session, history::timeline(events, now())))
    }

    /// Two sessions side by side. The caller must be allowed to see both:
    /// coordinators and services, or a participant of each.
    pub async fn compare_sessions(
        &self,
        who: &Principal,
        (first, second): (Uuid, Uuid),
    ) -> Result<(Summary, Summary, Vec<ConfigDifference>)> {
        let (a, a_timeline) = self.session_timeline(who, first).await?;
        let (b, b_timeline) = self.session_timeline(who, second).await?;
        let differences = history::config_differences(&a.config, &b.config);
        Ok((
            Summary {
                session: a,
                timeline: a_timeline,
            },
            Summary {
                session: b,
                timeline: b_timeline,
            },
            differences,
        ))
    }
}
