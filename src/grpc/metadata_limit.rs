//! A limit on a request's metadata that clients can read. HTTP/2 lets a
//! server refuse a header list past its limit only with an HTTP 431 (which
//! gRPC clients see as UNKNOWN) or, far past it, by closing the whole
//! connection. So the transport's limit is set at four times the limit
//! this layer enforces: a request between the two gets RESOURCE_EXHAUSTED
//! / METADATA_TOO_LARGE naming the limit, and only a header list past the
//! transport's limit meets HTTP/2's own answers (docs/OPERATIONS.md,
//! "Limits").

use super::gate::Check;
use crate::domain::{Error, Reason};

/// The largest request metadata accepted by default: 16 KiB, what gRPC's
/// own implementations accept.
pub(crate) const DEFAULT_MAX_METADATA_BYTES: u32 = 16 * 1024;

/// The transport's header list limit for a metadata limit of `max`.
pub(crate) fn transport_limit(max: u32) -> u32 {
    max.saturating_mul(4)
}

/// The size of a header list as HTTP/2 counts it (RFC 9113 §6.5.2): each
/// entry's name and value, and 32 more.
pub(crate) fn header_list_size(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// See the module documentation (a [`Check`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct MetadataLimit {
    max: u32,
}

impl MetadataLimit {
    pub(crate) fn new(max: u32) -> Self {
        MetadataLimit { max }
    }
}

impl Check for MetadataLimit {
    fn check<B>(&self, req: &mut http::Request<B>) -> Result<(), Error> {
        let size = header_list_size(req.headers());
        if size <= self.max as usize {
            return Ok(());
        }
        Err(Error::ResourceExhausted {
            reason: Reason::MetadataTooLarge,
            message: format!(
                "the request's metadata is {size} bytes, more than the {} this server accepts \
                 (names and values, and 32 bytes per entry, as HTTP/2 counts them)",
                self.max
            ),
            metadata: vec![
                ("limit", "max_metadata_bytes".to_owned()),
                ("current", size.to_string()),
                ("maximum", self.max.to_string()),
            ],
        })
    }
}
