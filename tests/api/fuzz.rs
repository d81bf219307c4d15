//! Every request parser against generated requests: structure-aware (built
//! field by field from the proto descriptors, with hostile strings, extreme
//! numbers and timestamps, unknown enum values, deep and long repeats), in
//! process by the hundred thousand and through gRPC by the hundred. No input
//! may panic, and a rejected call stores nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mentorship::grpc::{Parse, pb};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::helpers::*;

/// Each request type: its full proto name, a parse of encoded bytes (in
/// process) and, for unary RPCs, a call through gRPC.
macro_rules! requests {
    (unary: [$($unary:ident),* $(,)?], streaming: [$($streaming:ident),* $(,)?]) => {
        const REQUESTS: &[&str] = &[
            $(concat!("mentorship.v1.", stringify!($unary)),)*
            $(concat!("mentorship.v1.", stringify!($streaming)),)*
        ];

        /// Decodes `bytes` as the `i`th request type and parses it.
        fn parse(i: usize, bytes: &[u8]) {
            let mut n = 0;
            $(
                if n == i {
                    if let Ok(request) = pb::$unary::decode(bytes) {
                        let _ = request.parse();
                    }
                    return;
                }
                n += 1;
            )*
            $(
                if n == i {
                    if let Ok(request) = pb::$streaming::decode(bytes) {
                        let _ = request.parse();
                    }
                    return;
                }
                n += 1;
            )*
            let _ = n;
        }

        /// Sends `bytes` as the `i`th request type when it is a unary RPC's
        /// and decodes; the code it was refused with, if it was.
        async fn send(i: usize, bytes: &[u8], caller: &Caller) -> Option<Option<tonic::Code>> {
            let mut n = 0;
            $(
                if n == i {
                    let request = pb::$unary::decode(bytes).ok()?;
                    return Some(caller.call(request).await.err().map(|s| s.code()));
                }
                n += 1;
            )*
            let _ = n;
            None
        }
    };
}

requests!(
    unary: [
        UpsertMenteeRequest,
        GetMenteeRequest,
        UpsertMentorRequest,
        GetMentorRequest,
        ListMentorsRequest,
        UpsertListingRequest,
        GetListingRequest,
        ListListingsRequest,
        CreateBookingRequest,
        GetBookingRequest,
        ListBookingsRequest,
        AcceptBookingRequest,
        ListAvailableSlotsRequest,
        RescheduleBookingRequest,
        BatchGetBookingsRequest,
        BatchGetSessionsRequest,
        UpdateSessionNotesRequest,
        DeclineBookingRequest,
        CancelBookingRequest,
        ListBookingEventsRequest,
        CreateSessionRequest,
        GetSessionRequest,
        ListSessionsRequest,
        StartSessionRequest,
        PauseSessionRequest,
        ResumeSessionRequest,
        CompleteSessionRequest,
        FailSessionRequest,
        CancelSessionRequest,
        AdvanceStageRequest,
        RecordCheckInRequest,
        ListSessionEventsRequest,
        GetSessionTimelineRequest,
        CompareSessionsRequest,
        GetSessionConfigRequest,
        UpdateSessionConfigRequest,
        ListConfigTemplatesRequest,
        ReassignMentorRequest,
        ListMentorAssignmentsRequest,
        GetQueueStatusRequest,
        CreateWebhookRequest,
        GetWebhookRequest,
        ListWebhooksRequest,
        UpdateWebhookRequest,
        DeleteWebhookRequest,
        RotateWebhookSecretRequest,
        ListDeliveriesRequest,
        RetryDeliveryRequest,
    ],
    streaming: [ExportSessionsRequest, WatchSessionRequest, WatchSessionsRequest]
);

fn pool() -> DescriptorPool {
    DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the service's descriptors")
}

