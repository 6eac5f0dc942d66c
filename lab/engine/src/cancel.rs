//! Cancellation from outside a run (Ctrl-C, SIGTERM): every running VM session registers its
//! event channel here and is woken at once, without polling.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use crate::vm::VmEvent;

/// A cancellation token shared by the sessions of one run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    cancelled: bool,
    next_id: u64,
    waiters: Vec<(u64, Sender<VmEvent>)>,
}

/// A session's registration; dropping it unregisters the session.
#[derive(Debug)]
pub struct Registration {
    token: Cancel,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut s) = self.token.inner.lock() {
            s.waiters.retain(|(id, _)| *id != self.id);
        }
    }
}

impl Cancel {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels every registered session, and every one registered later.
    pub fn cancel(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.cancelled = true;
            for (_, w) in s.waiters.drain(..) {
                let _ = w.send(VmEvent::Cancelled);
            }
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.lock().map(|s| s.cancelled).unwrap_or(true)
    }

    /// Registers a session's event channel; it gets [`VmEvent::Cancelled`] on cancellation (at
    /// once if already cancelled).
    pub fn register(&self, waiter: Sender<VmEvent>) -> Registration {
        let mut id = 0;
        if let Ok(mut s) = self.inner.lock() {
            if s.cancelled {
                let _ = waiter.send(VmEvent::Cancelled);
            } else {
                s.next_id += 1;
                id = s.next_id;
                s.waiters.push((id, waiter));
            }
        }
        Registration {
            token: self.clone(),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn registered_sessions_are_woken_and_late_ones_at_once() {
        let token = Cancel::new();
        let (tx, rx) = mpsc::channel();
        let _reg = token.register(tx);
        let (tx2, rx2) = mpsc::channel();
        drop(token.register(tx2));
        token.cancel();
        assert_eq!(rx.try_recv(), Ok(VmEvent::Cancelled));
        assert!(
            rx2.try_recv().is_err(),
            "an unregistered session is not woken"
        );
        let (tx3, rx3) = mpsc::channel();
        let _reg3 = token.register(tx3);
        assert_eq!(rx3.try_recv(), Ok(VmEvent::Cancelled));
        assert!(token.is_cancelled());
    }
}
