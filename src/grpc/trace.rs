//! One tracing span per call (tower-http's `TraceLayer`, classified for gRPC):
//! `rpc{method, sub, request_id, code, latency_ms}`. The auth layer records
//! `sub`, the mutation helper records `request_id`, and everything the call
//! logs (the "internal error" line included) happens inside the span. When
//! the response starts, the layer records the gRPC status and latency and
//! emits one event: DEBUG for OK, INFO otherwise. A stream that fails after
//! its headers records its final code too.

use std::time::Duration;

use tower_http::{
    classify::GrpcFailureClass,
    trace::{GrpcMakeClassifier, MakeSpan, OnFailure, OnResponse, TraceLayer},
};
use tracing::{Span, field::Empty};

/// The layer, as served.
pub type RpcTraceLayer = TraceLayer<GrpcMakeClassifier, RpcSpan, (), RpcFinished, (), (), RpcFailed>;

pub fn layer() -> RpcTraceLayer {
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
pub struct RpcSpan;

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
pub struct RpcFinished;

impl<B> OnResponse<B> for RpcFinished {
    fn on_response(self, response: &http::Response<B>, latency: Duration, span: &Span) {
        // Errors are trailers-only (the status is in the headers); a success
        // sends its status in the trailers, so no status here means OK.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        let code = tonic::Code::from_i32(code);
        let latency_ms = latency.as_secs_f64() * 1000.0;
        span.record("code", tracing::field::debug(code));
        span.record("latency_ms", latency_ms);
        if code == tonic::Code::Ok {
            tracing::debug!(parent: span, "rpc finished");
        } else {
            tracing::info!(parent: span, "rpc finished");
        }
    }
}

/// Records the final code of a call that failed, including a stream that
/// failed after its headers.
#[derive(Debug, Clone, Copy)]
pub struct RpcFailed;

impl OnFailure<GrpcFailureClass> for RpcFailed {
    fn on_failure(&mut self, failure: GrpcFailureClass, _latency: Duration, span: &Span) {
        if let GrpcFailureClass::Code(code) = failure {
            span.record("code", tracing::field::debug(tonic::Code::from_i32(code.get())));
        }
    }
}
