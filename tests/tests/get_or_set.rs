//! End-to-end: single-flight `get_or_set_with` / `try_get_or_set_with` on the real component.

mod common;

use persistent_cache::{CacheOptions, Error, Expiry, GetOrSetError, ManualClock, PersistentCache};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use common::{open, open_with_clock, open_with_default_ttl};

/// Every test must finish well within this; a hang (a waiter never woken) fails instead.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `test` under [`DEADLINE`].
async fn within_deadline<F: Future>(test: F) -> F::Output {
    timeout(DEADLINE, test)
        .await
        .expect("the test hung (a waiter was never woken?)")
}

async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.expect("the task panicked"));
    }
    results
}

/// Spawns `task(i)` for each `i` in `0..tasks`, lets them all go at once (a barrier), and
/// returns their results in order, under [`DEADLINE`].
async fn together<T, Fut>(tasks: usize, task: impl Fn(usize) -> Fut) -> Vec<T>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(tasks));
    let handles = (0..tasks)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            let task = task(i);
            tokio::spawn(async move {
                barrier.wait().await;
                task.await
            })
        })
        .collect();
    within_deadline(join_all(handles)).await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    title: String,
    rows: Vec<u32>,
}

fn report() -> Report {
    Report {
        title: "quarterly".into(),
        rows: vec![1, 2, 3],
    }
}

#[derive(Debug)]
struct UpstreamDown {
    attempt: usize,
}

impl fmt::Display for UpstreamDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream down (attempt {})", self.attempt)
    }
}

impl std::error::Error for UpstreamDown {}

/// Counts the tasks that reached the call, so a computation can wait until every task has
/// asked (and, when it then sleeps a little more, has joined the flight).
#[derive(Default)]
struct Arrivals(AtomicUsize);

impl Arrivals {
    fn arrive(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    async fn wait_for(&self, tasks: usize) {
        while self.0.load(Ordering::SeqCst) < tasks {
            sleep(Duration::from_millis(5)).await;
        }
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stampede_of_100_tasks_computes_once() {
    const TASKS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let results = together(TASKS, |_| {
        let cache = cache.clone();
        let computed = Arc::clone(&computed);
        async move {
            cache
                .get_or_set_with("report:q1", Expiry::Default, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(100)).await;
                    report()
                })
                .await
        }
    })
    .await;
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "computed more than once"
    );
    assert_eq!(results.len(), TASKS);
    for result in results {
        assert_eq!(result.unwrap(), report());
    }
    assert_eq!(
        cache.get::<Report>("report:q1").await.unwrap(),
        Some(report())
    );
    assert_eq!(cache.stats().await.unwrap().entries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handles_from_separate_opens_share_the_flight() {
    const TASKS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let second = open(dir.path()).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let results = together(TASKS, |i| {
        let cache = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let computed = Arc::clone(&computed);
        async move {
            cache
                .get_or_set_with("shared", Expiry::Default, || async move {
                    computed.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(100)).await;
                    "computed once".to_owned()
                })
                .await
        }
    })
    .await;
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "computed more than once"
    );
    for result in results {
        assert_eq!(result.unwrap(), "computed once");
    }
    assert_eq!(
        second.get::<String>("shared").await.unwrap().as_deref(),
        Some("computed once")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_computation_is_shared_not_stored_and_retried_next_time() {
    const TASKS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let computed = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Arrivals::default());
    let results = together(TASKS, |_| {
        let cache = cache.clone();
        let computed = Arc::clone(&computed);
        let arrivals = Arc::clone(&arrivals);
        async move {
            arrivals.arrive();
            cache
                .try_get_or_set_with("flaky", Expiry::Default, || async move {
                    let attempt = computed.fetch_add(1, Ordering::SeqCst) + 1;
                    arrivals.wait_for(TASKS).await;
                    Err::<Report, _>(UpstreamDown { attempt })
                })
                .await
        }
    })
    .await;
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "computed more than once"
    );
    let errors: Vec<Arc<UpstreamDown>> = results
        .into_iter()
        .map(|result| match result {
            Err(GetOrSetError::Compute(err)) => err,
            other => panic!("expected the computation's error, got {other:?}"),
        })
        .collect();
    assert_eq!(errors.len(), TASKS);
    assert_eq!(errors[0].attempt, 1);
    for err in &errors {
        assert!(Arc::ptr_eq(err, &errors[0]), "every task shares one error");
    }
    // The error reads well and chains its cause.
    let shown = GetOrSetError::Compute(Arc::clone(&errors[0]));
    assert!(shown.to_string().contains("upstream down (attempt 1)"));
    let source = std::error::Error::source(&shown).expect("the error has a source");
    assert_eq!(source.to_string(), "upstream down (attempt 1)");

