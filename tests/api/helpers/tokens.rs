//! Tokens for the suite's callers, and requests that carry them.

use chrono::{Duration, Utc};
use mentorship::grpc::auth::{Claims, mint_hs256};
use tonic::Request;
use uuid::Uuid;

use super::*;

/// Token claims for a caller.
pub fn claims(roles: &[&str], sub: Uuid, mentor_id: Option<Uuid>, ttl: Duration) -> Claims {
    Claims {
        sub: sub.to_string(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        mentor_id: mentor_id.map(|m| m.to_string()),
        exp: (Utc::now() + ttl).timestamp(),
        iat: Some(Utc::now().timestamp()),
        ..Claims::default()
    }
}

pub fn token(roles: &[&str], sub: Uuid, mentor_id: Option<Uuid>) -> String {
    mint_hs256(SECRET, &claims(roles, sub, mentor_id, Duration::hours(1))).expect("mint")
}

pub fn coordinator() -> String {
    token(&["coordinator"], Uuid::new_v4(), None)
}

pub fn service() -> String {
    token(&["service"], Uuid::new_v4(), None)
}

/// Wraps a message with a bearer token ("" sends none).
pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if !token.is_empty() {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().expect("header"));
    }
    req
}
