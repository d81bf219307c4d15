//! The HTTP/JSON surface, driven over HTTP/1.1 as a front end drives it:
//! the routes answer what the gRPC call of the same RPC answers, the same
//! rules hold (token first, roles, idempotency, etags), bad input gets a
//! 4xx naming the field and changes nothing, and the two streams (SSE
//! watches, downloads) keep their promises.

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use futures::StreamExt;
use mentorship::grpc::pb;
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::*;

/// An HTTP caller of one replica.
struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    fn new(app: &TestApp, token: &str) -> Http {
        Http::on(app, 0, token)
    }

    fn on(app: &TestApp, replica: usize, token: &str) -> Http {
        Http {
            base: format!("http://{}", app.replicas[replica].server.addr),
            client: reqwest::Client::builder().http1_only().build().expect("client"),
            token: (!token.is_empty()).then(|| token.to_owned()),
        }
    }

    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends `body` as JSON (none when `Null`); the status, headers and JSON answer.
    async fn send(&self, method: &str, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.request(method, path);
        if !body.is_null() {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        answer(req).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, _, body) = self.send("GET", path, Value::Null).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

async fn answer(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = req.send().await.expect("an HTTP answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a body");
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, headers, body)
}

/// A gRPC answer as canonical JSON, for comparing with the HTTP one.
fn json_of<M: Message>(message: &M, type_name: &str) -> Value {
    let pool = mentorship::rest::descriptors();
    let desc = pool.get_message_by_name(type_name).expect("a message type");
    let dynamic = prost_reflect::DynamicMessage::decode(desc, message.encode_to_vec().as_slice()).expect("decodes");
    serde_json::to_value(&dynamic).expect("serializes")
}

/// A session's JSON less what is computed at read time (its active time
/// grows while it is ACTIVE), for comparing two reads.
fn stable(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            map.remove("activeDuration");
            for value in map.values_mut() {
                *value = stable(value.take());
            }
        }
        Value::Array(items) => {
            for value in items.iter_mut() {
                *value = stable(value.take());
            }
        }
        _ => {}
    }
    v
}

/// The `ErrorInfo.reason` of an HTTP error body.
fn reason(body: &Value) -> String {
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The fields a `BadRequest` names.
fn fields(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["field"].as_str().map(str::to_owned))
        .collect()
}

const S: &str = "/api/mentorship/sessions";