    // Nothing was stored; the next call computes again and stores its value.
    assert_eq!(cache.get::<Report>("flaky").await.unwrap(), None);
    let value = cache
        .try_get_or_set_with("flaky", Expiry::Default, || async {
            computed.fetch_add(1, Ordering::SeqCst);
            Ok::<_, UpstreamDown>(report())
        })
        .await
        .unwrap();
    assert_eq!(value, report());
    assert_eq!(computed.load(Ordering::SeqCst), 2);
    assert_eq!(cache.get::<Report>("flaky").await.unwrap(), Some(report()));
}

#[tokio::test]
async fn a_hit_is_returned_without_computing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    cache.set("report", &report()).await.unwrap();
    let computed = AtomicUsize::new(0);
    let value: Report = cache
        .get_or_set_with("report", Expiry::Default, || async {
            computed.fetch_add(1, Ordering::SeqCst);
            panic!("a hit must not compute");
        })
        .await
        .unwrap();
    assert_eq!(value, report());
    let value = cache
        .try_get_or_set_with("report", Expiry::Default, || async {
            computed.fetch_add(1, Ordering::SeqCst);
            Err::<Report, _>(UpstreamDown { attempt: 0 })
        })
        .await
        .unwrap();
    assert_eq!(value, report());
    assert_eq!(computed.load(Ordering::SeqCst), 0);

    // A stored value of another type is a decoding error, not a recomputation.
    let wrong = cache
        .get_or_set_with("report", Expiry::Default, || async {
            computed.fetch_add(1, Ordering::SeqCst);
            7_u32
        })
        .await;
    assert!(matches!(wrong, Err(Error::Deserialize(_))), "{wrong:?}");
    assert_eq!(computed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_explicit_ttl_expires_and_the_next_call_recomputes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let cache = open_with_clock(dir.path(), &clock).await;
    let computed = AtomicUsize::new(0);
    let next = || async { u32::try_from(computed.fetch_add(1, Ordering::SeqCst) + 1).unwrap() };
    let ttl = Duration::from_secs(60);
    assert_eq!(cache.get_or_set_with("token", ttl, next).await.unwrap(), 1);
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache.get_or_set_with("token", ttl, next).await.unwrap(), 1);
    assert_eq!(computed.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get::<u32>("token").await.unwrap(), None, "expired");
    assert_eq!(cache.get_or_set_with("token", ttl, next).await.unwrap(), 2);
    assert_eq!(computed.load(Ordering::SeqCst), 2);
    assert_eq!(cache.get::<u32>("token").await.unwrap(), Some(2));

    // No TTL and no default TTL: the entry never expires.
    assert_eq!(
        cache
            .get_or_set_with("forever", Expiry::Default, next)
            .await
            .unwrap(),
        3
    );
    clock.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert_eq!(
        cache
            .get_or_set_with("forever", Expiry::Default, next)
            .await
            .unwrap(),
        3
    );
    assert_eq!(computed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn no_ttl_means_the_default_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let cache = open_with_default_ttl(dir.path(), &clock, Duration::from_secs(300)).await;
    let computed = AtomicUsize::new(0);
    let next = || async { u32::try_from(computed.fetch_add(1, Ordering::SeqCst) + 1).unwrap() };
    assert_eq!(
        cache
            .get_or_set_with("temp", Expiry::Default, next)
            .await
            .unwrap(),
        1
    );
    // An explicit TTL overrides the default.
    let long = Duration::from_secs(3600);
    assert_eq!(cache.get_or_set_with("long", long, next).await.unwrap(), 2);
    clock.advance(Duration::from_secs(299));
    assert_eq!(
        cache
            .get_or_set_with("temp", Expiry::Default, next)
            .await
            .unwrap(),
        1
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get::<u32>("temp").await.unwrap(), None, "expired");
    assert_eq!(cache.get::<u32>("long").await.unwrap(), Some(2));
    assert_eq!(
        cache
            .get_or_set_with("temp", Expiry::Default, next)
            .await
            .unwrap(),
        3
    );
    assert_eq!(computed.load(Ordering::SeqCst), 3);
}

