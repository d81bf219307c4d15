//! Identity (SPEC §7) and the first access check (SPEC §6): a gate
//! (`grpc::gate`) verifies the bearer JWT once, checks that the caller's roles may ever call
//! the RPC (`domain::access::RPC_CALLERS`), and only then lets the request
//! through, with the [`Principal`] and the [`Method`] in its extensions. So a
//! caller who may never call an RPC is refused before its request is even
//! decoded. Health and reflection need no token; every `mentorship.v1` call does.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::gate::Check;

use crate::domain::{
    Error,
    access::{Principal, Role, rpc_callers},
};

/// Token claims (SPEC §7).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentor_id: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Not valid before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// The shortest HS256 secret accepted: 256 bits, the hash's size (RFC 7518
/// §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The claims read from a verified token. `exp`, `nbf`, `iss` and `aud` are
/// checked by jsonwebtoken itself (which accepts `aud` as a string or an
/// array); the lifetime here.
#[derive(Debug, Deserialize)]
struct TokenClaims {
    sub: String,
    /// NumericDate: seconds, possibly fractional (RFC 7519 §2).
    exp: f64,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    mentor_id: Option<String>,
}

/// Verifies bearer tokens with one key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// The longest a token may live, from `iat` (or now, when that is
    /// earlier or absent) to `exp`.
    max_lifetime: Option<std::time::Duration>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// HS256 with a shared secret of at least [`MIN_HS256_SECRET_BYTES`].
    pub fn hs256(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> anyhow::Result<Verifier> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            anyhow::bail!(
                "an HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes, got {} (RFC 7518 §3.2)",
                secret.len()
            );
        }
        Ok(Verifier::with(
            DecodingKey::from_secret(secret),
            &[Algorithm::HS256],
            issuer,
            audience,
        ))
    }

    /// Refuses tokens that live longer than `max` (from `iat`, or from now
    /// when `iat` is absent or later, to `exp`).
    pub fn with_max_lifetime(mut self, max: Option<std::time::Duration>) -> Verifier {
        self.max_lifetime = max;
        self
    }

    /// RS256 or ES256 with a PEM public key (the key type decides which).
    pub fn public_key(pem: &[u8], issuer: Option<&str>, audience: Option<&str>) -> anyhow::Result<Verifier> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Verifier::with(key, &[Algorithm::RS256], issuer, audience));
        }
        let key = DecodingKey::from_ec_pem(pem)
            .map_err(|e| anyhow::anyhow!("the public key is neither an RSA nor an EC PEM key: {e}"))?;
        Ok(Verifier::with(key, &[Algorithm::ES256], issuer, audience))
    }

    fn with(key: DecodingKey, algorithms: &[Algorithm], issuer: Option<&str>, audience: Option<&str>) -> Verifier {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Verifier {
            key,
            validation,
            max_lifetime: None,
        }
    }

    /// Checks an `authorization` header value and builds the principal.
    pub fn verify(&self, header: Option<&str>) -> Result<Principal, String> {
        let header = header.ok_or("missing authorization header; send `authorization: Bearer <JWT>`")?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or("the authorization header must be `Bearer <JWT>`")?
            .trim();
        let data = decode::<TokenClaims>(token, &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
                ErrorKind::InvalidSignature => "the token signature is invalid".to_owned(),
                ErrorKind::InvalidIssuer => "the token issuer is not accepted".to_owned(),
                ErrorKind::InvalidAudience => "the token audience is not accepted".to_owned(),
                ErrorKind::InvalidAlgorithm => "the token algorithm is not accepted".to_owned(),
                ErrorKind::MissingRequiredClaim(c) => format!("the token lacks the `{c}` claim"),
                _ => "the token is malformed".to_owned(),
            }
        })?;
        let claims = data.claims;
        if let Some(max) = self.max_lifetime {
            let now = now() as f64;
            let from = claims.iat.map_or(now, |iat| iat.min(now));
            let lifetime = claims.exp - from;
            if lifetime > max.as_secs_f64() + LEEWAY_SECONDS as f64 {
                return Err(format!(
                    "the token lives {lifetime:.0} s, longer than the {} s this server accepts",
                    max.as_secs()
                ));
            }
        }
        let user_id = Uuid::try_parse(&claims.sub).map_err(|_| "the token `sub` must be a UUID".to_owned())?;
        let mentor_id = claims
            .mentor_id
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(Uuid::try_parse)
            .transpose()
            .map_err(|_| "the token `mentor_id` must be a UUID".to_owned())?;
        let roles = claims.roles.iter().filter_map(|r| Role::parse(r));
        Ok(Principal::new(user_id, roles, mentor_id))
    }
}

