//! Opaque page tokens: the last row's sort key plus a fingerprint of the
//! filter, so a token is only accepted with the filter that produced it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::domain::{Error, Result, query::Page};

#[derive(Serialize, serde::Deserialize)]
struct Token<K> {
    /// Filter fingerprint.
    f: String,
    /// Keyset position: the last row returned.
    k: K,
}

fn fingerprint(filter: &impl Serialize) -> Result<String> {
    let bytes = serde_json::to_vec(filter).map_err(|e| Error::Internal(e.into()))?;
    Ok(hex::encode(&Sha256::digest(bytes)[..12]))
}

/// Encodes the position after `key` for `filter`.
pub(crate) fn encode<K: Serialize>(filter: &impl Serialize, key: K) -> Result<String> {
    let token = Token {
        f: fingerprint(filter)?,
        k: key,
    };
    let json = serde_json::to_vec(&token).map_err(|e| Error::Internal(e.into()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

/// Decodes a token; empty means the first page.
pub(crate) fn decode<K: DeserializeOwned>(filter: &impl Serialize, raw: &str) -> Result<Option<K>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::invalid("page_token", "is not a page token issued by this service");
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let token: Token<K> = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if token.f != fingerprint(filter)? {
        return Err(Error::invalid(
            "page_token",
            "was issued for a different filter or order; start again without a page token",
        ));
    }
    Ok(Some(token.k))
}

/// One keyset page: the position after `page`'s token (bound to `filter`),
/// `fetch`ed with one row more than the page holds (`fetch(after, limit)`),
/// then split into the page and the token of the next (`finish`).
pub(crate) async fn keyset<T, K: Serialize + DeserializeOwned>(
    filter: &impl Serialize,
    page: &Page,
    key: impl Fn(&T) -> K,
    fetch: impl AsyncFnOnce(Option<K>, i64) -> Result<Vec<T>>,
) -> Result<(Vec<T>, String)> {
    let after = decode(filter, &page.token)?;
    let rows = fetch(after, page.size + 1).await?;
    finish(rows, page.size, filter, key)
}

/// Splits one extra fetched row off a page: returns the page and, when more
/// rows follow, the token for the next page.
pub(crate) fn finish<T, K: Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    filter: &impl Serialize,
    key: impl Fn(&T) -> K,
) -> Result<(Vec<T>, String)> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|last| encode(filter, key(last))).transpose()?;
        Ok((rows, next.unwrap_or_default()))
    } else {
        Ok((rows, String::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_filter() {
        let token = encode(&("a", 1), 42_i64).unwrap();
        assert_eq!(decode::<i64>(&("a", 1), &token).unwrap(), Some(42));
        assert!(decode::<i64>(&("b", 1), &token).is_err());
        assert!(decode::<i64>(&("a", 1), "garbage!").is_err());
        assert_eq!(decode::<i64>(&("a", 1), "").unwrap(), None);
    }
}