/// Starts a leader whose computation signals it has begun and then, when `fail` fires,
/// panics (or, if never fired, runs until the task is aborted).
async fn start_stuck_leader(
    cache: &PersistentCache,
    key: &'static str,
    fail: Option<tokio::sync::oneshot::Receiver<()>>,
) -> JoinHandle<u32> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let cache = cache.clone();
    let leader = tokio::spawn(async move {
        cache
            .get_or_set_with(key, Expiry::Default, || async move {
                started_tx.send(()).unwrap();
                match fail {
                    Some(fail) => {
                        fail.await.unwrap();
                        panic!("the computation panicked (expected by the test)");
                    }
                    None => std::future::pending::<u32>().await,
                }
            })
            .await
            .unwrap()
    });
    started_rx.await.expect("the leader started computing");
    leader
}

/// Spawns `count` tasks that ask for `key`, counting their computations in `computed`.
fn spawn_waiters(
    cache: &PersistentCache,
    key: &'static str,
    count: usize,
    computed: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<persistent_cache::Result<u32>>> {
    (0..count)
        .map(|_| {
            let cache = cache.clone();
            let computed = Arc::clone(computed);
            tokio::spawn(async move {
                cache
                    .get_or_set_with(key, Expiry::Default, || async move {
                        computed.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(50)).await;
                        42
                    })
                    .await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_aborted_leader_hands_over_to_a_waiter() {
    within_deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path()).await;
        let leader = start_stuck_leader(&cache, "job", None).await;
        let computed = Arc::new(AtomicUsize::new(0));
        let waiters = spawn_waiters(&cache, "job", 20, &computed);
        // Let the waiters join the leader's flight, then cancel the leader.
        sleep(Duration::from_millis(200)).await;
        assert_eq!(computed.load(Ordering::SeqCst), 0, "waiters must wait");
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        for result in join_all(waiters).await {
            assert_eq!(result.unwrap(), 42);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1, "one waiter took over");
        assert_eq!(cache.get::<u32>("job").await.unwrap(), Some(42));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_computation_hands_over_to_a_waiter() {
    within_deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path()).await;
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel();
        let leader = start_stuck_leader(&cache, "job", Some(fail_rx)).await;
        let computed = Arc::new(AtomicUsize::new(0));
        let waiters = spawn_waiters(&cache, "job", 20, &computed);
        sleep(Duration::from_millis(200)).await;
        assert_eq!(computed.load(Ordering::SeqCst), 0, "waiters must wait");
        fail_tx.send(()).unwrap();
        assert!(leader.await.unwrap_err().is_panic());
        for result in join_all(waiters).await {
            assert_eq!(result.unwrap(), 42);
        }
        assert_eq!(computed.load(Ordering::SeqCst), 1, "one waiter took over");
        assert_eq!(cache.get::<u32>("job").await.unwrap(), Some(42));
        // The panic left the cache usable.
        assert_eq!(
            cache
                .get_or_set_with("after", Expiry::Default, || async { 1_u8 })
                .await
                .unwrap(),
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_keys_compute_independently_and_concurrently() {
    within_deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path()).await;
        let computed = Arc::new(AtomicUsize::new(0));
        // Each key's computation waits for the other's: this deadlocks (and times out) if
        // one key's flight held up another's.
        let both_running = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["alpha", "beta"]
            .into_iter()
            .cycle()
            .take(20)
            .map(|key| {
                let cache = cache.clone();
                let computed = Arc::clone(&computed);
                let both_running = Arc::clone(&both_running);
                tokio::spawn(async move {
                    let value = cache
                        .get_or_set_with(key, Expiry::Default, || async move {
                            computed.fetch_add(1, Ordering::SeqCst);
                            both_running.wait().await;
                            format!("value of {key}")
                        })
                        .await;
                    (key, value)
                })
            })
            .collect();
        for (key, value) in join_all(handles).await {
            assert_eq!(value.unwrap(), format!("value of {key}"));
        }
        assert_eq!(computed.load(Ordering::SeqCst), 2);
        assert_eq!(
            cache.get::<String>("alpha").await.unwrap().as_deref(),
            Some("value of alpha")
        );
        assert_eq!(
            cache.get::<String>("beta").await.unwrap().as_deref(),
            Some("value of beta")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_value_too_large_to_store_fails_the_leader_but_reaches_the_waiters() {
    const TASKS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let cache = PersistentCache::open(CacheOptions::new(dir.path()).size_limit(limit))
        .await
        .unwrap();
    let huge = vec![7_u8; limit as usize];
    let computed = Arc::new(AtomicUsize::new(0));
    let arrivals = Arc::new(Arrivals::default());
    let handles = (0..TASKS)
        .map(|_| {
            let cache = cache.clone();
            let computed = Arc::clone(&computed);
            let arrivals = Arc::clone(&arrivals);
            let huge = huge.clone();
            tokio::spawn(async move {
                arrivals.arrive();
                cache
                    .try_get_or_set_with("huge", Expiry::Default, || async move {
                        computed.fetch_add(1, Ordering::SeqCst);
                        arrivals.wait_for(TASKS).await;
                        Ok::<_, UpstreamDown>(huge)
                    })
                    .await
            })
        })
        .collect();
    let results = within_deadline(join_all(handles)).await;
    assert_eq!(
        computed.load(Ordering::SeqCst),
        1,
        "computed more than once"
    );
    let mut leader_errors = 0;
    for result in results {
        match result {
            Ok(value) => assert_eq!(value, huge),
            Err(GetOrSetError::Cache(Error::ValueTooLarge { size, limit: l })) => {
                assert!(size > l && l == limit);
                leader_errors += 1;
            }
            Err(other) => panic!("expected ValueTooLarge, got {other:?}"),
        }
    }
    assert_eq!(leader_errors, 1, "only the leader sees the store failure");
    assert_eq!(cache.get_raw("huge").await.unwrap(), None, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_with_another_error_type_computes_for_itself() {
    #[derive(Debug)]
    struct OtherError;

    within_deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path()).await;
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .try_get_or_set_with("mixed", Expiry::Default, || async move {
                        started_tx.send(()).unwrap();
                        fail_rx.await.unwrap();
                        Err::<u32, _>(UpstreamDown { attempt: 1 })
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .try_get_or_set_with("mixed", Expiry::Default, || async {
                        Ok::<u32, OtherError>(5)
                    })
                    .await
            })
        };
        sleep(Duration::from_millis(100)).await;
        fail_tx.send(()).unwrap();
        assert!(matches!(
            leader.await.unwrap(),
            Err(GetOrSetError::Compute(err)) if err.attempt == 1
        ));
        assert_eq!(waiter.await.unwrap().unwrap(), 5);
        assert_eq!(cache.get::<u32>("mixed").await.unwrap(), Some(5));
    })
    .await;
}

/// The leader of a flight counts its miss once (it checks again, uncounted, before computing),
/// and a later call counts its hit.
#[tokio::test]
async fn a_computed_value_counts_one_miss_and_a_later_read_one_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path()).await;
    let value: u32 = cache
        .get_or_set_with("k", Expiry::Never, || async { 7 })
        .await
        .unwrap();
    assert_eq!(value, 7);
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (0, 1));
    let again: u32 = cache
        .get_or_set_with("k", Expiry::Never, || async { 8 })
        .await
        .unwrap();
    assert_eq!(again, 7);
    let stats = cache.stats().await.unwrap();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}
