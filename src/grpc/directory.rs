//! DirectoryService handlers.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Api, auth::principal, begin_or_replay, incomplete, pb};
use crate::domain::{
    Violations,
    availability::{self, Window},
    input::{self, MAX_NAME_LEN},
    model::{Listing, MentorInput},
};

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for Api {
    async fn upsert_mentee(
        &self,
        req: Request<pb::UpsertMenteeRequest>,
    ) -> Result<Response<pb::UpsertMenteeResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let m = r.mentee.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v.check(input::id("mentee.id", &m.id));
        let name = v.check(input::required_text(
            "mentee.display_name",
            &m.display_name,
            MAX_NAME_LEN,
        ));
        v.finish()?;
        let (Some(id), Some(name)) = (id, name) else {
            return Err(incomplete());
        };
        let mut m = begin_or_replay!(self, &who, "UpsertMentee", r);
        let mentee = self.app.upsert_mentee(&mut m.unit, &who, id, &name).await?;
        m.finish(pb::UpsertMenteeResponse {
            mentee: Some(mentee.into()),
        })
        .await
    }

    async fn get_mentee(&self, req: Request<pb::GetMenteeRequest>) -> Result<Response<pb::GetMenteeResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("mentee_id", &req.get_ref().mentee_id)?;
        let mentee = self.app.get_mentee(&who, id).await?;
        Ok(Response::new(pb::GetMenteeResponse {
            mentee: Some(mentee.into()),
        }))
    }

    async fn upsert_mentor(
        &self,
        req: Request<pb::UpsertMentorRequest>,
    ) -> Result<Response<pb::UpsertMentorResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let m = r.mentor.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v
            .check(input::optional_id("mentor.id", &m.id))
            .map(|id| id.unwrap_or_else(Uuid::now_v7));
        let user_id = v.check(input::id("mentor.user_id", &m.user_id));
        let name = v.check(input::required_text(
            "mentor.display_name",
            &m.display_name,
            MAX_NAME_LEN,
        ));
        let mut skills = Vec::new();
        for (i, s) in m.skill_areas.iter().enumerate() {
            if let Some(s) = v.check(input::label(&format!("mentor.skill_areas[{i}]"), s)) {
                skills.push(s);
            }
        }
        if m.skill_areas.len() > 50 {
            v.add("mentor.skill_areas", "at most 50 skill areas");
        }
        let limit = match m.max_concurrent_sessions {
            0 => None,
            n if (1..=1000).contains(&n) => Some(n),
            _ => {
                v.add(
                    "mentor.max_concurrent_sessions",
                    "must be between 1 and 1000, or 0 for the default",
                );
                None
            }
        };
        v.check(availability::parse_timezone("mentor.timezone", &m.timezone));
        let mut windows = Vec::new();
        for (i, w) in m.availability.iter().enumerate() {
            let field = format!("mentor.availability[{i}]");
            if let Some(w) = v.check(Window::parse(
                &field,
                w.day_of_week,
                &w.start_local_time,
                &w.end_local_time,
            )) {
                windows.push(w);
            }
        }
        if m.availability.len() > 100 {
            v.add("mentor.availability", "at most 100 windows");
        }
        for (i, a) in windows.iter().enumerate() {
            if windows[..i].iter().any(|b| {
                a.day_of_week == b.day_of_week && a.start_minute < b.end_minute && b.start_minute < a.end_minute
            }) {
                v.add(
                    format!("mentor.availability[{i}]"),
                    "overlaps another window of the same day",
                );
            }
        }
        v.finish()?;
        let (Some(id), Some(user_id), Some(display_name)) = (id, user_id, name) else {
            return Err(incomplete());
        };
        let input = MentorInput {
            id,
            user_id,
            display_name,
            skill_areas: skills,
            max_concurrent_sessions: limit,
            accepting_sessions: m.accepting_sessions,
            timezone: m.timezone,
            availability: windows,
        };
        let mut m = begin_or_replay!(self, &who, "UpsertMentor", r);
        let mentor = self.app.upsert_mentor(&mut m.unit, &who, input).await?;
        m.finish(pb::UpsertMentorResponse {
            mentor: Some(mentor.into()),
        })
        .await
    }

    async fn get_mentor(&self, req: Request<pb::GetMentorRequest>) -> Result<Response<pb::GetMentorResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("mentor_id", &req.get_ref().mentor_id)?;
        let mentor = self.app.get_mentor(&who, id).await?;
        Ok(Response::new(pb::GetMentorResponse {
            mentor: Some(mentor.into()),
        }))
    }

    async fn list_mentors(
        &self,
        req: Request<pb::ListMentorsRequest>,
    ) -> Result<Response<pb::ListMentorsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = v.check(input::page_size(r.page_size));
        let skill = if r.skill_area.is_empty() {
            None
        } else {
            v.check(input::label("skill_area", &r.skill_area))
        };
        v.finish()?;
        let Some(size) = size else { return Err(incomplete()) };
        let (mentors, next) = self
            .app
            .list_mentors(&who, skill.as_deref(), r.accepting_sessions_only, size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListMentorsResponse {
            mentors: mentors.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }

    async fn upsert_listing(
        &self,
        req: Request<pb::UpsertListingRequest>,
    ) -> Result<Response<pb::UpsertListingResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let l = r.listing.clone().unwrap_or_default();
        let mut v = Violations::new();
        let id = v
            .check(input::optional_id("listing.id", &l.id))
            .map(|id| id.unwrap_or_else(Uuid::now_v7));
        let mentor_id = v.check(input::optional_id("listing.mentor_id", &l.mentor_id));
        let title = v.check(input::required_text("listing.title", &l.title, MAX_NAME_LEN));
        let skill = v.check(input::label("listing.skill_area", &l.skill_area));
        v.finish()?;
        let (Some(id), Some(mentor_id), Some(title), Some(skill_area)) = (id, mentor_id, title, skill) else {
            return Err(incomplete());
        };
        let now = chrono::Utc::now();
        let listing = Listing {
            id,
            mentor_id,
            title,
            skill_area,
            created_at: now,
            updated_at: now,
        };
        let mut m = begin_or_replay!(self, &who, "UpsertListing", r);
        let listing = self.app.upsert_listing(&mut m.unit, &who, listing).await?;
        m.finish(pb::UpsertListingResponse {
            listing: Some(listing.into()),
        })
        .await
    }

    async fn get_listing(
        &self,
        req: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::GetListingResponse>, Status> {
        let who = principal(&req)?;
        let id = input::id("listing_id", &req.get_ref().listing_id)?;
        let listing = self.app.get_listing(&who, id).await?;
        Ok(Response::new(pb::GetListingResponse {
            listing: Some(listing.into()),
        }))
    }

    async fn list_listings(
        &self,
        req: Request<pb::ListListingsRequest>,
    ) -> Result<Response<pb::ListListingsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = v.check(input::page_size(r.page_size));
        let mentor = v.check(input::optional_id("mentor_id", &r.mentor_id));
        let skill = if r.skill_area.is_empty() {
            None
        } else {
            v.check(input::label("skill_area", &r.skill_area))
        };
        v.finish()?;
        let (Some(size), Some(mentor)) = (size, mentor) else {
            return Err(incomplete());
        };
        let (listings, next) = self
            .app
            .list_listings(&who, mentor, skill.as_deref(), size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListListingsResponse {
            listings: listings.into_iter().map(Into::into).collect(),
            next_page_token: next,
        }))
    }
}
