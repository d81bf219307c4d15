//! DirectoryService: handlers of a few lines each, and the parser of each request.

use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Api, Parse, convert, mutating, pb};
use crate::domain::{
    Result, Violations,
    availability::{self, MAX_WINDOWS, Window},
    command::{ListingInput, MAX_SKILL_AREAS, MenteeInput, MentorInput},
    input::{self, MAX_NAME_LEN},
    query::{ListingQuery, MentorQuery},
};

mutating!(
    pb::UpsertMenteeRequest,
    pb::UpsertMentorRequest,
    pb::UpsertListingRequest,
);

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for Api {
    async fn upsert_mentee(
        &self,
        req: Request<pb::UpsertMenteeRequest>,
    ) -> Result<Response<pb::UpsertMenteeResponse>, Status> {
        self.mutate(req, async |app, unit, who, input| {
            let mentee = app.upsert_mentee(unit, who, input).await?;
            Ok(pb::UpsertMenteeResponse {
                mentee: Some(mentee.into()),
            })
        })
        .await
    }

    async fn get_mentee(&self, req: Request<pb::GetMenteeRequest>) -> Result<Response<pb::GetMenteeResponse>, Status> {
        self.read(req, async |app, who, id| {
            let mentee = app.get_mentee(&who, id).await?;
            Ok(pb::GetMenteeResponse {
                mentee: Some(mentee.into()),
            })
        })
        .await
    }

    async fn upsert_mentor(
        &self,
        req: Request<pb::UpsertMentorRequest>,
    ) -> Result<Response<pb::UpsertMentorResponse>, Status> {
        self.mutate(req, async |app, unit, who, input| {
            let mentor = app.upsert_mentor(unit, who, input).await?;
            Ok(pb::UpsertMentorResponse {
                mentor: Some(mentor.into()),
            })
        })
        .await
    }

    async fn get_mentor(&self, req: Request<pb::GetMentorRequest>) -> Result<Response<pb::GetMentorResponse>, Status> {
        self.read(req, async |app, _, id| {
            let mentor = app.get_mentor(id).await?;
            Ok(pb::GetMentorResponse {
                mentor: Some(mentor.into()),
            })
        })
        .await
    }

    async fn list_mentors(
        &self,
        req: Request<pb::ListMentorsRequest>,
    ) -> Result<Response<pb::ListMentorsResponse>, Status> {
        self.read(req, async |app, _, query| {
            let (mentors, next) = app.list_mentors(query).await?;
            Ok(pb::ListMentorsResponse {
                mentors: mentors.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }

    async fn upsert_listing(
        &self,
        req: Request<pb::UpsertListingRequest>,
    ) -> Result<Response<pb::UpsertListingResponse>, Status> {
        self.mutate(req, async |app, unit, who, input| {
            let listing = app.upsert_listing(unit, who, input).await?;
            Ok(pb::UpsertListingResponse {
                listing: Some(listing.into()),
            })
        })
        .await
    }

    async fn get_listing(
        &self,
        req: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::GetListingResponse>, Status> {
        self.read(req, async |app, _, id| {
            let listing = app.get_listing(id).await?;
            Ok(pb::GetListingResponse {
                listing: Some(listing.into()),
            })
        })
        .await
    }

    async fn list_listings(
        &self,
        req: Request<pb::ListListingsRequest>,
    ) -> Result<Response<pb::ListListingsResponse>, Status> {
        self.read(req, async |app, _, query| {
            let (listings, next) = app.list_listings(query).await?;
            Ok(pb::ListListingsResponse {
                listings: listings.into_iter().map(Into::into).collect(),
                next_page_token: next,
            })
        })
        .await
    }
}

impl Parse for pb::UpsertMenteeRequest {
    type Parsed = MenteeInput;
    fn parse(&self) -> Result<MenteeInput> {
        let none = pb::Mentee::default();
        let m = self.mentee.as_ref().unwrap_or(&none);
        let mut v = Violations::new();
        let id = v.check(input::id("mentee.id", &m.id));
        let display_name = v.check(input::required_text(
            "mentee.display_name",
            &m.display_name,
            MAX_NAME_LEN,
        ));
        let input = (|| {
            Some(MenteeInput {
                id: id?,
                display_name: display_name?,
            })
        })();
        v.into_result(input)
    }
}

impl Parse for pb::GetMenteeRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("mentee_id", &self.mentee_id)
    }
}

impl Parse for pb::UpsertMentorRequest {
    type Parsed = MentorInput;
    fn parse(&self) -> Result<MentorInput> {
        let none = pb::Mentor::default();
        let m = self.mentor.as_ref().unwrap_or(&none);
        let mut v = Violations::new();
        let id = v
            .check(input::optional_id("mentor.id", &m.id))
            .map(|id| id.unwrap_or_else(Uuid::now_v7));
        let user_id = v.check(input::id("mentor.user_id", &m.user_id));
        let display_name = v.check(input::required_text(
            "mentor.display_name",
            &m.display_name,
            MAX_NAME_LEN,
        ));
        // Lists are refused by their length before any element is looked at.
        let skill_areas = v
            .check(input::at_most(
                "mentor.skill_areas",
                m.skill_areas.len(),
                MAX_SKILL_AREAS,
            ))
            .and_then(|()| {
                let labels: Vec<_> = m
                    .skill_areas
                    .iter()
                    .enumerate()
                    .map(|(i, s)| v.check(input::label(&format!("mentor.skill_areas[{i}]"), s)))
                    .collect();
                labels.into_iter().collect::<Option<Vec<String>>>()
            });
        let limit = match m.max_concurrent_sessions {
            0 => Some(None),
            n if (1..=1000).contains(&n) => Some(Some(n)),
            _ => {
                v.add(
                    "mentor.max_concurrent_sessions",
                    "must be between 1 and 1000, or 0 for the default",
                );
                None
            }
        };
        let timezone = v
            .check(availability::parse_timezone("mentor.timezone", &m.timezone))
            .map(|_| m.timezone.clone());
        let availability = v
            .check(input::at_most("mentor.availability", m.availability.len(), MAX_WINDOWS))
            .and_then(|()| {
                let windows: Vec<Option<Window>> = m
                    .availability
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        let field = format!("mentor.availability[{i}]");
                        v.check(Window::parse(
                            &field,
                            w.day_of_week,
                            &w.start_local_time,
                            &w.end_local_time,
                        ))
                    })
                    .collect();
                // Overlaps are looked for among the windows that parsed, as before.
                let parsed: Vec<Window> = windows.iter().flatten().copied().collect();
                v.check(availability::check_no_overlap("mentor.availability", &parsed))?;
                windows.into_iter().collect::<Option<Vec<Window>>>()
            });
        let input = (|| {
            Some(MentorInput {
                id: id?,
                user_id: user_id?,
                display_name: display_name?,
                skill_areas: skill_areas?,
                max_concurrent_sessions: limit?,
                accepting_sessions: m.accepting_sessions,
                timezone: timezone?,
                availability: availability?,
            })
        })();
        v.into_result(input)
    }
}

impl Parse for pb::GetMentorRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("mentor_id", &self.mentor_id)
    }
}

