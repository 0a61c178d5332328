//! Single-flight get-or-compute: concurrent misses of one key run one computation.

use std::any::Any;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::cache::PersistentCache;
use crate::codec::{decode, encode};
use crate::error::Error;
use crate::expiry::Expiry;
use crate::remote::Lead;

/// How a flight ended, shared with every task that waited for it.
enum Outcome {
    /// The computed value, CBOR-encoded (each waiter decodes it into its own `T`).
    Value(Vec<u8>),
    /// The computed value could not be encoded; the message of the [`Error::Serialize`].
    Unencodable(String),
    /// The computation failed: an `Arc<E>` for the `E` of the leader's call site.
    Failed(Arc<dyn Any + Send + Sync>),
}

/// What a flight's channel holds: `None` while the computation runs.
type Published = Option<Arc<Outcome>>;

/// The computations in progress, by key; shared by every handle to one directory.
///
/// Each entry is the receiving end of the leader's channel; the leader publishes the outcome
/// on it, or drops its sender (cancelled or panicked) so the waiters retry.
#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, watch::Receiver<Published>>>,
}

/// What [`Flights::join`] made of the caller.
enum Role<'a> {
    /// No computation was running: the caller runs it and must publish the outcome.
    Leader(Flight<'a>),
    /// Another task is computing: wait on its channel.
    Waiter(watch::Receiver<Published>),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, watch::Receiver<Published>>> {
        self.in_flight.lock()
    }

    /// Joins the flight for `key`, or starts one if none is running.
    ///
    /// A flight that already has an outcome (or whose leader is gone) but has not been
    /// removed yet counts as finished: the caller starts a new one.
    fn join<'a>(&'a self, key: &'a str) -> Role<'a> {
        let mut flights = self.lock();
        if let Some(receiver) = flights.get(key) {
            let running = receiver.borrow().is_none() && receiver.has_changed().is_ok();
            if running {
                return Role::Waiter(receiver.clone());
            }
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(key.to_owned(), receiver.clone());
        Role::Leader(Flight {
            flights: self,
            key,
            sender,
            receiver,
        })
    }
}

/// The leader's side of a flight. Dropping it, published or not, removes the flight from the
/// map (if it is still this flight); dropping it unpublished (the leader's future was
/// cancelled or its computation panicked) wakes the waiters with an error so they retry.
struct Flight<'a> {
    flights: &'a Flights,
    key: &'a str,
    sender: watch::Sender<Published>,
    /// Identifies this flight's map entry.
    receiver: watch::Receiver<Published>,
}

impl Flight<'_> {
    /// Hands `outcome` to every waiter and ends the flight.
    fn publish(self, outcome: Outcome) {
        self.sender.send_replace(Some(Arc::new(outcome)));
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        // The entry goes before the sender (a field, dropped after this), so a flight whose
        // sender is gone is never found in the map.
        let mut flights = self.flights.lock();
        if flights
            .get(self.key)
            .is_some_and(|entry| entry.same_channel(&self.receiver))
        {
            flights.remove(self.key);
        }
    }
}

/// Why [`PersistentCache::try_get_or_set_with`] failed.
#[derive(Debug)]
pub enum GetOrSetError<E> {
    /// The cache failed: reading the key, storing the computed value, or encoding or decoding
    /// it as CBOR.
    Cache(Error),
    /// The computation failed; every task that waited for it gets the same shared error.
    Compute(Arc<E>),
}

impl<E: fmt::Display> fmt::Display for GetOrSetError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetOrSetError::Cache(err) => write!(f, "cache error: {err}"),
            GetOrSetError::Compute(err) => write!(f, "computing the value failed: {err}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for GetOrSetError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetOrSetError::Cache(err) => Some(err),
            GetOrSetError::Compute(err) => Some(&**err),
        }
    }
}

impl<E> From<Error> for GetOrSetError<E> {
    fn from(err: Error) -> Self {
        GetOrSetError::Cache(err)
    }
}

