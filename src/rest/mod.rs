//! The HTTP/JSON edge: REST routes from the contract's `google.api.http`
//! annotations, transcoded in-process into the gRPC call of the same RPC
//! and sent through the same tower stack (as Envoy's gRPC-JSON transcoder
//! and grpc-gateway do). Auth, the role table, rate limits, deadlines,
//! metrics, spans, parsing, idempotency and the error table are the gRPC
//! edge's, run once; this edge only reads HTTP and writes HTTP.
//!
//! The request message is built inside the request's body, which the gRPC
//! handler reads only after the layers in front of it have let the call
//! through: a call without a token is refused (401) before its JSON is read.

pub mod openapi;
pub(crate) mod reply;
pub(crate) mod request;
pub mod routes;
mod stream;

use std::{
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use crate::grpc::layer::{Answer, Around, AroundLayer};

use crate::domain::{Error, error::Reason};
use routes::{Shared, Table};

/// The largest request body, as the gRPC message limit (4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Where the OpenAPI document is served, without a token.
pub const OPENAPI_PATH: &str = "/api/mentorship/openapi.json";

/// The contract's descriptors (with the vendored `google.api` and
/// `google.rpc` files).
pub fn descriptors() -> DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::grpc::pb::FILE_DESCRIPTOR_SET).expect("the built descriptor set decodes")
    })
    .clone()
}

/// The layer of the HTTP/JSON edge, outermost but CORS.
#[derive(Debug, Clone)]
pub struct Rest(Arc<Shared>);

impl Rest {
    /// `keepalive`: how often an idle event stream gets a comment line;
    /// `exports_json_lines`: whether exports are JSON lines by default.
    pub fn layer(keepalive: Duration, exports_json_lines: bool) -> anyhow::Result<AroundLayer<Rest>> {
        let pool = descriptors();
        let table = Table::from_pool(&pool)?;
        let status_type = pool
            .get_message_by_name("google.rpc.Status")
            .ok_or_else(|| anyhow::anyhow!("the descriptor set lacks google.rpc.Status"))?;
        let openapi = Bytes::from(openapi::document_bytes(&pool, &table));
        Ok(AroundLayer(Rest(Arc::new(Shared {
            table,
            status_type,
            openapi,
            keepalive,
            exports_json_lines,
        }))))
    }
}

impl Around<tonic::body::Body> for Rest {
    fn around<S>(&self, mut inner: S, req: http::Request<tonic::body::Body>) -> Answer<S::Error>
    where
        S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        // Anything that is not gRPC (or gRPC-web) is this edge's: a route, or a 404.
        if is_grpc(&req) {
            return Box::pin(inner.call(req));
        }
        Box::pin(handle(self.0.clone(), inner, req))
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// gRPC and gRPC-web calls go straight through.
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"))
}

async fn handle<S>(
    shared: Arc<Shared>,
    inner: S,
    req: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, S::Error>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    let (parts, body) = req.into_parts();
    let refuse = |err: Error, code: Option<StatusCode>| Ok(reply::error(&Status::from(err), &shared.status_type, code));
    if parts.method == http::Method::GET && parts.uri.path() == OPENAPI_PATH {
        let mut response = reply::respond(StatusCode::OK, shared.openapi.to_vec());
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(response);
    }
    let Some((route, captures)) = shared.table.find(&parts.method, parts.uri.path()) else {
        return refuse(Error::NoRoute(format!("{} {}", parts.method, parts.uri.path())), None);
    };
    let route = route.clone();
    // A body declared too large is refused before anything is read.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return refuse(too_large(), Some(StatusCode::PAYLOAD_TOO_LARGE));
    }
    // A malformed deadline is refused from inside the call, after the token.
    let (timeout, refused) = match request_timeout(&parts.headers) {
        Ok(t) => (t, None),
        Err(err) => (None, Some(err)),
    };
    // A header that is not text is kept as text no rule accepts.
    let header_text = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").to_owned())
    };
    let fields = request::Parts {
        captures,
        query: parts.uri.query().map(str::to_owned),
        content_type: header_text("content-type"),
        idempotency_key: header_text("idempotency-key"),
        if_match: request::if_match(parts.headers.get(header::IF_MATCH)),
        last_event_id: header_text("last-event-id"),
        refused,
    };
    let guarded = matches!(fields.if_match, Ok(Some(_)));
    let overflowed = Arc::new(AtomicBool::new(false));
    let built: Arc<OnceLock<DynamicMessage>> = Arc::new(OnceLock::new());
    let deferred = Deferred::new({
        let route = route.clone();
        let overflowed = overflowed.clone();
        let built = built.clone();
        let reads_body = route.body != routes::BodyRule::None;
        async move {
            let bytes = if reads_body {
                read_body(body, &overflowed).await?
            } else {
                Bytes::new()
            };
            let message = request::build(&route, &bytes, &fields).map_err(Status::from)?;
            let framed = reply::frame(&message.encode_to_vec());
            let _ = built.set(message);
            Ok(framed)
        }
    });

    let mut call = http::Request::new(tonic::body::Body::new(deferred));
    *call.method_mut() = http::Method::POST;
    *call.version_mut() = http::Version::HTTP_2;
    *call.uri_mut() = http::Uri::try_from(route.grpc_path.as_str()).unwrap_or_default();
    *call.extensions_mut() = parts.extensions;
    let headers = call.headers_mut();
    // gRPC's own headers are the edge's to set (a REST caller's
    // `grpc-encoding` would make the call unreadable).
    for (name, value) in &parts.headers {
        let text = name.as_str();
        if !matches!(
            text,
            "content-type" | "content-length" | "transfer-encoding" | "connection" | "te"
        ) && !text.starts_with("grpc-")
        {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", timeout);
    }

    let response = inner.oneshot(call).await?;
    if route.rpc.is_server_streaming() {
        return Ok(stream::respond(&shared, &route, response, built).await);
    }
    let mut frames = reply::Frames::new(response);
    let answer = frames.next().await;
    let answer = match answer {
        Ok(message) => match frames.next().await {
            Err(status) if status.code() == Code::Ok => Ok(message),
            Err(status) => Err(status),
            Ok(_) => Err(Status::internal("a unary call answered more than once")),
        },
        Err(status) => Err(status),
    };
    Ok(match answer {
        Ok(message) => match DynamicMessage::decode(route.rpc.output(), message) {
            Ok(message) => ok(&message),
            Err(err) => reply::error(
                &Status::internal(format!("the answer did not decode: {err}")),
                &shared.status_type,
                None,
            ),
        },
        Err(status) => {
            let override_code = if overflowed.load(Ordering::Relaxed) {
                Some(StatusCode::PAYLOAD_TOO_LARGE)
            } else if guarded && status.code() == Code::Aborted && is_etag_mismatch(&status) {
                Some(StatusCode::PRECONDITION_FAILED)
            } else {
                None
            };
            reply::error(&status, &shared.status_type, override_code)
        }
    })
}