/// Clock skew allowed on `exp`, `nbf` and the lifetime, in seconds.
const LEEWAY_SECONDS: u64 = 5;

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs an HS256 token (development tokens and tests).
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> anyhow::Result<String> {
    Ok(encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )?)
}

/// The RPC a request calls (its method name, e.g. `StartSession`), set by [`Auth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Method(pub &'static str);

/// The check that authenticates `mentorship.v1` calls and checks their
/// roles (a [`Check`]: `Gate::layer(Auth::new(verifier))`).
#[derive(Clone, Debug)]
pub struct Auth {
    verifier: Arc<Verifier>,
}

impl Auth {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Auth { verifier }
    }

    /// Authentication, then the RPC's roles. An unknown method passes with no
    /// [`Method`]: tonic answers it UNIMPLEMENTED.
    fn admit(&self, header: Option<&str>, method: &str) -> Result<(Principal, Option<Method>), Error> {
        let principal = self.verifier.verify(header).map_err(Error::Unauthenticated)?;
        tracing::Span::current().record("sub", tracing::field::display(principal.user_id));
        let Some((name, roles)) = rpc_callers(method) else {
            return Ok((principal, None));
        };
        principal.may_call(name, roles)?;
        Ok((principal, Some(Method(name))))
    }
}

/// Paths under this prefix need a token.
const PROTECTED_PREFIX: &str = "/mentorship.v1.";

impl Check for Auth {
    /// Puts the [`Principal`] and the [`Method`] in the request's extensions.
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Error> {
        let Some(method) = req.uri().path().strip_prefix(PROTECTED_PREFIX) else {
            return Ok(());
        };
        let method = method.rsplit('/').next().unwrap_or_default();
        let header = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let (principal, method) = self.admit(header, method)?;
        let extensions = req.extensions_mut();
        extensions.insert(principal);
        if let Some(method) = method {
            extensions.insert(method);
        }
        Ok(())
    }
}

/// The verified caller of a request (set by [`Auth`]).
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Error::Unauthenticated("no verified caller".into()).into())
}