impl PersistentCache {
    /// The value under `key`; on a miss, the value `compute` produces, which is stored under
    /// `key` expiring as `expiry` says (a `Duration`, [`Expiry::Never`] or
    /// [`Expiry::Default`], as for [`set_with_ttl`](Self::set_with_ttl)).
    ///
    /// Single-flight: when several tasks miss the same key at once (through any handles to
    /// the same directory in this process), `compute` runs in one of them (the leader) and the
    /// others wait for its value instead of computing their own.
    ///
    /// Edge cases:
    /// - Hit: the stored value is decoded and returned; `compute` is not called.
    /// - Miss, or an expired entry: `compute` runs once and its value is stored and returned.
    ///   Each waiter decodes the stored CBOR bytes into its own `T`.
    /// - The leader's future is dropped (cancelled) or `compute` panics: nothing is stored and
    ///   the waiters do not hang; they look the key up again and one of them becomes the new
    ///   leader and computes.
    /// - Storing fails (e.g. [`Error::ValueTooLarge`]): the leader gets the error; the waiters
    ///   still get the computed value. Nothing is stored, so the next call computes again.
    /// - The cache is closed or the engine fails: [`Error::Closed`] or that engine error.
    ///
    /// A failing computation belongs to [`try_get_or_set_with`](Self::try_get_or_set_with).
    ///
    /// ```no_run
    /// # async fn demo() -> persistent_cache::Result<()> {
    /// use persistent_cache::{CacheOptions, PersistentCache};
    /// use std::time::Duration;
    ///
    /// let cache = PersistentCache::open(CacheOptions::new("tmp/cache")).await?;
    /// // However many tasks ask at once, the page is rendered once and cached for a minute.
    /// let page: String = cache
    ///     .get_or_set_with("page:/", Duration::from_secs(60), || async {
    ///         "<h1>Hello</h1>".to_owned()
    ///     })
    ///     .await?;
    /// assert_eq!(page, "<h1>Hello</h1>");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// The errors of [`get`](Self::get) (including [`Error::Deserialize`] if the stored value
    /// is not a `T`) and, for the task that computed the value, of [`set`](Self::set).
    pub async fn get_or_set_with<T, F, Fut>(
        &self,
        key: &str,
        expiry: impl Into<Expiry>,
        compute: F,
    ) -> crate::Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_get_or_set_with(key, expiry, || async move {
            Ok::<T, Infallible>(compute().await)
        })
        .await
        .map_err(|err| match err {
            GetOrSetError::Cache(err) => err,
            GetOrSetError::Compute(never) => match *never {},
        })
    }

    /// Like [`get_or_set_with`](Self::get_or_set_with), for a computation that can fail.
    ///
    /// When `compute` fails, nothing is stored; the leader and every task waiting for it get
    /// [`GetOrSetError::Compute`] with the same `Arc`'d error, and the next call computes
    /// again. A waiter whose call site has a different error type `E` than the leader's
    /// cannot take the leader's error: it retries as if the flight had been cancelled.
    ///
    /// # Errors
    /// - [`GetOrSetError::Compute`]: `compute` returned an error (this task's or the leader's).
    /// - [`GetOrSetError::Cache`]: looking the key up failed, the stored or computed value is
    ///   not a `T` ([`Error::Deserialize`]) or cannot be encoded ([`Error::Serialize`]), or,
    ///   for the leader only, storing the computed value failed (the waiters still get it).
    pub async fn try_get_or_set_with<T, E, F, Fut>(
        &self,
        key: &str,
        expiry: impl Into<Expiry>,
        compute: F,
    ) -> Result<T, GetOrSetError<E>>
    where
        T: Serialize + DeserializeOwned,
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let expiry = expiry.into();
        let flight = loop {
            if let Some(bytes) = self.get_raw(key).await? {
                return Ok(decode(&bytes)?);
            }
            match self.inner.flights.join(key) {
                Role::Leader(flight) => break flight,
                Role::Waiter(mut receiver) => {
                    // `Err`: the leader vanished without an outcome (cancelled or panicked).
                    // The `Ref` must not live across an await: it holds a lock.
                    let outcome = receiver
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|slot| slot.clone());
                    match outcome.as_deref() {
                        Some(Outcome::Value(bytes)) => return Ok(decode(bytes)?),
                        Some(Outcome::Unencodable(message)) => {
                            return Err(Error::Serialize(message.clone()).into())
                        }
                        Some(Outcome::Failed(err)) => {
                            if let Ok(err) = Arc::clone(err).downcast::<E>() {
                                return Err(GetOrSetError::Compute(err));
                            }
                        }
                        None => {}
                    }
                }
            }
        };

        // A flight that ended between our miss and our joining may have stored the value.
        // `contains` first: it is not counted, so the leader's miss is counted once (a `get`
        // that finds the value counts the hit it is). On an error here the flight is dropped
        // and the waiters retry.
        if self.contains(key).await? {
            if let Some(bytes) = self.get_raw(key).await? {
                flight.publish(Outcome::Value(bytes.clone()));
                return Ok(decode(&bytes)?);
            }
        }
        // A two-tier cache: one node of all that share the Redis tier computes; the others
        // get its value.
        let lock = match &self.remote {
            Some(tier) => match tier.lead(key).await? {
                Lead::Value(bytes) => {
                    flight.publish(Outcome::Value(bytes.clone()));
                    return Ok(decode(&bytes)?);
                }
                Lead::Compute(lock) => Some(lock),
            },
            None => None,
        };
        // If this panics or our future is dropped while it runs, `flight` is dropped
        // unpublished and the waiters retry (and `lock` is released by a task of its own).
        let computed = compute().await;
        let release = |lock: Option<crate::remote::LockGuard>| async move {
            if let Some(lock) = lock {
                lock.release().await;
            }
        };
        match computed {
            Ok(value) => {
                let bytes = match encode(&value) {
                    Ok(bytes) => bytes,
                    Err(err) => {
                        let message = match &err {
                            Error::Serialize(message) => message.clone(),
                            other => other.to_string(),
                        };
                        flight.publish(Outcome::Unencodable(message));
                        release(lock).await;
                        return Err(err.into());
                    }
                };
                let stored = self.set_raw(key, &bytes, expiry).await;
                release(lock).await;
                flight.publish(Outcome::Value(bytes));
                stored?;
                Ok(value)
            }
            Err(err) => {
                release(lock).await;
                let err = Arc::new(err);
                flight.publish(Outcome::Failed(
                    Arc::clone(&err) as Arc<dyn Any + Send + Sync>
                ));
                Err(GetOrSetError::Compute(err))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(receiver: &watch::Receiver<Published>) -> Option<Arc<Outcome>> {
        receiver.borrow().clone()
    }

    /// The first caller of `k` (who leads) and a second one (who waits).
    fn leader_and_waiter(flights: &Flights) -> (Flight<'_>, watch::Receiver<Published>) {
        let Role::Leader(flight) = flights.join("k") else {
            panic!("the first caller must lead");
        };
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("a second caller must wait");
        };
        (flight, waiter)
    }

    #[test]
    fn the_first_caller_leads_and_later_callers_wait() {
        let flights = Flights::default();
        let (flight, waiter) = leader_and_waiter(&flights);
        assert!(matches!(flights.join("other"), Role::Leader(_)));
        flight.publish(Outcome::Value(vec![1, 2]));
        assert!(matches!(outcome(&waiter).as_deref(), Some(Outcome::Value(b)) if b == &[1, 2]));
        assert!(flights.lock().is_empty(), "a published flight is removed");
    }

    #[test]
    fn a_dropped_leader_closes_the_channel_and_frees_the_key() {
        let flights = Flights::default();
        let (flight, waiter) = leader_and_waiter(&flights);
        drop(flight);
        assert!(
            waiter.has_changed().is_err(),
            "the waiter sees the leader gone"
        );
        assert!(outcome(&waiter).is_none());
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[test]
    fn an_old_flight_never_removes_a_newer_one() {
        let flights = Flights::default();
        let Role::Leader(old) = flights.join("k") else {
            panic!("the first caller must lead");
        };
        // Simulate an outcome published but the entry not yet removed: a newcomer starts over.
        old.sender
            .send_replace(Some(Arc::new(Outcome::Value(Vec::new()))));
        let Role::Leader(new) = flights.join("k") else {
            panic!("a finished flight must not be joined");
        };
        drop(old);
        let Role::Waiter(waiter) = flights.join("k") else {
            panic!("the newer flight must still be registered");
        };
        assert!(waiter.same_channel(&new.receiver));
    }

    #[test]
    fn errors_display_and_chain_their_cause() {
        #[derive(Debug)]
        struct Boom;
        impl fmt::Display for Boom {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("boom")
            }
        }
        impl std::error::Error for Boom {}

        let compute = GetOrSetError::Compute(Arc::new(Boom));
        assert_eq!(compute.to_string(), "computing the value failed: boom");
        let source = std::error::Error::source(&compute).expect("a source");
        assert_eq!(source.to_string(), "boom");
        let cache: GetOrSetError<Boom> = Error::Closed.into();
        assert!(matches!(cache, GetOrSetError::Cache(Error::Closed)));
        assert!(std::error::Error::source(&cache).is_some());
    }
}
