//! One tracing span per call (tower-http's `TraceLayer`, classified for gRPC):
//! `rpc{method, sub, request_id, code, latency_ms}`. The auth layer records
//! `sub`, the mutation helper records `request_id`, and everything the call
//! logs (the "internal error" line included) happens inside the span. Each
//! call ends with one "rpc finished" event: at DEBUG when its response starts
//! OK, at INFO when it fails, whether the failure is in the response headers
//! (a unary error) or at the end of a stream.

use std::time::Duration;

use tower_http::{
    classify::GrpcFailureClass,
    trace::{GrpcMakeClassifier, MakeSpan, OnFailure, OnResponse, TraceLayer},
};
use tracing::{Span, field::Empty};

/// The layer, as served.
pub(crate) type RpcTraceLayer = TraceLayer<GrpcMakeClassifier, RpcSpan, (), RpcFinished, (), (), RpcFailed>;

pub(crate) fn layer() -> RpcTraceLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(RpcSpan)
        .on_request(())
        .on_response(RpcFinished)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(RpcFailed)
}

/// Opens the span of a call; its later fields are filled in as they become known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcSpan;

impl<B> MakeSpan<B> for RpcSpan {
    fn make_span(&mut self, request: &http::Request<B>) -> Span {
        tracing::info_span!(
            "rpc",
            method = %request.uri().path(),
            sub = Empty,
            request_id = Empty,
            code = Empty,
            latency_ms = Empty,
        )
    }
}

/// Records the status and latency when the response starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcFinished;

impl<B> OnResponse<B> for RpcFinished {
    fn on_response(self, response: &http::Response<B>, latency: Duration, span: &Span) {
        // Errors are trailers-only (the status is in the headers); a success
        // sends its status in the trailers, so no status here means OK.
        let code = super::metered::status_code(response.headers()).unwrap_or(tonic::Code::Ok);
        // A failure is logged by `RpcFailed`, which the classifier calls next.
        if code == tonic::Code::Ok {
            record(span, tonic::Code::Ok, latency);
            tracing::debug!(parent: span, "rpc finished");
        }
    }
}

fn record(span: &Span, code: tonic::Code, latency: Duration) {
    span.record("code", tracing::field::debug(code));
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
}

/// Logs a call that failed: an error response, or a stream that failed after
/// its headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RpcFailed;

impl OnFailure<GrpcFailureClass> for RpcFailed {
    fn on_failure(&mut self, failure: GrpcFailureClass, latency: Duration, span: &Span) {
        match failure {
            GrpcFailureClass::Code(code) => {
                record(span, tonic::Code::from_i32(code.get()), latency);
                tracing::info!(parent: span, "rpc finished");
            }
            GrpcFailureClass::Error(error) => {
                record(span, tonic::Code::Unknown, latency);
                tracing::info!(parent: span, %error, "rpc finished");
            }
        }
    }
}
