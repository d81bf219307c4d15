//! Quotas on one replica, per caller and in all: the export streams
//! a caller runs, the watch streams it holds open. A [`Permit`] is held by
//! whatever lives as long as the stream and given back when it is dropped,
//! however the stream ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::domain::{Error, Result, error::Reason};

/// Quota of one kind.
#[derive(Debug, Clone)]
pub struct Quota {
    limits: QuotaLimits,
    held: Arc<Mutex<Held>>,
}

/// The limits of one quota, and how a refusal names them.
#[derive(Debug, Clone, Copy)]
pub struct QuotaLimits {
    /// What is counted, in messages ("watch streams").
    pub what: &'static str,
    pub reason: Reason,
    /// Who one count belongs to, in messages ("caller", "peer address").
    pub caller: &'static str,
    /// Most permits one caller may hold, and the limit's name in metadata.
    pub per_caller: (usize, &'static str),
    /// Most permits of the replica, and the limit's name in metadata.
    pub total: (usize, &'static str),
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// One permit of one caller.
#[derive(Debug)]
pub struct Permit {
    caller: String,
    held: Arc<Mutex<Held>>,
}

impl Quota {
    pub fn new(limits: QuotaLimits) -> Self {
        Quota {
            limits,
            held: Arc::default(),
        }
    }

    /// A permit for `caller`, or RESOURCE_EXHAUSTED naming the limit reached
    /// (ErrorInfo metadata `limit`, `current`, `maximum`).
    pub fn acquire(&self, caller: &str) -> Result<Permit> {
        let QuotaLimits {
            what,
            reason,
            caller: who,
            per_caller,
            total,
        } = self.limits;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = held.by_caller.get(caller).copied().unwrap_or(0);
        let refuse = |(maximum, limit): (usize, &'static str), current: usize, message: String| {
            Err(Error::ResourceExhausted {
                reason,
                message,
                metadata: vec![
                    ("limit", limit.to_owned()),
                    ("current", current.to_string()),
                    ("maximum", maximum.to_string()),
                ],
            })
        };
        if mine >= per_caller.0 {
            return refuse(
                per_caller,
                mine,
                format!("this {who} already has {mine} {what} on this replica, the most one {who} may; end one first"),
            );
        }
        if held.total >= total.0 {
            let current = held.total;
            return refuse(
                total,
                current,
                format!(
                    "this replica already serves {current} {what}, the most it may; retry later or on another replica"
                ),
            );
        }
        held.total += 1;
        held.by_caller.insert(caller.to_owned(), mine + 1);
        Ok(Permit {
            caller: caller.to_owned(),
            held: self.held.clone(),
        })
    }

    /// Quota held now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

/// The exports running on this replica, per caller. A permit is held by the
/// producer task and given back when it ends, however it ends.
#[derive(Debug, Clone)]
pub struct Exports(Quota);

/// One running export of one caller.
pub(crate) type ExportPermit = Permit;

impl Exports {
    pub fn new(per_caller: usize) -> Self {
        Exports(Quota::new(QuotaLimits {
            what: "exports",
            reason: Reason::TooManyExports,
            caller: "caller",
            per_caller: (per_caller, "exports_per_caller"),
            total: (usize::MAX, "exports"),
        }))
    }

    /// A permit for `caller`, or RESOURCE_EXHAUSTED (TOO_MANY_EXPORTS).
    pub fn acquire(&self, caller: &str) -> Result<ExportPermit> {
        self.0.acquire(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_caller: usize, total: usize) -> Quota {
        Quota::new(QuotaLimits {
            what: "streams",
            reason: Reason::TooManyStreams,
            caller: "caller",
            per_caller: (per_caller, "per_caller"),
            total: (total, "per_replica"),
        })
    }

    fn limit(err: Error) -> String {
        match err {
            Error::ResourceExhausted { metadata, .. } => metadata[0].1.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_caller_and_the_replica_have_a_limit_and_drops_give_back() {
        let s = quota(2, 3);
        let a = s.acquire("alice").expect("first");
        let _b = s.acquire("alice").expect("second");
        assert_eq!(limit(s.acquire("alice").expect_err("third")), "per_caller");
        let _c = s.acquire("bob").expect("bob has his own");
        assert_eq!(limit(s.acquire("carol").expect_err("replica full")), "per_replica");
        assert_eq!(s.held(), 3);
        drop(a);
        assert_eq!(s.held(), 2);
        assert!(s.acquire("alice").is_ok(), "a dropped slot is given back");
        assert_eq!(s.held(), 2, "the temporary slot is back too");
    }

    #[test]
    fn permits_are_capped_per_caller_and_given_back_on_drop() {
        let exports = Exports::new(2);
        let a = exports.acquire("alice").expect("first");
        let _b = exports.acquire("alice").expect("second");
        let err = exports.acquire("alice").expect_err("third");
        assert!(matches!(
            err,
            Error::ResourceExhausted {
                reason: Reason::TooManyExports,
                ..
            }
        ));
        let _other = exports.acquire("bob").expect("another caller has its own");
        drop(a);
        assert!(exports.acquire("alice").is_ok());
    }
}
