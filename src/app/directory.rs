//! Directory use cases: mentees, mentors, listings.
//!
//! Access (the spec leaves it open; decided here and in docs/ARCHITECTURE.md):
//! coordinators and services manage everything; a mentee may upsert and read
//! itself; a mentor may upsert its own profile and its own listings; every
//! known role may read mentors and listings, and mentors may read mentees.
//! Which roles may call each RPC at all is `access::RPC_CALLERS`, checked
//! before these run; what is left here is ownership.

use uuid::Uuid;

use super::{App, page};
use crate::domain::{
    Error, Reason, Resource, Result,
    access::{Principal, Role},
    command::{ListingInput, MenteeInput, MentorInput},
    model::{Listing, Mentee, Mentor},
    query::{ListingQuery, MentorQuery},
};
use crate::store::directory;
use crate::store::unit::Unit;

impl App {
    pub async fn upsert_mentee(&self, unit: &mut Unit, who: &Principal, m: MenteeInput) -> Result<Mentee> {
        let own = who.has(Role::Mentee) && who.user_id == m.id;
        if !(own || who.acts_globally("UpsertMentee")) {
            return Err(Error::denied("a mentee may only upsert itself"));
        }
        directory::upsert_mentee(unit.tx(), m.id, &m.display_name).await
    }

    pub async fn get_mentee(&self, who: &Principal, id: Uuid) -> Result<Mentee> {
        let own = who.has(Role::Mentee) && who.user_id == id;
        if !own {
            who.require(
                &[Role::Coordinator, Role::Service, Role::Mentor],
                "GetMentee of another mentee",
            )?;
        }
        directory::get_mentee(&mut *self.connection().await?, id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Mentee, id))
    }

    pub async fn upsert_mentor(&self, unit: &mut Unit, who: &Principal, input: MentorInput) -> Result<Mentor> {
        let own = who.has(Role::Mentor) && who.mentor_id == Some(input.id) && who.user_id == input.user_id;
        if !(own || who.acts_globally("UpsertMentor")) {
            return Err(Error::denied("a mentor may only upsert its own profile"));
        }
        let tx = unit.tx();
        directory::upsert_mentor(tx, &input).await?;
        directory::get_mentor(tx, input.id, self.rules.default_mentor_limit)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Mentor, input.id))
    }

    /// A mentor token acts as the mentor profile its `mentor_id` names only
    /// when that profile is its `sub`'s: one whose `user_id` is another
    /// user's is refused (MENTOR_IDENTITY_MISMATCH), so the audit trail never
    /// records a `sub` acting for someone else's profile. A profile that
    /// does not exist yet is no one's: such a token sees and acts on
    /// nothing but the creation of its own profile. The check reads a row,
    /// so it comes after the role check and the request's validity (SPEC §6).
    pub async fn check_mentor_identity(&self, who: &Principal, unit: Option<&mut Unit>) -> Result<()> {
        let Some(mentor_id) = who.mentor_id.filter(|_| who.has(Role::Mentor)) else {
            return Ok(());
        };
        let owner = match unit {
            Some(unit) => directory::mentor_user(&mut **unit.tx(), mentor_id).await?,
            None => directory::mentor_user(&mut *self.connection().await?, mentor_id).await?,
        };
        match owner {
            Some(owner) if owner != who.user_id => Err(Error::PermissionDenied {
                reason: Reason::MentorIdentityMismatch,
                message: format!(
                    "this token's mentor_id {mentor_id} names a mentor profile that belongs to another user; \
                     a mentor token's sub must be its profile's user_id"
                ),
            }),
            _ => Ok(()),
        }
    }

    pub async fn get_mentor(&self, id: Uuid) -> Result<Mentor> {
        directory::get_mentor(&mut *self.connection().await?, id, self.rules.default_mentor_limit)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Mentor, id))
    }

    pub async fn list_mentors(&self, q: MentorQuery) -> Result<(Vec<Mentor>, String)> {
        let filter = ("mentors", q.skill_area.as_deref(), q.accepting_only);
        page::keyset(
            &filter,
            &q.page,
            |m: &Mentor| m.id,
            async |after, limit| {
                let limits = self.rules.default_mentor_limit;
                let (skill, accepting) = (q.skill_area.as_deref(), q.accepting_only);
                directory::list_mentors(&mut *self.connection().await?, skill, accepting, after, limit, limits).await
            },
        )
        .await
    }

    pub async fn upsert_listing(&self, unit: &mut Unit, who: &Principal, listing: ListingInput) -> Result<Listing> {
        let tx = unit.tx();
        if !who.acts_globally("UpsertListing") {
            let own_mentor = who.has(Role::Mentor) && listing.mentor_id.is_some() && listing.mentor_id == who.mentor_id;
            let existing = directory::get_listing(&mut **tx, listing.id).await?;
            let takes_over = existing.is_some_and(|e| e.mentor_id != who.mentor_id);
            if !own_mentor || takes_over {
                return Err(Error::denied("a mentor may only upsert its own listings"));
            }
        }
        if let Some(mentor_id) = listing.mentor_id
            && !directory::mentor_exists(&mut **tx, mentor_id).await?
        {
            return Err(Error::not_found(Resource::Mentor, mentor_id));
        }
        directory::upsert_listing(tx, &listing).await
    }

    pub async fn get_listing(&self, id: Uuid) -> Result<Listing> {
        directory::get_listing(&mut *self.connection().await?, id)
            .await?
            .ok_or_else(|| Error::not_found(Resource::Listing, id))
    }

    pub async fn list_listings(&self, q: ListingQuery) -> Result<(Vec<Listing>, String)> {
        let filter = ("listings", q.mentor_id, q.skill_area.as_deref());
        page::keyset(
            &filter,
            &q.page,
            |l: &Listing| l.id,
            async |after, limit| {
                let skill = q.skill_area.as_deref();
                directory::list_listings(&mut *self.connection().await?, q.mentor_id, skill, after, limit).await
            },
        )
        .await
    }
}
