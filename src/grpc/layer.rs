//! The tower scaffolding every layer of the edge shares, written once: a
//! layer says only what it does around one call ([`Around`]); [`AroundLayer`]
//! makes it a tower `Layer` whose service hands each call, with the inner
//! service made ready for it, to that.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};

/// A response on its way, as every layer here answers.
pub(crate) type Answer<E> =
    Pin<Box<dyn std::future::Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

/// What a layer does around one call with a request body of type `B`: the
/// response to `req`, calling `inner` (ready) or answering itself.
pub(crate) trait Around<B>: Clone {
    fn around<S>(&self, inner: S, req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static;
}

/// A tower `Layer` of an [`Around`].
#[derive(Debug, Clone)]
pub struct AroundLayer<A>(pub(crate) A);

impl<A: Clone, S> Layer<S> for AroundLayer<A> {
    type Service = Wrapped<A, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Wrapped {
            around: self.0.clone(),
            inner,
        }
    }
}

/// The service of an [`AroundLayer`].
#[derive(Debug, Clone)]
pub struct Wrapped<A, S> {
    around: A,
    inner: S,
}

impl<A, S, B> Service<http::Request<B>> for Wrapped<A, S>
where
    A: Around<B>,
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The service made ready by `poll_ready` serves this call; a fresh
        // clone takes its place.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        self.around.around(ready, req)
    }
}