/// Strings that have broken parsers somewhere.
const STRINGS: &[&str] = &[
    "",
    " ",
    "0191d3a4-7c1e-7000-8000-000000000001",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    "\0",
    "a\0b",
    "\u{202e}reversed",
    "é",
    "🦀🦀",
    "09:00",
    "24:00",
    "23:59",
    "25:99",
    "9:00",
    "Europe/Berlin",
    "America/New_York",
    "Mars/Olympus",
    "UTC",
    "review",
    "Review Stage",
    "a.b-c_d",
    "-1",
    "9999999999999999999999",
    "AAAA",
    "////",
    "v1:1:2",
    "v1:-1:0",
    "v1:9223372036854775807:9223372036854775807",
    "eyJhIjoxfQ",
    "start_time desc",
    "status = 'ACTIVE'",
    "someone@example.com",
    "@",
    "x@y",
];

fn string(rng: &mut StdRng) -> String {
    match rng.random_range(0..10) {
        0 => "x".repeat(rng.random_range(0..6000)),
        1 => "é".repeat(rng.random_range(0..300)),
        2 => (0..rng.random_range(0..40))
            .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('?'))
            .collect(),
        3 => uuid::Uuid::new_v4().to_string(),
        _ => STRINGS[rng.random_range(0..STRINGS.len())].to_owned(),
    }
}

fn int64(rng: &mut StdRng) -> i64 {
    const EDGES: [i64; 12] = [
        0,
        1,
        -1,
        i64::MIN,
        i64::MAX,
        253_402_300_800, // year 10000
        -62_135_596_801, // before year 1
        1_800_000_000,
        86_400,
        999_999_999,
        1_000_000_000,
        i32::MAX as i64 + 1,
    ];
    if rng.random_bool(0.6) {
        EDGES[rng.random_range(0..EDGES.len())]
    } else {
        rng.random()
    }
}

fn int32(rng: &mut StdRng) -> i32 {
    const EDGES: [i32; 10] = [
        0,
        1,
        -1,
        i32::MIN,
        i32::MAX,
        100,
        101,
        1_000,
        999_999_999,
        1_000_000_000,
    ];
    if rng.random_bool(0.6) {
        EDGES[rng.random_range(0..EDGES.len())]
    } else {
        rng.random()
    }
}

fn value(kind: &Kind, rng: &mut StdRng, depth: usize) -> Value {
    match kind {
        Kind::String => Value::String(string(rng)),
        Kind::Bytes => Value::Bytes((0..rng.random_range(0..16)).map(|_| rng.random::<u8>()).collect()),
        Kind::Bool => Value::Bool(rng.random()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(int32(rng)),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int64(rng)),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int32(rng) as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(int64(rng) as u64),
        Kind::Float => Value::F32([0.0, -0.0, f32::NAN, f32::INFINITY, 1e30, 0.5][rng.random_range(0..6)]),
        Kind::Double => Value::F64([0.0, -0.0, f64::NAN, f64::INFINITY, 1e300, 0.5, 50.0][rng.random_range(0..7)]),
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(if rng.random_bool(0.85) {
                known[rng.random_range(0..known.len())]
            } else {
                int32(rng)
            })
        }
        Kind::Message(m) => Value::Message(message(m, rng, depth + 1)),
    }
}

/// A message with a random subset of its fields set.
fn message(desc: &MessageDescriptor, rng: &mut StdRng, depth: usize) -> DynamicMessage {
    let mut m = DynamicMessage::new(desc.clone());
    if depth > 5 {
        return m;
    }
    for field in desc.fields() {
        if rng.random_bool(0.3) {
            continue;
        }
        let kind = field.kind();
        let v = if field.is_map() {
            let entry = kind.as_message().expect("map entry").clone();
            let value_kind = entry.map_entry_value_field().kind();
            let n = if rng.random_bool(0.05) {
                300
            } else {
                rng.random_range(0..4)
            };
            Value::Map(
                (0..n)
                    .map(|_| (MapKey::String(string(rng)), value(&value_kind, rng, depth)))
                    .collect(),
            )
        } else if field.is_list() {
            let n = if rng.random_bool(0.05) {
                500
            } else {
                rng.random_range(0..4)
            };
            Value::List((0..n).map(|_| value(&kind, rng, depth)).collect())
        } else {
            value(&kind, rng, depth)
        };
        m.set_field(&field, v);
    }
    m
}

