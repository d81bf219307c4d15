//! The shape the edge's check-and-refuse layers share: a [`Check`] looks at
//! a request (and may add what it learned to its extensions); a request it
//! refuses is answered with the refusal's status at once and goes no
//! further in. Auth, the metadata limit and the rate limit are checks.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tower::{Layer, Service};

use crate::domain::Error;

/// One check of every request, before the services further in.
pub(crate) trait Check: Clone + Send + Sync + 'static {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Error>;
}

/// The layer of a [`Check`].
#[derive(Debug, Clone)]
pub(crate) struct GateLayer<C>(C);

impl<C> GateLayer<C> {
    pub(crate) fn new(check: C) -> Self {
        GateLayer(check)
    }
}

impl<C: Clone, S> Layer<S> for GateLayer<C> {
    type Service = Gate<S, C>;
    fn layer(&self, inner: S) -> Self::Service {
        Gate {
            inner,
            check: self.0.clone(),
        }
    }
}

/// See [`GateLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Gate<S, C> {
    inner: S,
    check: C,
}

impl<S, B, C> Service<http::Request<B>> for Gate<S, C>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    C: Check,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Err(err) = self.check.check(&mut req) {
            let response = tonic::Status::from(err).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let mut inner = super::layer::take_ready(&mut self.inner);
        Box::pin(inner.call(req))
    }
}
