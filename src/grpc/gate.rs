//! The shape the edge's check-and-refuse layers share: a [`Check`] looks at
//! a request (and may add what it learned to its extensions); a request it
//! refuses is answered with the refusal's status at once and goes no
//! further in. Auth, the metadata limit and the rate limit are checks.

use tower::Service;

use super::layer::{Answer, Around, AroundLayer};
use crate::domain::Error;

/// One check of every request, before the services further in.
pub(crate) trait Check: Clone + Send + Sync + 'static {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Error>;
}

/// A [`Check`] around every call.
#[derive(Debug, Clone)]
pub(crate) struct Gate<C>(C);

impl<C> Gate<C> {
    pub(crate) fn layer(check: C) -> AroundLayer<Gate<C>> {
        AroundLayer(Gate(check))
    }
}

impl<C: Check, B: Send + 'static> Around<B> for Gate<C> {
    fn around<S>(&self, mut inner: S, mut req: http::Request<B>) -> Answer<S::Error>
    where
        S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        if let Err(err) = self.0.check(&mut req) {
            let response = tonic::Status::from(err).into_http();
            return Box::pin(async move { Ok(response) });
        }
        Box::pin(inner.call(req))
    }
}
