//! The one thread that advances the epoch of every engine with a running store, and only while
//! some store runs.
//!
//! A call's time limit is a deadline in epoch ticks (wasmtime's epoch interruption), so some
//! thread must advance each engine's epoch every [`EPOCH_TICK`]. One thread serves all engines
//! of the process; it starts with the first [`Ticking`] guard and ends within a tick of the
//! last guard's drop, so a program that opens and closes caches keeps no thread behind.

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances: the resolution of every time limit.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engines that need ticks, with how many guards each has; and whether the thread runs.
struct Ticker {
    engines: Vec<(EngineWeak, usize)>,
    running: bool,
}

static TICKER: Mutex<Ticker> = Mutex::new(Ticker {
    engines: Vec::new(),
    running: false,
});

fn ticker() -> MutexGuard<'static, Ticker> {
    TICKER.lock()
}

/// While alive, `engine`'s epoch advances every [`EPOCH_TICK`]. Hold one per running store.
pub(crate) struct Ticking {
    engine: EngineWeak,
}

impl Ticking {
    /// Starts ticking `engine` (and the ticker thread, if it is not running).
    ///
    /// Edge case: if the thread cannot be spawned, a warning is logged and deadlines never pass
    /// (calls still work, without a time limit); the next guard tries again.
    pub(crate) fn start(engine: &Engine) -> Ticking {
        let weak = engine.weak();
        let mut state = ticker();
        match state
            .engines
            .iter_mut()
            .find(|(other, _)| other.upgrade().is_some_and(|e| Engine::same(&e, engine)))
        {
            Some((_, users)) => *users += 1,
            None => state.engines.push((weak.clone(), 1)),
        }
        if !state.running {
            let spawned = std::thread::Builder::new()
                .name("pcache-epoch".to_owned())
                .spawn(tick);
            match spawned {
                Ok(_) => state.running = true,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot start the epoch ticker; time limits are not enforced")
                }
            }
        }
        Ticking { engine: weak }
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut state = ticker();
        let me = self.engine.upgrade();
        state.engines.retain_mut(|(other, users)| {
            let Some(other) = other.upgrade() else {
                return false; // dropped engine
            };
            if me.as_ref().is_some_and(|me| Engine::same(me, &other)) {
                *users -= 1;
            }
            *users > 0
        });
    }
}

/// The ticker thread: advances every registered engine until none is left.
fn tick() {
    loop {
        std::thread::sleep(EPOCH_TICK);
        let mut state = ticker();
        if state.engines.is_empty() {
            state.running = false;
            return;
        }
        for (engine, _) in &state.engines {
            if let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
            }
        }
    }
}
