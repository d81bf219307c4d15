//! Call metrics, as go-grpc-prometheus names them: `grpc_server_started_total`
//! when a call comes in, `grpc_server_handled_total` (by code) and
//! `grpc_server_handling_seconds` when its status is known. That is the
//! response headers of an error (trailers-only), or the trailers at the end of
//! the body: for a stream, when it ends. A call dropped before its status
//! (the client went away, unary or stream) counts as CANCELLED.
//!
//! Methods are labelled from the served descriptors; any other path is
//! `unknown`, so a client cannot grow the label sets.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Instant,
};

use prost::Message;
use tower::Service;

use super::layer::{Answer, Around, AroundLayer};
use crate::metrics::{Metrics, Rpc};

/// The label set of a path nobody serves.
const UNKNOWN: Rpc = Rpc {
    grpc_service: "unknown",
    grpc_method: "unknown",
    grpc_type: "unknown",
};

/// Every served method by path (`/package.Service/Method`).
static METHODS: LazyLock<HashMap<String, Rpc>> = LazyLock::new(|| {
    let sets = [
        super::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                // Leaked once, for the life of the process: label values are
                // `&'static str`, and the table is built once.
                let full: &'static str = Box::leak(full.into_boxed_str());
                for method in &service.method {
                    let name: &'static str = Box::leak(method.name().to_owned().into_boxed_str());
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (false, true) => "server_stream",
                        (true, false) => "client_stream",
                        (true, true) => "bidi_stream",
                    };
                    methods.insert(
                        format!("/{full}/{name}"),
                        Rpc {
                            grpc_service: full,
                            grpc_method: name,
                            grpc_type: kind,
                        },
                    );
                }
            }
        }
    }
    methods
});

/// The labels of the call at `path`.
pub(crate) fn rpc(path: &str) -> Rpc {
    METHODS.get(path).cloned().unwrap_or(UNKNOWN)
}

/// The `grpc-status` in `headers` (response headers or trailers), if any.
pub(crate) fn status_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Metered {
    metrics: Arc<Metrics>,
}

impl Metered {
    pub(crate) fn layer(metrics: Arc<Metrics>) -> AroundLayer<Metered> {
        AroundLayer(Metered { metrics })
    }
}

impl<B: Send + 'static> Around<B> for Metered {
    fn around<S>(&self, mut inner: S, req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let mut call = Call {
            rpc: rpc(req.uri().path()),
            started: Instant::now(),
            metrics: self.metrics.clone(),
            done: false,
        };
        call.metrics.started(&call.rpc);
        // `call` lives in the future, then in the body: dropped before its
        // status is known (the client reset the stream), it counts CANCELLED.
        Box::pin(async move {
            let response = match inner.call(req).await {
                Ok(response) => response,
                Err(err) => {
                    call.finish(tonic::Code::Unknown);
                    return Err(err);
                }
            };
            // An error is trailers-only: its status is in the headers.
            if let Some(code) = status_code(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| tonic::body::Body::new(Counted { body, call })))
        })
    }
}

/// A call whose status is not yet known; dropped unfinished, it counts as
/// CANCELLED.
struct Call {
    rpc: Rpc,
    started: Instant,
    metrics: Arc<Metrics>,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            self.metrics.handled(&self.rpc, code, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// A response body that counts its call when its trailers pass.
struct Counted {
    body: tonic::body::Body,
    call: Call,
}

impl http_body::Body for Counted {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_code(trailers).unwrap_or(tonic::Code::Unknown);
                    self.call.finish(code);
                }
            }
            // An error in the body, or an end without trailers (gRPC always
            // sends them): the call failed in a way no status says.
            Poll::Ready(Some(Err(_)) | None) => self.call.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_methods_are_labelled_and_anything_else_is_unknown() {
        let watch = rpc("/mentorship.v1.SessionService/WatchSession");
        assert_eq!(
            (watch.grpc_service, watch.grpc_method, watch.grpc_type),
            ("mentorship.v1.SessionService", "WatchSession", "server_stream")
        );
        assert_eq!(rpc("/mentorship.v1.SessionService/GetSession").grpc_type, "unary");
        assert_eq!(rpc("/grpc.health.v1.Health/Check").grpc_method, "Check");
        assert_eq!(
            rpc("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").grpc_type,
            "bidi_stream"
        );
        assert_eq!(rpc("/mentorship.v1.SessionService/NoSuchMethod"), UNKNOWN);
        assert_eq!(rpc("/../etc/passwd"), UNKNOWN);
    }
}