/// The RPC of a request (set by [`Auth`]).
pub fn method<T>(req: &tonic::Request<T>) -> Result<&'static str, tonic::Status> {
    req.extensions().get::<Method>().map(|m| m.0).ok_or_else(|| {
        Error::Internal(anyhow::anyhow!(
            "a call reached its handler without passing the auth layer"
        ))
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn claims(roles: &[&str], ttl: i64) -> Claims {
        Claims {
            sub: Uuid::new_v4().to_string(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            mentor_id: None,
            exp: chrono::Utc::now().timestamp() + ttl,
            iss: Some("issuer".into()),
            aud: Some("mentorship".into()),
            ..Claims::default()
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
    }

    /// Every method of the three services has a row in the role table, and
    /// every row names a served method.
    #[test]
    fn the_role_table_covers_exactly_the_served_rpcs() {
        use crate::domain::access::RPC_CALLERS;
        let set: prost_types::FileDescriptorSet =
            prost::Message::decode(crate::grpc::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut served: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter_map(|m| m.name.clone())
            .collect();
        served.sort();
        let mut table: Vec<String> = RPC_CALLERS.iter().map(|(m, _)| m.to_string()).collect();
        table.sort();
        assert_eq!(served, table);
    }

    #[test]
    fn asymmetric_keys_verify_their_own_signatures_only() {
        for (alg, private, public, constructor) in [
            (
                Algorithm::ES256,
                "es256-private.pem",
                "es256-public.pem",
                EncodingKey::from_ec_pem as fn(&[u8]) -> _,
            ),
            (
                Algorithm::RS256,
                "rs256-private.pem",
                "rs256-public.pem",
                EncodingKey::from_rsa_pem,
            ),
        ] {
            let key = constructor(&fixture(private)).expect("private key");
            let token = encode(&Header::new(alg), &claims(&["service"], 60), &key).expect("sign");
            let verifier =
                Verifier::public_key(&fixture(public), Some("issuer"), Some("mentorship")).expect("verifier");
            let principal = verifier.verify(Some(&format!("Bearer {token}"))).expect("valid");
            assert_eq!(principal.roles, vec![Role::Service]);
            // An HS256 token is refused by an asymmetric verifier (no algorithm confusion).
            let hs = mint_hs256(SECRET, &claims(&["service"], 60)).expect("mint");
            assert!(verifier.verify(Some(&format!("Bearer {hs}"))).is_err());
        }
    }

    #[test]
    fn issuer_audience_expiry_and_format_are_checked() {
        let secret = SECRET;
        let verifier = Verifier::hs256(secret, Some("issuer"), Some("mentorship")).expect("verifier");
        let bearer = |c: &Claims| format!("Bearer {}", mint_hs256(secret, c).expect("mint"));
        assert!(verifier.verify(Some(&bearer(&claims(&["mentee"], 60)))).is_ok());
        let wrong_iss = Claims {
            iss: Some("other".into()),
            ..claims(&["mentee"], 60)
        };
        assert!(
            verifier
                .verify(Some(&bearer(&wrong_iss)))
                .unwrap_err()
                .contains("issuer")
        );
        let wrong_aud = Claims {
            aud: Some("other".into()),
            ..claims(&["mentee"], 60)
        };
        assert!(
            verifier
                .verify(Some(&bearer(&wrong_aud)))
                .unwrap_err()
                .contains("audience")
        );
        assert!(
            verifier
                .verify(Some(&bearer(&claims(&["mentee"], -600))))
                .unwrap_err()
                .contains("expired")
        );
        let bad_sub = Claims {
            sub: "alice".into(),
            ..claims(&["mentee"], 60)
        };
        assert!(verifier.verify(Some(&bearer(&bad_sub))).unwrap_err().contains("sub"));
        assert!(verifier.verify(None).is_err());
        assert!(verifier.verify(Some("Basic abc")).is_err());
        assert!(verifier.verify(Some("Bearer not.a.jwt")).is_err());
        let unknown = verifier
            .verify(Some(&bearer(&claims(&["wizard"], 60))))
            .expect("valid token");
        assert!(unknown.roles.is_empty(), "unknown roles grant nothing");
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = Verifier::hs256(&SECRET[..31], None, None).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes, got 31"), "{err}");
        assert!(Verifier::hs256(SECRET, None, None).is_ok());
    }

    #[test]
    fn not_before_is_checked() {
        let verifier = Verifier::hs256(SECRET, Some("issuer"), Some("mentorship")).expect("verifier");
        let bearer = |c: &Claims| format!("Bearer {}", mint_hs256(SECRET, c).expect("mint"));
        let later = Claims {
            nbf: Some(now() + 600),
            ..claims(&["mentee"], 3600)
        };
        assert!(verifier.verify(Some(&bearer(&later))).unwrap_err().contains("nbf"));
        let began = Claims {
            nbf: Some(now() - 10),
            ..claims(&["mentee"], 3600)
        };
        assert!(verifier.verify(Some(&bearer(&began))).is_ok());
    }

    #[test]
    fn a_maximum_lifetime_refuses_longer_lived_tokens() {
        let verifier = Verifier::hs256(SECRET, Some("issuer"), Some("mentorship"))
            .expect("verifier")
            .with_max_lifetime(Some(std::time::Duration::from_secs(3600)));
        let bearer = |c: &Claims| format!("Bearer {}", mint_hs256(SECRET, c).expect("mint"));
        // An hour from now, with or without `iat`: accepted.
        assert!(verifier.verify(Some(&bearer(&claims(&["mentee"], 3600)))).is_ok());
        let issued = Claims {
            iat: Some(now() - 600),
            ..claims(&["mentee"], 3000)
        };
        assert!(verifier.verify(Some(&bearer(&issued))).is_ok());
        // A day: refused, and so is a token issued two hours ago for three.
        let day = claims(&["mentee"], 86_400);
        assert!(
            verifier
                .verify(Some(&bearer(&day)))
                .unwrap_err()
                .contains("longer than the 3600 s")
        );
        let old = Claims {
            iat: Some(now() - 7200),
            ..claims(&["mentee"], 3600)
        };
        assert!(verifier.verify(Some(&bearer(&old))).is_err());
        // An `iat` in the future does not shorten the lifetime counted.
        let future = Claims {
            iat: Some(now() + 86_000),
            ..claims(&["mentee"], 86_400)
        };
        assert!(verifier.verify(Some(&bearer(&future))).is_err());
        // Without a maximum, a day is fine.
        let open = Verifier::hs256(SECRET, Some("issuer"), Some("mentorship")).expect("verifier");
        assert!(open.verify(Some(&bearer(&day))).is_ok());
    }
}