/// 200 with the message, and its resource's `ETag` when it has one.
fn ok(message: &DynamicMessage) -> http::Response<tonic::body::Body> {
    let mut response = reply::respond(StatusCode::OK, reply::json(message));
    if let Some(tag) = resource_etag(message)
        && let Ok(value) = HeaderValue::from_str(&format!("\"{tag}\""))
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// The etag of the one resource an answer carries (`session`, `webhook`…).
fn resource_etag(message: &DynamicMessage) -> Option<String> {
    let mut found = None;
    for (field, value) in message.fields() {
        if let prost_reflect::Value::Message(resource) = value
            && !field.is_list()
            && let Some(prost_reflect::Value::String(tag)) = resource.get_field_by_name("etag").as_deref()
            && !tag.is_empty()
        {
            if found.is_some() {
                return None;
            }
            found = Some(tag.clone());
        }
    }
    found
}

fn is_etag_mismatch(status: &Status) -> bool {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == Reason::EtagMismatch.as_str())
}

fn too_large() -> Error {
    Error::ResourceExhausted {
        reason: Reason::RequestTooLarge,
        message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        metadata: vec![("limit", MAX_BODY_BYTES.to_string())],
    }
}

/// `Request-Timeout: <seconds>` as a `grpc-timeout` (milliseconds).
fn request_timeout(headers: &http::HeaderMap) -> Result<Option<HeaderValue>, Error> {
    let Some(raw) = headers.get("request-timeout") else {
        return Ok(None);
    };
    let bad = || Error::invalid("Request-Timeout", "must be a positive number of seconds, such as 2.5");
    let seconds: f64 = raw.to_str().map_err(|_| bad())?.trim().parse().map_err(|_| bad())?;
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(bad());
    }
    // grpc-timeout takes at most 8 digits.
    let millis = (seconds * 1000.0).ceil().min(99_999_999.0) as u64;
    HeaderValue::from_str(&format!("{millis}m"))
        .map(Some)
        .map_err(|_| bad())
}

/// The body, read whole up to [`MAX_BODY_BYTES`].
async fn read_body(body: tonic::body::Body, overflowed: &AtomicBool) -> Result<Bytes, Status> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            overflowed.store(true, Ordering::Relaxed);
            Err(too_large().into())
        }
        Err(err) => Err(Error::invalid("body", format!("could not be read: {err}")).into()),
    }
}

/// A body whose one frame is made when it is first read.
struct Deferred {
    make: Option<BoxFuture<Result<Bytes, Status>>>,
}

impl Deferred {
    fn new(make: impl std::future::Future<Output = Result<Bytes, Status>> + Send + 'static) -> Deferred {
        Deferred {
            make: Some(Box::pin(make)),
        }
    }
}

impl http_body::Body for Deferred {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let Some(make) = self.make.as_mut() else {
            return Poll::Ready(None);
        };
        match make.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.make = None;
                Poll::Ready(Some(result.map(http_body::Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.make.is_none()
    }
}

/// CORS for browsers, for the allowed origins only (none: no layer). It
/// allows the headers the API reads and exposes the ones it answers.
pub fn cors(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use http::header::HeaderName;
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o))
        .collect::<Result<Vec<_>, _>>()?;
    let names = |names: &[&'static str]| names.iter().map(|n| HeaderName::from_static(n)).collect::<Vec<_>>();
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PUT,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers(names(&[
                "authorization",
                "content-type",
                "idempotency-key",
                "if-match",
                "request-timeout",
                "last-event-id",
                "x-grpc-web",
                "x-user-agent",
                "grpc-timeout",
            ]))
            .expose_headers(names(&[
                "grpc-status",
                "grpc-message",
                "grpc-status-details-bin",
                "etag",
                "www-authenticate",
            ]))
            .max_age(Duration::from_secs(600)),
    ))
}
