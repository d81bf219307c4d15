//! A response body that holds something (a stream's slot, a call's place on
//! its connection) until the response ends or is dropped, however it ends.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// See the module documentation.
pub(super) struct Holding<T> {
    body: tonic::body::Body,
    _held: T,
}

impl<T> Holding<T> {
    pub(super) fn new(body: tonic::body::Body, held: T) -> Self {
        Holding { body, _held: held }
    }
}

impl<T: Unpin> http_body::Body for Holding<T> {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