/// An optional skill area filter.
fn skill_filter(raw: &str) -> Result<Option<String>> {
    if raw.is_empty() {
        Ok(None)
    } else {
        input::label("skill_area", raw).map(Some)
    }
}

impl Parse for pb::ListMentorsRequest {
    type Parsed = MentorQuery;
    fn parse(&self) -> Result<MentorQuery> {
        let mut v = Violations::new();
        let page = v.check(convert::page(self.page_size, &self.page_token));
        let skill_area = v.check(skill_filter(&self.skill_area));
        let query = (|| {
            Some(MentorQuery {
                skill_area: skill_area?,
                accepting_only: self.accepting_sessions_only,
                page: page?,
            })
        })();
        v.into_result(query)
    }
}

impl Parse for pb::UpsertListingRequest {
    type Parsed = ListingInput;
    fn parse(&self) -> Result<ListingInput> {
        let none = pb::Listing::default();
        let l = self.listing.as_ref().unwrap_or(&none);
        let mut v = Violations::new();
        let id = v
            .check(input::optional_id("listing.id", &l.id))
            .map(|id| id.unwrap_or_else(Uuid::now_v7));
        let mentor_id = v.check(input::optional_id("listing.mentor_id", &l.mentor_id));
        let title = v.check(input::required_text("listing.title", &l.title, MAX_NAME_LEN));
        let skill_area = v.check(input::label("listing.skill_area", &l.skill_area));
        let input = (|| {
            Some(ListingInput {
                id: id?,
                mentor_id: mentor_id?,
                title: title?,
                skill_area: skill_area?,
            })
        })();
        v.into_result(input)
    }
}

impl Parse for pb::GetListingRequest {
    type Parsed = Uuid;
    fn parse(&self) -> Result<Uuid> {
        input::id("listing_id", &self.listing_id)
    }
}

impl Parse for pb::ListListingsRequest {
    type Parsed = ListingQuery;
    fn parse(&self) -> Result<ListingQuery> {
        let mut v = Violations::new();
        let page = v.check(convert::page(self.page_size, &self.page_token));
        let mentor_id = v.check(input::optional_id("mentor_id", &self.mentor_id));
        let skill_area = v.check(skill_filter(&self.skill_area));
        let query = (|| {
            Some(ListingQuery {
                mentor_id: mentor_id?,
                skill_area: skill_area?,
                page: page?,
            })
        })();
        v.into_result(query)
    }
}
