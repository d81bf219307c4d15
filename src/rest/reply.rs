//! gRPC answers written as HTTP ones: messages as canonical proto3 JSON,
//! statuses as the HTTP status grpc-gateway gives their code with the
//! `google.rpc.Status` JSON (details decoded, each with its `@type`) as the body.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor, SerializeOptions, Value};
use tonic::{Code, Status};

/// The HTTP status of a gRPC code (grpc-gateway's table).
pub(crate) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        // nginx's "client closed request".
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A message as canonical proto3 JSON (lowerCamelCase names, enums by name,
/// 64-bit integers as strings, default values left out).
pub(crate) fn json(message: &DynamicMessage) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    // Serializing into memory cannot fail for a valid message.
    if message
        .serialize_with_options(&mut ser, &SerializeOptions::new())
        .is_err()
    {
        out = b"{}".to_vec();
    }
    out
}

/// The `google.rpc.Status` of `status` as JSON: its details, when it has
/// any, decoded by their types.
pub(crate) fn status_json(status: &Status, status_type: &MessageDescriptor) -> Vec<u8> {
    let decoded = (!status.details().is_empty())
        .then(|| DynamicMessage::decode(status_type.clone(), status.details()).ok())
        .flatten();
    let message = decoded.unwrap_or_else(|| {
        let mut m = DynamicMessage::new(status_type.clone());
        m.set_field_by_name("code", Value::I32(status.code() as i32));
        m.set_field_by_name("message", Value::String(status.message().to_owned()));
        m
    });
    json(&message)
}

/// A JSON response.
pub(crate) fn respond(status: StatusCode, body: Vec<u8>) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The HTTP answer of a failed call; `status_code` overrides the code's own
/// (412 for a stale `If-Match`, 413 for a body too large).
pub(crate) fn error(
    status: &Status,
    status_type: &MessageDescriptor,
    status_code: Option<StatusCode>,
) -> http::Response<tonic::body::Body> {
    let mut response = respond(
        status_code.unwrap_or_else(|| http_status(status.code())),
        status_json(status, status_type),
    );
    if status.code() == Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The messages of a gRPC response body, one at a time, then its status.
pub(crate) struct Frames {
    body: tonic::body::Body,
    buf: BytesMut,
    /// The status, once known (trailers-only answers carry it in their headers).
    status: Option<Status>,
}

impl Frames {
    pub(crate) fn new(response: http::Response<tonic::body::Body>) -> Frames {
        let (parts, body) = response.into_parts();
        Frames {
            status: Status::from_header_map(&parts.headers),
            body,
            buf: BytesMut::new(),
        }
    }

    /// The status of a call refused before it sent anything (a
    /// trailers-only answer), unless it is OK.
    pub(crate) fn refused(&self) -> Option<Status> {
        self.status.clone().filter(|s| s.code() != Code::Ok)
    }

    /// The next message, or the call's final status (`Err`; OK included).
    pub(crate) async fn next(&mut self) -> Result<Bytes, Status> {
        loop {
            if let Some(message) = self.take()? {
                return Ok(message);
            }
            if let Some(status) = &self.status {
                return Err(status.clone());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => {
                        let status = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .unwrap_or_else(|| Status::internal("the call ended without a status"));
                        self.status = Some(status);
                    }
                },
                Some(Err(err)) => self.status = Some(Status::from_error(err.into())),
                None => {
                    self.status = Some(Status::internal("the call ended without a status"));
                }
            }
        }
    }

    /// One whole message from the buffer, if there is one.
    fn take(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::internal("a compressed message where none was asked for"));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

/// A message framed for gRPC (uncompressed).
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}
