//! Where webhook deliveries may go. By default a subscription's target may
//! not resolve to an address inside the service's own host or networks
//! (`domain::webhook::refused_address`): checked when a subscription is
//! created or its URL updated, and again at every delivery against the
//! addresses the connection is actually made to, so a name that resolved
//! to a public address then and to an inside one now (DNS rebinding) gets
//! nothing. `webhooks.allow_private_targets` lifts the rule, for
//! development and tests. The notification endpoint is the operator's own
//! choice, not a caller's, and is exempt.

use std::net::{IpAddr, SocketAddr};

use crate::domain::{Error, Result, webhook::refused_address};

/// The longest a subscription's host name may take to resolve when it is
/// created or changed (the call's transaction is open meanwhile).
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether deliveries may go to addresses inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targets {
    /// Only public addresses (the default).
    Public,
    /// Any address (`webhooks.allow_private_targets`).
    Any,
}

impl Targets {
    pub fn allowing_private(allow: bool) -> Targets {
        if allow { Targets::Any } else { Targets::Public }
    }

    /// The check of a subscription's URL (`field`) when it is created or
    /// changed: its host, a literal address or every address its name
    /// resolves to now (within 3 s), must be allowed. INVALID_ARGUMENT says
    /// why, not which address.
    pub async fn check(self, field: &str, url: &str) -> Result<()> {
        if self == Targets::Any {
            return Ok(());
        }
        let parsed =
            reqwest::Url::parse(url).map_err(|_| Error::invalid(field, "must be an absolute http or https URL"))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addresses: Vec<IpAddr> = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => vec![ip.into()],
            Some(url::Host::Ipv6(ip)) => vec![ip.into()],
            Some(url::Host::Domain(name)) => {
                let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port))).await;
                match lookup {
                    Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                    _ => {
                        return Err(Error::invalid(
                            field,
                            format!("names a host that does not resolve: {name}"),
                        ));
                    }
                }
            }
            None => return Err(Error::invalid(field, "must name a host")),
        };
        // The reason is named, not the address: what an inside name
        // resolves to is none of the caller's business.
        for ip in addresses {
            if let Some(why) = refused_address(ip) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "reaches {why}: webhook targets must be public addresses \
                         (an operator may allow others with webhooks.allow_private_targets)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// At delivery, for a URL whose host is a literal address (no name to
    /// resolve): why it is refused, when it is.
    pub fn refuses_literal(self, url: &str) -> Option<&'static str> {
        if self == Targets::Any {
            return None;
        }
        match reqwest::Url::parse(url).ok()?.host()? {
            url::Host::Ipv4(ip) => refused_address(ip.into()),
            url::Host::Ipv6(ip) => refused_address(ip.into()),
            url::Host::Domain(_) => None,
        }
    }
}

/// The resolver of the deliveries' HTTP client under [`Targets::Public`]:
/// a name's refused addresses are dropped, so the connection can only be
/// made to an allowed one; a name with none left fails to resolve.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| refused_address(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                return Err(format!("{} resolves to no address a webhook may reach", name.as_str()).into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
