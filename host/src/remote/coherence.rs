//! When a local copy may be served: heartbeat confirmations of the invalidation connections,
//! and per-key-stripe tickets that keep a fill from racing an invalidation.
//!
//! The guarantee: a local copy is served at time `t` only if every invalidation connection
//! answered a heartbeat sent at some `t0 > t - max_staleness`, with every invalidation that
//! arrived before that answer applied. Redis sends a write's invalidation before it answers a
//! later command on the same connection, so a write acknowledged before `t0` was applied
//! before the copy was served: a read never returns a value replaced more than
//! `max_staleness` before it.
//!
//! Fills (a value read from Redis, or just written to it, copied into the local tier) race
//! invalidations: the value may be replaced between the Redis reply and the local write. So a
//! filler takes a [`Ticket`] (the invalidation count of the key's stripe) before sending the
//! command and fills only if no invalidation of that stripe was applied since; the check and
//! the local write happen under the stripe's lock, as does an invalidation's count and delete.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Stripes of the fill/invalidation lock.
const STRIPES: usize = 256;

/// The invalidation count of one key's stripe, taken before a Redis command whose answer will
/// be copied into the local tier.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    stripe: usize,
    count: u64,
}

/// Freshness of the local tier against Redis; shared by the cache and its invalidation
/// listeners.
pub(crate) struct Coherence {
    start: Instant,
    /// Per invalidation connection: when (nanoseconds since `start`, plus one) the last
    /// answered heartbeat was sent; 0 before the first.
    confirmed: Vec<AtomicU64>,
    max_staleness: Duration,
    stripes: Box<[Mutex<u64>]>,
    hasher: std::collections::hash_map::RandomState,
    /// Invalidations applied (keys dropped from the local tier), for tests and stats.
    pub(crate) applied: AtomicU64,
}

impl Coherence {
    /// Nothing confirmed yet, for `connections` invalidation connections.
    pub(crate) fn new(connections: usize, max_staleness: Duration) -> Coherence {
        Coherence {
            start: Instant::now(),
            confirmed: (0..connections).map(|_| AtomicU64::new(0)).collect(),
            max_staleness,
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            hasher: Default::default(),
            applied: AtomicU64::new(0),
        }
    }

    /// The bound the local tier is served within.
    pub(crate) fn max_staleness(&self) -> Duration {
        self.max_staleness
    }

    /// A timestamp for [`confirm`](Self::confirm): now.
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Connection `index` answered a heartbeat sent at `sent` (from [`now`](Self::now)), with
    /// every invalidation received before the answer applied.
    pub(crate) fn confirm(&self, index: usize, sent: u64) {
        self.confirmed[index].fetch_max(sent, Ordering::AcqRel);
    }

    /// Whether local copies may be served now: every connection confirmed within the bound.
    /// Two atomic loads and a clock read.
    pub(crate) fn local_usable(&self) -> bool {
        let now = self.now();
        let bound = u64::try_from(self.max_staleness.as_nanos()).unwrap_or(u64::MAX);
        self.confirmed.iter().all(|sent| {
            let sent = sent.load(Ordering::Acquire);
            sent != 0 && now.saturating_sub(sent) < bound
        })
    }

    /// How long ago the oldest connection's last confirmed heartbeat was sent (`None`: one
    /// never was).
    pub(crate) fn confirmed_age(&self) -> Option<Duration> {
        let now = self.now();
        self.confirmed
            .iter()
            .map(|sent| sent.load(Ordering::Acquire))
            .try_fold(Duration::ZERO, |oldest, sent| {
                (sent != 0).then(|| oldest.max(Duration::from_nanos(now.saturating_sub(sent))))
            })
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// The ticket of `key`'s stripe; take it before sending the command whose answer a fill
    /// copies.
    pub(crate) async fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe(key);
        let count = *self.stripes[stripe].lock().await;
        Ticket { stripe, count }
    }

    /// Runs `fill` (a local write of `key`) if no invalidation of its stripe was applied since
    /// `ticket`; `None` if one was (the caller drops its local copy instead).
    pub(crate) async fn fill_if_current<F, T>(&self, ticket: Ticket, fill: F) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        let guard = self.stripes[ticket.stripe].lock().await;
        if *guard != ticket.count {
            return None;
        }
        let out = fill.await;
        drop(guard);
        Some(out)
    }

    /// Counts an invalidation of `key` and runs `drop_local` (its local delete) under the
    /// stripe's lock, so that no fill that started before it lands after it.
    pub(crate) async fn invalidate<F, T>(&self, key: &str, drop_local: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let mut guard = self.stripes[self.stripe(key)].lock().await;
        *guard += 1;
        let out = drop_local.await;
        drop(guard);
        self.applied.fetch_add(1, Ordering::Relaxed);
        out
    }

    /// Counts an invalidation of every key and runs `drop_all` under every stripe's lock.
    pub(crate) async fn invalidate_all<F, T>(&self, drop_all: F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let mut guards = Vec::with_capacity(STRIPES);
        for stripe in self.stripes.iter() {
            let mut guard = stripe.lock().await;
            *guard += 1;
            guards.push(guard);
        }
        let out = drop_all.await;
        drop(guards);
        self.applied.fetch_add(1, Ordering::Relaxed);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_are_usable_only_within_the_bound_of_every_connection() {
        let coherence = Coherence::new(2, Duration::from_millis(50));
        assert!(!coherence.local_usable(), "nothing confirmed yet");
        let sent = coherence.now();
        coherence.confirm(0, sent);
        assert!(!coherence.local_usable(), "one connection of two");
        coherence.confirm(1, sent);
        assert!(coherence.local_usable());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!coherence.local_usable(), "past the bound");
        assert!(coherence.confirmed_age().unwrap() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_fill_after_an_invalidation_of_its_stripe_is_refused() {
        let coherence = Coherence::new(1, Duration::from_secs(1));
        let ticket = coherence.ticket("k").await;
        coherence.invalidate("k", async {}).await;
        assert!(coherence.fill_if_current(ticket, async {}).await.is_none());
        let ticket = coherence.ticket("k").await;
        assert!(coherence.fill_if_current(ticket, async {}).await.is_some());
        coherence.invalidate_all(async {}).await;
        assert!(coherence.fill_if_current(ticket, async {}).await.is_none());
    }
}
