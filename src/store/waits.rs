//! The database work under way on one replica, and since when: health's
//! view of the replica's own connections. Every unit of work (mutations,
//! the sweeper's firings), GetSession's coalesced reads and the background
//! jobs' bounded work each hold a [`Waiting`] while they run, and note when
//! they gave up on a connection that went silent. Only work on the
//! database is noted, never a wait on a client (a request body that comes
//! slowly). Work that waits longer than any statement may means the
//! replica's connections are stuck, even while new ones open fine; health
//! then says NOT_SERVING.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Waits(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Work that has waited longer than this is stuck.
    stuck_after: Duration,
    next: AtomicU64,
    /// When each piece of work now under way began.
    under_way: Mutex<HashMap<u64, Instant>>,
    /// When work last gave up on a silent connection (milliseconds since
    /// [`now_ms`]'s epoch, plus one; 0: never).
    last_silence_ms: AtomicU64,
}

/// One piece of work under way; it ends when this drops.
#[derive(Debug)]
pub struct Waiting {
    waits: Waits,
    id: u64,
}

impl Waits {
    /// `silent_connection`: how long a connection may leave a statement
    /// unanswered before it is presumed silent (the statement timeout plus
    /// 5 s, 20 s by default). Work that has waited longer is stuck: a
    /// statement is cut at the statement timeout, a lock wait at its lock
    /// timeout (10 s at most, `store::wait_in_turn`), and the service's
    /// statements take milliseconds.
    pub fn new(silent_connection: Duration) -> Waits {
        Waits(Arc::new(Inner {
            stuck_after: silent_connection,
            next: AtomicU64::new(0),
            under_way: Mutex::default(),
            last_silence_ms: AtomicU64::new(0),
        }))
    }

    /// Notes work under way until the returned guard drops.
    pub fn begin(&self) -> Waiting {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut under_way) = self.0.under_way.lock() {
            under_way.insert(id, Instant::now());
        }
        Waiting {
            waits: self.clone(),
            id,
        }
    }

    /// Notes that work gave up on a connection that went silent.
    pub fn silence(&self) {
        self.0.last_silence_ms.store(now_ms() + 1, Ordering::Relaxed);
    }

    /// Whether the replica's connections are stuck: some work has waited
    /// longer than the stuck bound, or work gave up on a silent connection
    /// within the last `within`.
    pub fn stuck(&self, within: Duration) -> bool {
        let last = self.0.last_silence_ms.load(Ordering::Relaxed);
        let recent = last != 0 && now_ms().saturating_sub(last - 1) <= within.as_millis() as u64;
        let oldest = self
            .0
            .under_way
            .lock()
            .map(|w| w.values().min().copied())
            .unwrap_or(None);
        recent || oldest.is_some_and(|since| since.elapsed() > self.0.stuck_after)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Ok(mut under_way) = self.waits.0.under_way.lock() {
            under_way.remove(&self.id);
        }
    }
}

/// Milliseconds since the first call in this process: a monotonic clock, so
/// a step of the wall clock never makes an old silence look recent.
pub(crate) fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_stuck_while_it_waits_past_the_bound_and_after_a_silence() {
        // Margins of a second either way, so a loaded machine cannot tip it.
        let waits = Waits::new(Duration::from_secs(1));
        assert!(!waits.stuck(Duration::from_secs(5)));
        let first = waits.begin();
        assert!(!waits.stuck(Duration::from_secs(5)), "work just begun");
        std::thread::sleep(Duration::from_millis(1500));
        let second = waits.begin();
        assert!(waits.stuck(Duration::from_secs(5)), "work waiting past the bound");
        drop(first);
        assert!(!waits.stuck(Duration::from_secs(5)), "the stuck work ended");
        drop(second);
        waits.silence();
        assert!(waits.stuck(Duration::from_secs(5)), "a recent silence");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!waits.stuck(Duration::from_millis(1)), "a silence long enough ago");
    }
}
