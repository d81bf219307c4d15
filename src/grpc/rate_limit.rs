//! Rate limits per caller: a token bucket (GCRA, `governor`) per caller and
//! kind of call, on each replica. The caller is its token's `sub`, or its
//! IP address for calls that need no token (health, reflection). Reads,
//! writes and stream opens have budgets of their own (`server.rate_limits`),
//! so a caller that floods one kind still has the others, and a caller over
//! its budget is refused here, before its request is decoded or a
//! connection is taken, so it slows no one else: RESOURCE_EXHAUSTED,
//! RATE_LIMITED, with a RetryInfo saying when its bucket has room again.
//!
//! Which kind a call is comes from the contract, with no per-RPC code: a
//! server-streaming method opens a stream, a method whose request has a
//! `request_id` writes, and every other call reads. Calls refused by the
//! auth layer are not counted: they cost a signature check and touch no
//! database.

use std::{collections::HashMap, hash::Hash, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{Quota, RateLimiter, clock::Clock};
use uuid::Uuid;

use super::gate::Check;
use crate::domain::{Error, access::Principal};

/// One budget: a sustained rate and the burst a full bucket allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub per_second: u32,
    pub burst: u32,
}

/// The budgets of one caller on one replica (`server.rate_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub reads: Budget,
    pub writes: Budget,
    /// Streams opened (WatchSession, WatchSessions, ExportSessions,
    /// Health/Watch, reflection), not messages sent on them.
    pub streams: Budget,
}

impl Default for RateLimits {
    /// Far above what one person or one well-behaved service sends, far
    /// below what one caller needs to starve the others.
    fn default() -> Self {
        RateLimits {
            reads: Budget {
                per_second: 1000,
                burst: 2000,
            },
            writes: Budget {
                per_second: 200,
                burst: 400,
            },
            streams: Budget {
                per_second: 20,
                burst: 200,
            },
        }
    }
}

impl RateLimits {
    /// Every rate and burst is between 1 and 1,000,000.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, b) in [
            ("reads", self.reads),
            ("writes", self.writes),
            ("streams", self.streams),
        ] {
            for (value, field) in [(b.per_second, "per_second"), (b.burst, "burst")] {
                anyhow::ensure!(
                    (1..=1_000_000).contains(&value),
                    "server.rate_limits.{name}.{field} must be between 1 and 1000000"
                );
            }
        }
        Ok(())
    }
}

/// The kind of a call, and the budget it draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reads,
    Writes,
    Streams,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Reads => "reads",
            Kind::Writes => "writes",
            Kind::Streams => "streams",
        }
    }
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Caller {
    Sub(Uuid),
    Peer(IpAddr),
    /// Neither known (not over TCP): one bucket for all such calls.
    Unknown,
}

type Keyed = RateLimiter<Caller, governor::state::keyed::DefaultKeyedStateStore<Caller>, governor::clock::DefaultClock>;

/// The buckets of one replica.
#[derive(Debug)]
pub struct Limiters {
    limits: RateLimits,
    reads: Keyed,
    writes: Keyed,
    streams: Keyed,
    /// Each method's kind, by path (`/mentorship.v1.SessionService/GetSession`).
    kinds: HashMap<String, Kind>,
}

fn quota(b: Budget) -> Quota {
    let nonzero = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nonzero(b.per_second)).allow_burst(nonzero(b.burst))
}

impl Limiters {
    pub fn new(limits: RateLimits) -> Limiters {
        Limiters {
            limits,
            reads: RateLimiter::keyed(quota(limits.reads)),
            writes: RateLimiter::keyed(quota(limits.writes)),
            streams: RateLimiter::keyed(quota(limits.streams)),
            kinds: kinds(),
        }
    }

    /// The kind of the call to `path`: unknown paths (tonic answers them
    /// UNIMPLEMENTED) are reads.
    pub fn kind(&self, path: &str) -> Kind {
        self.kinds.get(path).copied().unwrap_or(Kind::Reads)
    }

    /// Takes one call of `kind` from `caller`'s bucket, or refuses it.
    fn take(&self, kind: Kind, caller: Caller) -> Result<(), Error> {
        let (limiter, budget) = match kind {
            Kind::Reads => (&self.reads, self.limits.reads),
            Kind::Writes => (&self.writes, self.limits.writes),
            Kind::Streams => (&self.streams, self.limits.streams),
        };
        limiter.check_key(&caller).map_err(|not_until| Error::RateLimited {
            budget: kind.name(),
            per_second: budget.per_second,
            burst: budget.burst,
            retry_after: not_until
                .wait_time_from(governor::clock::DefaultClock::default().now())
                .max(Duration::from_millis(1)),
        })
    }

