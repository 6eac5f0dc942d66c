//! The scheduler's VMs for real: each [`crate::scheduler::Guest`] is a [`Vm`] booted by the
//! lab's backend, its agent reached over vsock.

use std::collections::HashMap;
use std::time::Duration;

use lab_model::Cause;
use lab_proto::{ExitStatus, Job, Stream};

use crate::cancel::Cancel;
use crate::lab::{Lab, Prepared};
use crate::scheduler::{ExecOutcome, Guest, Launcher, VmError};
use crate::session::{BootOptions, SessionError, SessionEvent, Vm};

/// Boots VMs of prepared kernels with the lab's backend.
#[derive(Debug)]
pub struct VmLauncher<'a> {
    lab: &'a Lab,
    kernels: HashMap<String, (Prepared, BootOptions)>,
    cancel: Cancel,
}

impl<'a> VmLauncher<'a> {
    /// A launcher for `kernels`, by the names the plan uses.
    pub fn new(
        lab: &'a Lab,
        kernels: HashMap<String, (Prepared, BootOptions)>,
        cancel: Cancel,
    ) -> Self {
        Self {
            lab,
            kernels,
            cancel,
        }
    }
}

impl Launcher for VmLauncher<'_> {
    fn launch(&self, kernel: &str, _slot: usize) -> Result<Box<dyn Guest>, VmError> {
        let (prepared, opts) = self.kernels.get(kernel).ok_or_else(|| VmError::Failed {
            reason: format!("kernel '{kernel}' was not prepared"),
            cause: Cause::VmBoot,
            console_tail: Vec::new(),
        })?;
        let vm = self
            .lab
            .boot(prepared, opts, &self.cancel, &mut |_| {})
            .map_err(|e| vm_error(e, Cause::VmBoot))?;
        Ok(Box::new(VmGuest { vm }))
    }
}

/// A booted [`Vm`] as the scheduler sees it.
#[derive(Debug)]
struct VmGuest {
    vm: Vm,
}

impl Guest for VmGuest {
    fn release(&self) -> String {
        self.vm.kernel_release().to_string()
    }

    fn boot_time(&self) -> Duration {
        self.vm.boot_time()
    }

    fn put(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), VmError> {
        self.vm
            .put(path, mode, data)
            .map_err(|e| vm_error(e, Cause::VmDied))
    }

    fn exec(
        &mut self,
        job: &Job,
        timeout: Duration,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExecOutcome, VmError> {
        let mut observer = |e: SessionEvent<'_>| {
            if let SessionEvent::Output(stream, data) = e {
                output(stream, data);
            }
        };
        match self.vm.exec(job, Some(timeout), &mut observer) {
            Ok(report) => Ok(ExecOutcome {
                status: report.status,
                timed_out: false,
                wall: Duration::from_micros(report.usage.wall_us),
            }),
            Err(SessionError::RunTimeout { .. }) => Ok(ExecOutcome {
                status: ExitStatus::Signal(9),
                timed_out: true,
                wall: timeout,
            }),
            Err(e) => Err(vm_error(e, Cause::VmDied)),
        }
    }

    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, VmError> {
        match self.vm.get(path) {
            Ok((data, _)) => Ok(Some(data)),
            // The agent answers a get of a missing file with an error for that request.
            Err(SessionError::Request { .. }) => Ok(None),
            Err(e) => Err(vm_error(e, Cause::VmDied)),
        }
    }

    fn shutdown(self: Box<Self>) {
        self.vm.shutdown();
    }
}

/// The scheduler's view of a session error; `died` is the cause when the VM itself ended.
fn vm_error(e: SessionError, died: Cause) -> VmError {
    let console_tail = e.console_tail().to_vec();
    let cause = match &e {
        SessionError::Cancelled { .. } => return VmError::Cancelled,
        SessionError::Request { message, .. } => return VmError::Request(message.clone()),
        SessionError::AgentLost { .. }
        | SessionError::Protocol { .. }
        | SessionError::AgentFailed { .. } => Cause::AgentLost,
        SessionError::Workdir(_)
        | SessionError::Launch { .. }
        | SessionError::BootTimeout { .. }
        | SessionError::NeverReady { .. } => Cause::VmBoot,
        _ => died,
    };
    VmError::Failed {
        reason: e.to_string(),
        cause,
        console_tail,
    }
}
