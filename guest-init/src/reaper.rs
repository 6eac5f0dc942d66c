//! Reaps every child of PID 1 from one thread. Execs register their pid when they spawn (under
//! the same lock, so an exit can never be reaped before its exec is known) and receive their
//! status; anything else — orphans re-parented to PID 1 — is reaped and dropped. A per-exec
//! `waitpid(-1)` would steal another exec's status.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::sys::{self, Reaped};

#[derive(Debug, Default)]
struct State {
    waiting: HashMap<libc::pid_t, Sender<Reaped>>,
    spawned: u64,
}

/// The reaper's registry; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    inner: Arc<(Mutex<State>, Condvar)>,
}

/// Held while spawning: the reaper cannot deliver (or drop) an exit until it is released.
pub struct SpawnGuard<'a> {
    state: MutexGuard<'a, State>,
    cond: &'a Condvar,
}

impl SpawnGuard<'_> {
    /// Registers `pid`; its exit status arrives on the returned receiver.
    pub fn register(mut self, pid: libc::pid_t) -> Receiver<Reaped> {
        let (tx, rx) = mpsc::channel();
        self.state.waiting.insert(pid, tx);
        self.state.spawned += 1;
        self.cond.notify_all();
        rx
    }
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.run())?;
        Ok(reaper)
    }

    /// Locks the registry for a spawn.
    pub fn spawning(&self) -> SpawnGuard<'_> {
        let (lock, cond) = &*self.inner;
        SpawnGuard {
            state: lock.lock().unwrap_or_else(|p| p.into_inner()),
            cond,
        }
    }

    fn run(&self) {
        let (lock, cond) = &*self.inner;
        loop {
            // Read before waiting: a spawn after this point changes the count, so a "no
            // children" answer that raced with it does not put the reaper to sleep.
            let seen = lock.lock().unwrap_or_else(|p| p.into_inner()).spawned;
            match sys::wait_any() {
                Ok(Some((pid, reaped))) => {
                    let mut state = lock.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tx) = state.waiting.remove(&pid) {
                        let _ = tx.send(reaped);
                    }
                }
                // No children: sleep until the next spawn.
                Ok(None) | Err(_) => {
                    let state = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let _unused = cond
                        .wait_while(state, |s| s.spawned == seen)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}