    /// Forgets the buckets that have filled up again (they hold nothing a
    /// new one would not), so memory follows the callers of the last moments.
    pub fn forget_idle(&self) {
        for limiter in [&self.reads, &self.writes, &self.streams] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Buckets held now, for tests and metrics.
    pub fn buckets(&self) -> usize {
        self.reads.len() + self.writes.len() + self.streams.len()
    }
}

/// Every method of the contract and its kind, from the descriptor set.
fn kinds() -> HashMap<String, Kind> {
    let mut kinds = HashMap::from([
        ("/grpc.health.v1.Health/Check".to_owned(), Kind::Reads),
        ("/grpc.health.v1.Health/Watch".to_owned(), Kind::Streams),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned(),
            Kind::Streams,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".to_owned(),
            Kind::Streams,
        ),
    ]);
    let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(super::pb::FILE_DESCRIPTOR_SET) else {
        return kinds;
    };
    let messages: HashMap<String, &prost_types::DescriptorProto> = set
        .file
        .iter()
        .flat_map(|f| {
            f.message_type
                .iter()
                .map(move |m| (format!(".{}.{}", f.package(), m.name()), m))
        })
        .collect();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let writes = messages
                    .get(method.input_type())
                    .is_some_and(|m| m.field.iter().any(|f| f.name() == "request_id"));
                let kind = match (method.server_streaming(), writes) {
                    (true, _) => Kind::Streams,
                    (false, true) => Kind::Writes,
                    (false, false) => Kind::Reads,
                };
                kinds.insert(
                    format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    kind,
                );
            }
        }
    }
    kinds
}

/// See the module documentation (a [`Check`]). Goes after [`super::auth::Auth`],
/// which puts the verified caller in the request's extensions.
#[derive(Debug, Clone)]
pub struct RateLimit(pub Arc<Limiters>);

impl Check for RateLimit {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Error> {
        let caller = match req.extensions().get::<Principal>() {
            Some(p) => Caller::Sub(p.user_id),
            None => super::health_watch::peer_ip(req).map_or(Caller::Unknown, Caller::Peer),
        };
        self.0.take(self.0.kind(req.uri().path()), caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_draws_on_the_budget_of_its_kind() {
        let l = Limiters::new(RateLimits::default());
        assert_eq!(l.kind("/mentorship.v1.SessionService/GetSession"), Kind::Reads);
        assert_eq!(l.kind("/mentorship.v1.SessionService/ListSessions"), Kind::Reads);
        assert_eq!(l.kind("/mentorship.v1.SessionService/PauseSession"), Kind::Writes);
        assert_eq!(l.kind("/mentorship.v1.BookingService/CreateBooking"), Kind::Writes);
        assert_eq!(l.kind("/mentorship.v1.WebhookService/DeleteWebhook"), Kind::Writes);
        assert_eq!(l.kind("/mentorship.v1.SessionService/WatchSession"), Kind::Streams);
        assert_eq!(l.kind("/mentorship.v1.SessionService/ExportSessions"), Kind::Streams);
        assert_eq!(l.kind("/grpc.health.v1.Health/Watch"), Kind::Streams);
        assert_eq!(l.kind("/grpc.health.v1.Health/Check"), Kind::Reads);
        assert_eq!(l.kind("/nope/Nothing"), Kind::Reads);
    }

    #[test]
    fn a_bucket_allows_its_burst_then_says_when_to_come_back_and_each_caller_has_its_own() {
        let one = Budget {
            per_second: 1,
            burst: 3,
        };
        let l = Limiters::new(RateLimits {
            reads: one,
            writes: one,
            streams: one,
        });
        let alice = Caller::Sub(Uuid::new_v4());
        for _ in 0..3 {
            l.take(Kind::Reads, alice).expect("within the burst");
        }
        match l.take(Kind::Reads, alice) {
            Err(Error::RateLimited {
                budget, retry_after, ..
            }) => {
                assert_eq!(budget, "reads");
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
        l.take(Kind::Writes, alice).expect("writes have their own budget");
        l.take(Kind::Reads, Caller::Sub(Uuid::new_v4()))
            .expect("bob has his own bucket");
        l.take(Kind::Reads, Caller::Peer([127, 0, 0, 2].into()))
            .expect("and so has an address");
        assert_eq!(l.buckets(), 4);
    }
}