/// The `n`th generated request: its type and its encoding.
fn generated(descriptors: &[MessageDescriptor], seed: u64, n: u64) -> (usize, Vec<u8>) {
    let mut rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let i = (n % descriptors.len() as u64) as usize;
    let mut bytes = message(&descriptors[i], &mut rng, 0).encode_to_vec();
    if rng.random_bool(0.02) {
        // Raw damage too: flipped bytes, a truncated tail.
        let at = rng.random_range(0..=bytes.len());
        bytes.truncate(at);
        if let Some(b) = bytes.last_mut() {
            *b ^= 0xff;
        }
    }
    (i, bytes)
}

fn descriptors() -> Vec<MessageDescriptor> {
    let pool = pool();
    REQUESTS
        .iter()
        .map(|name| {
            pool.get_message_by_name(name)
                .unwrap_or_else(|| panic!("{name} in the descriptors"))
        })
        .collect()
}

/// Every request type is covered: the list matches the services' inputs.
#[test]
fn the_fuzzed_requests_are_every_rpcs_input() {
    let pool = pool();
    let mut inputs: Vec<String> = pool
        .services()
        .filter(|s| s.package_name() == "mentorship.v1")
        .flat_map(|s| {
            s.methods()
                .map(|m| m.input().full_name().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    inputs.sort();
    inputs.dedup();
    let mut listed: Vec<String> = REQUESTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(inputs, listed);
}

/// 100,000 generated requests in process (1,000,000 at full scale), spread
/// over every parser: none panics.
#[test]
fn no_generated_request_makes_a_parser_panic() {
    let descriptors = descriptors();
    let seed: u64 = std::env::var("MENTORSHIP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    let cases = scale(100_000, 1_000_000) as u64;
    // Two threads at most: other tests run beside this one.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2) as u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let descriptors = &descriptors;
            scope.spawn(move || {
                for n in (t..cases).step_by(threads as usize) {
                    let (i, bytes) = generated(descriptors, seed, n);
                    if catch_unwind(AssertUnwindSafe(|| parse(i, &bytes))).is_err() {
                        panic!(
                            "{} panicked on case {n} (MENTORSHIP_FUZZ_SEED={seed}); its bytes: {bytes:?}",
                            REQUESTS[i]
                        );
                    }
                }
            });
        }
    });
}

/// A sample through gRPC, against the real server and database: nothing
/// panics (every call is answered), and a refused call stores nothing.
#[tokio::test]
async fn generated_requests_through_grpc_store_nothing_when_refused() {
    let app = spawn_app().await;
    let w = world(&app).await;
    let _ = scheduled(&app, &w, monday_at(10)).await;
    let caller = app.coordinator();
    let descriptors = descriptors();
    let (mut refused, mut sent) = (0, 0);
    for n in 0..scale(300, 3_000) as u64 {
        let (i, bytes) = generated(&descriptors, 0x6E7C, n);
        let before = app.stored_counts().await;
        // Streams (their parsers run in process above) and undecodable bytes are not sent.
        let Some(refusal) = send(i, &bytes, &caller).await else {
            continue;
        };
        sent += 1;
        if let Some(code) = refusal {
            // A panic or an unexpected failure would answer INTERNAL or UNKNOWN.
            assert!(
                !matches!(code, tonic::Code::Internal | tonic::Code::Unknown),
                "{} answered {code:?}",
                REQUESTS[i]
            );
            refused += 1;
            assert_eq!(
                app.stored_counts().await,
                before,
                "{} refused yet stored something",
                REQUESTS[i]
            );
        }
    }
    assert!(sent > 200 && refused > 100, "{sent} sent, {refused} refused");
}