#[tokio::test]
async fn every_session_route_answers_as_its_grpc_call_does() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let token = coordinator();
    let http = Http::new(&app, &token);
    let grpc = app.as_(&token);

    // Create over HTTP; read over both.
    let (status, _, created) = http
        .send(
            "POST",
            S,
            json!({"menteeId": w.mentee.to_string(), "listing_id": w.listing.to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["session"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["session"]["status"], "SESSION_STATUS_ACTIVE", "{created}");
    let (status, headers, got) = http.send("GET", &format!("{S}/{id}"), Value::Null).await;
    assert_eq!(status, 200);
    let session = grpc.get_session(&id).await.expect("gRPC get");
    assert_eq!(
        stable(got.clone()),
        stable(json_of(
            &pb::GetSessionResponse {
                session: Some(session.clone())
            },
            "mentorship.v1.GetSessionResponse"
        ))
    );
    assert_eq!(
        stable(got.clone()),
        stable(created),
        "the create answered the stored session"
    );
    assert_eq!(headers["etag"], format!("\"{}\"", session.etag));
    // Canonical forms: RFC 3339 timestamps in Z, durations in seconds, enums by name.
    assert!(
        got["session"]["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{got}"
    );
    assert!(
        got["session"]["config"]["maxDuration"]
            .as_str()
            .is_some_and(|d| d.ends_with('s')),
        "{got}"
    );

    // Each action route, then the same state read over gRPC.
    for (action, body) in [
        ("pause", json!({"reason": "lunch"})),
        ("resume", Value::Null),
        ("stage", json!({"stage": "review"})),
        ("check-ins", json!({"note": "on track", "blocker": false})),
    ] {
        let (status, _, answer) = http.send("POST", &format!("{S}/{id}/{action}"), body).await;
        assert_eq!(status, 200, "{action}: {answer}");
        let stored = grpc.get_session(&id).await.expect("get");
        assert_eq!(
            stable(answer["session"].clone()),
            stable(json_of(&stored, "mentorship.v1.Session")),
            "{action} answers the stored session"
        );
    }
    assert_eq!(grpc.get_session(&id).await.unwrap().stage, "review");

    // Reads with query parameters, in both spellings.
    let listed = http
        .get(&format!(
            "{S}?menteeId={}&statuses=SESSION_STATUS_ACTIVE&page_size=10&orderBy=created_at%20desc",
            w.mentee
        ))
        .await;
    let by_grpc = grpc
        .list_sessions(pb::ListSessionsRequest {
            mentee_id: w.mentee.to_string(),
            statuses: vec![pb::SessionStatus::Active as i32],
            page_size: 10,
            order_by: "created_at desc".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        stable(listed.clone()),
        stable(json_of(&by_grpc, "mentorship.v1.ListSessionsResponse"))
    );
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));

    let events = http.get(&format!("{S}/{id}/events?pageSize=50")).await;
    let by_grpc = grpc.list_session_events(&id, 50, "").await.expect("events");
    assert_eq!(events, json_of(&by_grpc, "mentorship.v1.ListSessionEventsResponse"));
    assert!(
        events["events"][0]["seq"].is_string(),
        "64-bit integers are strings: {events}"
    );

    let timeline = http.get(&format!("{S}/{id}/timeline")).await;
    assert_eq!(timeline["sessionId"], id.as_str());
    let config = http.get(&format!("{S}/{id}/config")).await;
    assert_eq!(
        config["config"],
        json_of(
            &grpc.get_session_config(&id).await.unwrap(),
            "mentorship.v1.SessionConfig"
        )
    );

    // UpdateSessionConfig, its mask in lowerCamelCase and in snake_case.
    for (mask, minutes) in [("checkInInterval", 30), ("check_in_interval", 45)] {
        let (status, _, answer) = http
            .send(
                "PUT",
                &format!("{S}/{id}/config"),
                json!({"config": {"checkInInterval": format!("{}s", minutes * 60)}, "updateMask": mask}),
            )
            .await;
        assert_eq!(status, 200, "{mask}: {answer}");
        let stored = grpc.get_session_config(&id).await.unwrap();
        assert_eq!(
            stored.check_in_interval.map(|d| d.seconds),
            Some(minutes * 60),
            "{mask}"
        );
    }

    let assignments = http.get(&format!("{S}/{id}/assignments")).await;
    assert_eq!(assignments["assignments"][0]["sessionId"], id.as_str(), "{assignments}");
    let queue = http.get("/api/mentorship/queue").await;
    assert!(queue["maxConcurrentSessions"].is_number(), "{queue}");
    let templates = http.get("/api/mentorship/config-templates").await;
    assert!(templates["templates"].is_array(), "{templates}");
    let compared = http
        .get(&format!("{S}:compare?firstSessionId={id}&secondSessionId={id}"))
        .await;
    assert_eq!(compared["first"]["sessionId"], id.as_str(), "{compared}");

    // Cancel last: the session is terminal, over both surfaces.
    let (status, _, cancelled) = http
        .send("POST", &format!("{S}/{id}/cancel"), json!({"reason": "done early"}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["session"]["status"], "SESSION_STATUS_CANCELLED");
    let (status, _, again) = http.send("POST", &format!("{S}/{id}/pause"), Value::Null).await;
    let by_grpc = grpc.pause_session(&id, "").await.expect_err("terminal");
    assert_eq!(status, 400, "{again}");
    assert_eq!(again["code"], by_grpc.code() as i32);
    assert_eq!(again["message"], by_grpc.message());

    // Terminal now, so nothing moves: whole answers compared with gRPC's.
    let mut sessions = app.sessions();
    let timeline = sessions
        .get_session_timeline(authed(&token, pb::GetSessionTimelineRequest { session_id: id.clone() }))
        .await
        .expect("timeline")
        .into_inner();
    assert_eq!(
        http.get(&format!("{S}/{id}/timeline")).await,
        json_of(&timeline, "mentorship.v1.GetSessionTimelineResponse")
    );
    let compared = sessions
        .compare_sessions(authed(
            &token,
            pb::CompareSessionsRequest {
                first_session_id: id.clone(),
                second_session_id: id.clone(),
            },
        ))
        .await
        .expect("compare")
        .into_inner();
    assert_eq!(
        http.get(&format!("{S}:compare?firstSessionId={id}&second_session_id={id}"))
            .await,
        json_of(&compared, "mentorship.v1.CompareSessionsResponse")
    );
    let assignments = sessions
        .list_mentor_assignments(authed(
            &token,
            pb::ListMentorAssignmentsRequest {
                session_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("assignments")
        .into_inner();
    assert_eq!(
        http.get(&format!("{S}/{id}/assignments")).await,
        json_of(&assignments, "mentorship.v1.ListMentorAssignmentsResponse")
    );
    assert_eq!(
        http.get(&format!("{S}/{id}")).await,
        json_of(
            &pb::GetSessionResponse {
                session: Some(grpc.get_session(&id).await.unwrap())
            },
            "mentorship.v1.GetSessionResponse"
        )
    );
    use tonic_types::StatusExt;
    assert_eq!(
        reason(&again),
        by_grpc.get_details_error_info().expect("ErrorInfo").reason
    );
}

#[tokio::test]
async fn bookings_and_the_directory_over_http() {
    let app = spawn_app().await;
    let token = coordinator();
    let http = Http::new(&app, &token);
    let grpc = app.as_(&token);
    let mentee = Uuid::new_v4();
    let (status, _, m) = http
        .send(
            "PUT",
            &format!("/api/mentorship/mentees/{mentee}"),
            json!({"displayName": "Ada"}),
        )
        .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["mentee"]["id"], mentee.to_string());
    let mentor_id = Uuid::new_v4();
    let (status, _, mentor) = http
        .send(
            "PUT",
            &format!("/api/mentorship/mentors/{mentor_id}"),
            json!({"userId": Uuid::new_v4().to_string(), "displayName": "Grace", "timezone": "UTC",
                   "acceptingSessions": true, "skillAreas": ["rust"]}),
        )
        .await;
    assert_eq!(status, 200, "{mentor}");
    assert_eq!(
        mentor["mentor"]["id"],
        mentor_id.to_string(),
        "the path names the resource"
    );
    let listing_id = Uuid::new_v4();
    let (status, _, listing) = http
        .send(
            "PUT",
            &format!("/api/mentorship/listings/{listing_id}"),
            json!({"mentorId": mentor_id.to_string(), "title": "Review", "skillArea": "rust"}),
        )
        .await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        http.get(&format!("/api/mentorship/mentors/{mentor_id}")).await,
        json_of(
            &pb::GetMentorResponse {
                mentor: Some(grpc.get_mentor(&mentor_id.to_string()).await.unwrap())
            },
            "mentorship.v1.GetMentorResponse"
        )
    );
    let mentors = http
        .get("/api/mentorship/mentors?skillArea=rust&acceptingSessionsOnly=true")
        .await;
    assert_eq!(mentors["mentors"].as_array().map(Vec::len), Some(1), "{mentors}");
    let listings = http
        .get(&format!("/api/mentorship/listings?mentorId={mentor_id}"))
        .await;
    assert_eq!(listings["listings"][0]["id"], listing_id.to_string());

    // A booking: create, read, accept (which schedules its session).
    let start = monday_at(10) + Duration::weeks(2);
    let (status, _, booking) = http
        .send(
            "POST",
            "/api/mentorship/bookings",
            json!({"listingId": listing_id.to_string(), "menteeId": mentee.to_string(),
                   "startTime": start.to_rfc3339(), "endTime": (start + Duration::hours(1)).to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 200, "{booking}");
    let booking_id = booking["booking"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        http.get(&format!("/api/mentorship/bookings/{booking_id}")).await,
        json_of(
            &pb::GetBookingResponse {
                booking: Some(grpc.get_booking(&booking_id).await.unwrap())
            },
            "mentorship.v1.GetBookingResponse"
        )
    );
    let (status, _, accepted) = http
        .send(
            "POST",
            &format!("/api/mentorship/bookings/{booking_id}/accept"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(accepted["session"]["status"], "SESSION_STATUS_SCHEDULED");
    let (status, _, declined) = http
        .send(
            "POST",
            &format!("/api/mentorship/bookings/{booking_id}/decline"),
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(status, 400, "an accepted booking cannot be declined: {declined}");
    let events = http.get(&format!("/api/mentorship/bookings/{booking_id}/events")).await;
    assert!(events["events"].as_array().is_some_and(|e| e.len() >= 2), "{events}");
    let listed = http
        .get(&format!("/api/mentorship/bookings?listingId={listing_id}"))
        .await;
    assert_eq!(listed["bookings"][0]["id"], booking_id.as_str());
    let webhooks = http.get("/api/mentorship/webhooks").await;
    assert_eq!(webhooks, json!({}));
}

/// A sample of the access matrix: the HTTP status is the gRPC code's.
#[tokio::test]
async fn the_access_rules_are_the_grpc_ones() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let session = app
        .coordinator()
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("session");
    let stranger = token(&["mentee"], Uuid::new_v4(), None);
    let cases: Vec<(String, &str, String, u16)> = vec![
        (w.mentee_token(), "GET", format!("{S}/{}", session.id), 200),
        (stranger.clone(), "GET", format!("{S}/{}", session.id), 403),
        (w.mentee_token(), "POST", format!("{S}/{}/fail", session.id), 403),
        (w.mentor_token(), "POST", format!("{S}/{}/pause", session.id), 200),
        (w.mentee_token(), "GET", "/api/mentorship/webhooks".into(), 403),
        (service(), "GET", "/api/mentorship/queue".into(), 200),
        (String::new(), "GET", "/api/mentorship/queue".into(), 401),
        ("not.a.token".into(), "GET", "/api/mentorship/queue".into(), 401),
        (
            mentorship::grpc::auth::mint_hs256(
                b"another-secret-another-secret-0123456789",
                &claims(&["coordinator"], Uuid::new_v4(), None, Duration::hours(1)),
            )
            .expect("a token signed with another key"),
            "GET",
            "/api/mentorship/queue".into(),
            401,
        ),
    ];
    for (token, method, path, expected) in cases {
        let (status, headers, body) = Http::new(&app, &token).send(method, &path, Value::Null).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        if status == 401 {
            assert_eq!(headers["www-authenticate"], "Bearer");
            assert_eq!(body["code"], Code::Unauthenticated as i32);
        }
    }
    // The same refusal over gRPC.
    let denied = app
        .as_(&w.mentee_token())
        .fail_session(&session.id, "x", None)
        .await
        .expect_err("a mentee may not fail a session");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn bad_input_gets_a_4xx_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let http = Http::new(&app, &coordinator());
    let before = app.stored_counts().await;
    let raw = |body: &'static str, content_type: &'static str| {
        http.request("POST", S).header("content-type", content_type).body(body)
    };
    // Malformed JSON, without a token: the token is checked first.
    let (status, _, body) = answer(
        Http::new(&app, "")
            .request("POST", S)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = answer(raw("{not json", "application/json")).await;
    assert_eq!((status, fields(&body)), (400, vec!["body".to_owned()]), "{body}");
    let (status, _, body) = answer(raw(r#"{"menteeId": "x", "surprise": 1}"#, "application/json")).await;
    assert_eq!((status, fields(&body)), (400, vec!["surprise".to_owned()]), "{body}");
    let (status, _, body) = answer(raw(r#"{"config": {"maxDuration": 5}}"#, "application/json")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        fields(&body),
        vec!["config.maxDuration".to_owned()],
        "a wrong type names its field"
    );
    let (status, _, body) = answer(raw(r#"{"menteeId": "x"}"#, "text/plain")).await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["Content-Type".to_owned()]),
        "{body}"
    );
    let (status, _, body) = http.send("GET", &format!("{S}?pageSize=ten"), Value::Null).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = http.send("GET", &format!("{S}?nosuch=1"), Value::Null).await;
    assert_eq!((status, fields(&body)), (400, vec!["nosuch".to_owned()]), "{body}");
    let (status, _, body) = answer(
        http.request("GET", "/api/mentorship/queue")
            .header("request-timeout", "soon"),
    )
    .await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["Request-Timeout".to_owned()]),
        "{body}"
    );

    // 10 MB: refused by its declared length, and streamed without one.
    let big = vec![b' '; 10 * 1024 * 1024];
    let (status, _, body) = answer(
        http.request("POST", S)
            .header("content-type", "application/json")
            .body(big.clone()),
    )
    .await;
    assert_eq!((status, reason(&body).as_str()), (413, "REQUEST_TOO_LARGE"), "{body}");
    let chunks = futures::stream::iter(
        big.chunks(64 * 1024)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let (status, _, body) = answer(
        http.request("POST", S)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!((status, reason(&body).as_str()), (413, "REQUEST_TOO_LARGE"), "{body}");

    // An unknown route.
    let (status, _, body) = http.send("GET", "/api/mentorship/nothing", Value::Null).await;
    assert_eq!((status, reason(&body).as_str()), (404, "ROUTE_NOT_FOUND"), "{body}");
    assert_eq!(app.stored_counts().await, before, "nothing changed");
    let _ = w;
}

#[tokio::test]
async fn etags_if_match_and_idempotency_keys() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let http = Http::new(&app, &coordinator());
    let key = Uuid::new_v4().to_string();
    let create = |key: &str| {
        http.request("POST", S)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(json!({"menteeId": w.mentee.to_string(), "listingId": w.listing.to_string()}).to_string())
    };
    let (status, _, first) = answer(create(&key)).await;
    assert_eq!(status, 200, "{first}");
    let (status, _, again) = answer(create(&key.to_uppercase())).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        first["session"]["id"], again["session"]["id"],
        "the key is the request_id"
    );
    let (status, _, body) = answer(create("not-a-uuid")).await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["Idempotency-Key".to_owned()]),
        "{body}"
    );
    let (status, _, body) = answer(
        http.request("POST", S)
            .header("content-type", "application/json")
            .header("idempotency-key", Uuid::new_v4().to_string())
            .body(json!({"menteeId": w.mentee.to_string(), "requestId": Uuid::new_v4().to_string()}).to_string()),
    )
    .await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["Idempotency-Key".to_owned()]),
        "{body}"
    );

    let id = first["session"]["id"].as_str().unwrap().to_owned();
    let (_, headers, _) = http.send("GET", &format!("{S}/{id}"), Value::Null).await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let pause = |if_match: &str| {
        http.request("POST", &format!("{S}/{id}/pause"))
            .header("if-match", if_match)
    };
    let (status, headers, paused) = answer(pause(&etag)).await;
    assert_eq!(status, 200, "{paused}");
    assert_ne!(headers["etag"].to_str().unwrap(), etag, "a change moves the etag");
    // The old etag is stale now: 412 from If-Match, 409 from the body.
    let (status, _, body) = answer(
        http.request("POST", &format!("{S}/{id}/resume"))
            .header("if-match", &etag),
    )
    .await;
    assert_eq!((status, reason(&body).as_str()), (412, "ETAG_MISMATCH"), "{body}");
    let (status, _, body) = http
        .send(
            "POST",
            &format!("{S}/{id}/resume"),
            json!({"etag": etag.trim_matches('"')}),
        )
        .await;
    assert_eq!((status, reason(&body).as_str()), (409, "ETAG_MISMATCH"), "{body}");
    let (status, _, body) = answer(pause(&format!("W/{etag}"))).await;
    assert_eq!((status, fields(&body)), (400, vec!["If-Match".to_owned()]), "{body}");
    let (status, _, body) = answer(pause("3")).await;
    assert_eq!(
        (status, fields(&body)),
        (400, vec!["If-Match".to_owned()]),
        "unquoted: {body}"
    );
    let (status, _, body) = answer(
        http.request("POST", &format!("{S}/{id}/resume"))
            .header("if-match", "*"),
    )
    .await;
    assert_eq!(status, 200, "* matches any version: {body}");
    assert_eq!(body["session"]["status"], "SESSION_STATUS_ACTIVE");

    // A route whose request takes no etag refuses If-Match rather than ignore it.
    let start = monday_at(10) + Duration::weeks(3);
    let booking = app
        .coordinator()
        .create_booking(booking_request(w.listing, w.mentee, start, start + Duration::hours(1)))
        .await
        .expect("booking");
    let (status, _, body) = answer(
        http.request("POST", &format!("/api/mentorship/bookings/{}/cancel", booking.id))
            .header("if-match", "\"1\""),
    )
    .await;
    assert_eq!((status, fields(&body)), (400, vec!["If-Match".to_owned()]), "{body}");
    let stored = app.coordinator().get_booking(&booking.id).await.expect("booking");
    assert_eq!(stored.status, pb::BookingStatus::Draft as i32, "nothing changed");
}

#[tokio::test]
async fn every_refusal_of_the_edge_is_json_and_the_token_comes_first() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let base = format!("http://{}", app.replicas[0].server.addr);
    // What a new user tries first: not gRPC, not a route.
    for (method, path) in [
        ("GET", "/"),
        ("POST", "/api/mentorship/nothing"),
        ("GET", "/mentorship.v1.SessionService/GetSession"),
    ] {
        let (status, _, body) = answer(client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        ))
        .await;
        assert_eq!(
            (status, reason(&body).as_str()),
            (404, "ROUTE_NOT_FOUND"),
            "{method} {path}: {body}"
        );
    }
    // A malformed deadline without a token: the token is checked first.
    let (status, _, body) = answer(
        Http::new(&app, "")
            .request("GET", "/api/mentorship/queue")
            .header("request-timeout", "soon"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // A caller's gRPC headers are not passed on (gzip would make the call unreadable).
    let (status, _, body) = answer(
        Http::new(&app, &coordinator())
            .request("GET", "/api/mentorship/queue")
            .header("grpc-encoding", "gzip"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // A query parameter nested past 8 fields, and a huge one, are refused, not followed.
    let deep = "config.customSettings.fields.value.structValue.".repeat(100);
    let (status, _, body) = Http::new(&app, &coordinator())
        .send("GET", &format!("{S}?{deep}=1"), Value::Null)
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = Http::new(&app, &coordinator())
        .send("GET", &format!("{S}?menteeId.x=1"), Value::Null)
        .await;
    assert_eq!((status, fields(&body)), (400, vec!["menteeId.x".to_owned()]), "{body}");
}

/// Reads Server-Sent Events: `(id, event, data)` per event, skipping comments.
struct Events {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
}

impl Events {
    async fn open(http: &Http, path: &str, last_event_id: Option<&str>) -> Events {
        let mut req = http.request("GET", path);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.expect("an answer");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            stream: response.bytes_stream().boxed(),
            buf: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends.
    async fn next(&mut self) -> Option<(Option<String>, Option<String>, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("JSON data"));
                    }
                }
                match data {
                    Some(data) => return Some((id, event, data)),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout(StdDuration::from_secs(10), self.stream.next())
                .await
                .expect("an event within 10 s")?
                .expect("a chunk");
            self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

#[tokio::test]
async fn a_watch_over_sse_resumes_from_last_event_id_losing_and_repeating_nothing() {
    let app = spawn_replicas(2).await;
    let w = world(&app).await;
    let token = coordinator();
    let grpc = app.as_(&token);
    let s = grpc
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("session");
    let path = format!("{S}/{}:watch", s.id);
    let mut events = Events::open(&Http::new(&app, &token), &path, None).await;
    let (_, _, first) = events.next().await.expect("the session first");
    assert_eq!(first["session"]["id"], s.id.as_str());
    grpc.pause_session(&s.id, "one").await.expect("pause");
    let (id, _, paused) = events.next().await.expect("an event");
    assert_eq!(paused["event"]["toStatus"], "SESSION_STATUS_PAUSED", "{paused}");
    let last = id.expect("an id");
    assert_eq!(Some(last.as_str()), paused["event"]["seq"].as_str());
    drop(events);

    // Changes while no one watches, then a resume on the other replica.
    grpc.resume_session(&s.id).await.expect("resume");
    grpc.pause_session(&s.id, "two").await.expect("pause");
    grpc.resume_session(&s.id).await.expect("resume");
    let mut events = Events::open(&Http::on(&app, 1, &token), &path, Some(&last)).await;
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let (id, _, e) = events.next().await.expect("a missed event");
        seqs.push(id.expect("id").parse::<i64>().expect("a seq"));
        assert!(e["event"].is_object(), "no snapshot on a resume: {e}");
    }
    let first_seq: i64 = last.parse().unwrap();
    assert_eq!(
        seqs,
        vec![first_seq + 1, first_seq + 2, first_seq + 3],
        "each missed event once, in order"
    );
    grpc.complete_session(&s.id, None).await.expect("complete");
    let (_, _, done) = events.next().await.expect("the terminal event");
    assert_eq!(done["event"]["toStatus"], "SESSION_STATUS_COMPLETED");
    assert!(
        events.next().await.is_none(),
        "the stream ends after the terminal event"
    );

    // The feed: it starts with its position, so a stream lost before any
    // event resumes without a loss; its events carry cursors, and a cursor
    // resumes on either replica.
    let mut feed = Events::open(&Http::new(&app, &token), &format!("{S}:watch"), None).await;
    let (start, _, position) = feed.next().await.expect("the start position");
    assert!(position.get("event").is_none(), "{position}");
    assert_eq!(start.as_deref(), position["cursor"].as_str(), "{position}");
    drop(feed);
    let mut feed = Events::open(&Http::on(&app, 1, &token), &format!("{S}:watch"), start.as_deref()).await;
    let t = grpc
        .create_session(pb::CreateSessionRequest {
            mentee_id: w.mentee.to_string(),
            listing_id: w.listing.to_string(),
            ..Default::default()
        })
        .await
        .expect("session");
    let (cursor, _, created) = feed.next().await.expect("an event");
    assert_eq!(created["event"]["sessionId"], t.id.as_str());
    drop(feed);
    grpc.pause_session(&t.id, "x").await.expect("pause");
    let mut feed = Events::open(&Http::on(&app, 1, &token), &format!("{S}:watch"), cursor.as_deref()).await;
    let (_, _, next) = feed.next().await.expect("the missed event");
    assert_eq!(next["event"]["sessionId"], t.id.as_str());
    assert_eq!(next["event"]["toStatus"], "SESSION_STATUS_PAUSED", "{next}");

    // A refused watch is a plain HTTP error.
    let (status, _, body) = Http::new(&app, &token)
        .send("GET", &format!("{S}/{}:watch", Uuid::new_v4()), Value::Null)
        .await;
    assert_eq!((status, reason(&body).as_str()), (404, "SESSION_NOT_FOUND"));
}

#[tokio::test]
async fn an_export_downloads_raw_csv_and_json_lines() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let token = coordinator();
    for _ in 0..3 {
        app.as_(&token)
            .create_session(pb::CreateSessionRequest {
                mentee_id: w.mentee.to_string(),
                listing_id: w.listing.to_string(),
                ..Default::default()
            })
            .await
            .expect("session");
    }
    // Paused, so that nothing in the rows moves between the two exports.
    let listed = app
        .as_(&token)
        .list_sessions(pb::ListSessionsRequest {
            mentee_id: w.mentee.to_string(),
            ..Default::default()
        })
        .await
        .expect("list");
    for s in listed
        .sessions
        .iter()
        .filter(|s| s.status == pb::SessionStatus::Active as i32)
    {
        app.as_(&token).pause_session(&s.id, "export").await.expect("pause");
    }
    let http = Http::new(&app, &token);
    for (format, content_type) in [
        ("EXPORT_FORMAT_CSV", "text/csv; charset=utf-8"),
        ("EXPORT_FORMAT_JSON_LINES", "application/x-ndjson"),
    ] {
        let response = http
            .request("GET", &format!("{S}:export?format={format}&menteeId={}", w.mentee))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], content_type);
        let body = response.bytes().await.expect("the file").to_vec();
        let mut grpc = app
            .sessions()
            .export_sessions(authed(
                &token,
                pb::ExportSessionsRequest {
                    mentee_id: w.mentee.to_string(),
                    format: if format.ends_with("CSV") { 1 } else { 2 },
                    ..Default::default()
                },
            ))
            .await
            .expect("export")
            .into_inner();
        let mut expected = Vec::new();
        while let Some(chunk) = grpc.message().await.expect("chunk") {
            expected.extend(chunk.chunk);
        }
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&expected),
            "{format}"
        );
        let lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!(lines, if format.ends_with("CSV") { 4 } else { 3 }, "{format}");
    }
    // No format: the configured one (JSON lines by default), labelled as such.
    let response = http
        .request("GET", &format!("{S}:export?menteeId={}", w.mentee))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.bytes().await.expect("the file");
    assert!(body.starts_with(b"{"), "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn cors_grpc_web_and_the_openapi_document_share_the_port() {
    let transport = mentorship::Transport {
        cors_allowed_origins: vec!["https://app.example".into()],
        ..transport()
    };
    let app = spawn_serving(Default::default(), Default::default(), transport).await;
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let base = format!("http://{}", app.replicas[0].server.addr);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}{S}"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.expect("preflight");
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        headers.contains("idempotency-key") && headers.contains("authorization"),
        "{headers}"
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    // gRPC-web over HTTP/1.1: a frame in, a frame and trailers out.
    let message = pb::GetQueueStatusRequest {}.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend((message.len() as u32).to_be_bytes());
    framed.extend(message);
    let response = client
        .post(format!("{base}/mentorship.v1.SessionService/GetQueueStatus"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "https://app.example")
        .bearer_auth(coordinator())
        .body(framed)
        .send()
        .await
        .expect("gRPC-web");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://app.example");
    let body = response.bytes().await.unwrap();
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let answer = pb::GetQueueStatusResponse::decode(&body[5..5 + len]).expect("a queue status");
    assert!(answer.max_concurrent_sessions > 0);
    let trailers = String::from_utf8_lossy(&body[5 + len + 5..]).to_string();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // The OpenAPI document, without a token.
    let doc = client
        .get(format!("{base}{}", mentorship::rest::OPENAPI_PATH))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert!(
        doc.to_vec() == committed,
        "the served document is not docs/openapi.json"
    );
    let _ = Utc::now();
}

/// The README's curl flow, run as written (bash, curl, jq, python3) against
/// a fresh server: it ends with the session COMPLETED.
#[tokio::test]
async fn the_readme_curl_flow_runs_as_written() {
    let app = spawn_app().await;
    let token = coordinator();
    let api = format!("http://{}/api/mentorship", app.replicas[0].server.addr);
    let (stdout, dir) = run_readme_block("rest-flow", &[("API", &api), ("TOKEN", &token)]).await;
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.last().copied(), Some("SESSION_STATUS_COMPLETED"), "{stdout}");
    assert!(lines.contains(&"412"), "the stale If-Match answers 412: {stdout}");
    let csv = std::fs::read_to_string(dir.join("sessions.csv")).expect("the export");
    assert_eq!(csv.lines().count(), 2, "a header and the one session: {csv}");
    let completed = app
        .as_(&token)
        .list_sessions(pb::ListSessionsRequest {
            statuses: vec![pb::SessionStatus::Completed as i32],
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(completed.sessions.len(), 1, "the stored outcome");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Request-Timeout` is the call's deadline, idle event streams get their
/// comment line, and REST calls count in the RPC's metrics.
#[tokio::test]
async fn deadlines_keep_alives_and_metrics_are_the_grpc_ones() {
    let transport = mentorship::Transport {
        metrics_addr: Some("127.0.0.1:0".parse().expect("addr")),
        event_keepalive: StdDuration::from_millis(200),
        ..transport()
    };
    let app = spawn_serving(Default::default(), Default::default(), transport).await;
    let w = world(&app).await;
    let token = coordinator();
    let http = Http::new(&app, &token);
    let (_, _, created) = http
        .send(
            "POST",
            S,
            json!({"menteeId": w.mentee.to_string(), "listingId": w.listing.to_string()}),
        )
        .await;
    let id = created["session"]["id"].as_str().expect("a session").to_owned();
    let handled = |m: &crate::observability::Scrape, method: &str| {
        m.count(
            "grpc_server_handled_total",
            &[
                ("grpc_service", "mentorship.v1.SessionService"),
                ("grpc_method", method),
                ("grpc_code", "OK"),
            ],
        )
    };
    let before = handled(&crate::observability::Scrape::of(&app).await, "GetSession");
    for _ in 0..3 {
        http.get(&format!("{S}/{id}")).await;
    }
    let after = handled(&crate::observability::Scrape::of(&app).await, "GetSession");
    assert_eq!(after - before, 3.0, "REST calls count as their RPC's");

    // A row held locked by another client: the call waits, and its deadline ends the wait.
    let mut held = app.pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM sessions WHERE id = $1::uuid FOR UPDATE")
        .bind(&id)
        .execute(&mut *held)
        .await
        .expect("lock the row");
    let (status, _, body) = answer(
        http.request("POST", &format!("{S}/{id}/pause"))
            .header("request-timeout", "0.3"),
    )
    .await;
    assert_eq!((status, reason(&body).as_str()), (504, "DEADLINE_EXCEEDED"), "{body}");
    held.rollback().await.expect("release");

    // An idle watch gets a comment line.
    let response = http
        .request("GET", &format!("{S}/{id}:watch"))
        .send()
        .await
        .expect("a watch");
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n: keep-alive\n") {
        let chunk = tokio::time::timeout(StdDuration::from_secs(5), stream.next())
            .await
            .expect("a keep-alive within 5 s")
            .expect("the stream goes on")
            .expect("a chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("data: {\"session\""), "{text}");
}

/// The contract's `REQUIRED` fields are exactly those the server refuses
/// when left out: every route called with its path filled and nothing else
/// names, in its BadRequest, each required field and no other.
#[tokio::test]
async fn the_required_fields_of_the_contract_are_the_ones_the_server_requires() {
    let app = spawn_app().await;
    let http = Http::new(&app, &coordinator());
    let pool = mentorship::rest::descriptors();
    let table = mentorship::rest::routes::Table::from_pool(&pool).expect("routes");
    let mut wrong = Vec::new();
    for route in table.routes() {
        if route.rpc.is_server_streaming() {
            continue;
        }
        let path = route.path_with(&Uuid::new_v4().to_string());
        let (status, _, body) = http.send(route.method.as_str(), &path, Value::Null).await;
        let mut refused: Vec<String> = if status == 400 { fields(&body) } else { Vec::new() };
        refused.sort();
        let path_fields: Vec<&str> = route.path_fields().collect();
        let input = route.rpc.input();
        let mut required: Vec<String> = mentorship::rest::openapi::required_paths(&input)
            .into_iter()
            .filter(|f| !path_fields.contains(&f.as_str()))
            .collect();
        // A oneof of a request is a choice the caller must make: left
        // unset, it is refused by the name of its first member.
        required.extend(
            input
                .oneofs()
                .filter(|o| !o.is_synthetic())
                .filter_map(|o| o.fields().next().map(|f| f.name().to_owned())),
        );
        required.sort();
        if refused != required {
            wrong.push(format!(
                "{}: refused {refused:?}, REQUIRED {required:?} ({status} {body})",
                route.rpc.name()
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
