//! The scheduler: runs the test cases of a suite on one or more kernels across a number of VM
//! slots, and emits [`RunEvent`]s in the order `lab_model::event` documents. It never prints.
//!
//! Units of work are (kernel × test case); atf and bpf programs are first listed in a VM of
//! each kernel, which adds their cases. Each slot is a worker thread holding at most one VM:
//! it serves many cases of one kernel in a row and boots a VM of another kernel when its own
//! has no work left. Cases marked `is_exclusive` run after the parallel phase, one at a time.
//! A case with `execenv = "vm"` gets a fresh VM of its own.
//!
//! VMs are reached only through [`Launcher`] and [`Guest`], so the scheduler is tested with
//! fakes (below) and runs real VMs through `crate::launcher`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lab_model::{
    CaseId, Cause, Counts, Execenv, RunEvent, TestCase, TestProgram, TestResult, BUILD_CASE,
    LIST_CASE, MAIN_CASE,
};
use lab_proto::{ExitStatus, Job, Stream};

use crate::cancel::Cancel;
use crate::executor::{self, CaseRun, Context, ListError};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Kernels by the names the user gave, each running every program.
    pub kernels: Vec<String>,
    /// The test programs (cases of plain/tap programs known, atf/bpf ones listed in the VM).
    pub programs: Vec<TestProgram>,
    /// If not empty, only these cases run (`program:case`, or `program` for all its cases).
    pub filters: Vec<String>,
    /// Programs that could not be built (a BPF source clang rejected), by index into
    /// `programs`, with why: each is a broken result without a VM, and the rest runs.
    pub unbuilt: Vec<(usize, String)>,
}

/// The `filters` that name none of `programs`: a typo would otherwise run nothing and pass.
pub fn unmatched_filters<'f>(programs: &[TestProgram], filters: &'f [String]) -> Vec<&'f str> {
    filters
        .iter()
        .filter(|f| !programs.iter().any(|p| executor::filter_names(f, p)))
        .map(String::as_str)
        .collect()
}

/// How to run it.
#[derive(Debug, Clone)]
pub struct Options {
    /// VM slots (at least 1).
    pub jobs: usize,
    /// The user's configuration (Kyua's): what programs are given, what `required_configs`
    /// and `required_user` are checked against.
    pub config: crate::config::UserConfig,
    /// Emit [`RunEvent::CaseOutput`] as output arrives.
    pub live_output: bool,
    /// Each VM's memory in bytes (for `required_memory`).
    pub vm_memory: u64,
    /// The host directory the guests' shared root shows (`--root`), if any: suite trees
    /// under it are not copied into the guest, which has them at their own paths.
    pub shared_root: Option<PathBuf>,
}

/// Why a VM could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    /// The VM failed: it did not boot, died, or its agent was lost. It is unusable.
    #[error("{reason}")]
    Failed {
        /// What happened.
        reason: String,
        /// VmBoot, VmDied or AgentLost.
        cause: Cause,
        /// The console's last lines.
        console_tail: Vec<String>,
    },
    /// A request failed in the guest (a put or an exec the agent refused); the VM is fine.
    #[error("{0}")]
    Request(String),
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// How an exec in the guest ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Its exit (SIGKILL when it was killed for its timeout).
    pub status: ExitStatus,
    /// Whether it ran past its timeout and was killed.
    pub timed_out: bool,
    /// Its wall time.
    pub wall: Duration,
}

/// A booted VM with its agent ready.
pub trait Guest: Send {
    /// The guest kernel's release.
    fn release(&self) -> String;
    /// Launch → agent ready.
    fn boot_time(&self) -> Duration;
    /// Writes a file (parents created).
    fn put(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), VmError>;
    /// Runs `job`, killing it after `timeout`; output goes to `output` as it arrives.
    fn exec(
        &mut self,
        job: &Job,
        timeout: Duration,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<ExecOutcome, VmError>;
    /// Reads a file; `None` when it does not exist.
    fn get(&mut self, path: &str) -> Result<Option<Vec<u8>>, VmError>;
    /// Powers the VM off.
    fn shutdown(self: Box<Self>);
}

/// Boots VMs.
pub trait Launcher: Sync {
    /// Boots a VM of `kernel` (one of the plan's names) for `slot`.
    fn launch(&self, kernel: &str, slot: usize) -> Result<Box<dyn Guest>, VmError>;
}

/// Runs `plan` and returns the counts of results; events go to `on_event` on the calling
/// thread, in order.
pub fn run(
    plan: &Plan,
    opts: &Options,
    launcher: &dyn Launcher,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&RunEvent),
) -> Counts {
    let started = Instant::now();
    let jobs = opts.jobs.max(1);
    let (tx, rx) = mpsc::channel::<RunEvent>();
    let mut counts = Counts::default();
    let mut forward = |e: RunEvent, counts: &mut Counts| {
        if let RunEvent::CaseFinished { result, .. } = &e {
            counts.add(result.kind);
        }
        on_event(&e);
    };
    let ctx = Context::new(plan, opts);
    forward(
        RunEvent::RunStarted {
            kernels: plan.kernels.clone(),
            programs: plan
                .programs
                .iter()
                .filter(|p| ctx.selected_program(p))
                .count(),
            jobs,
            root: opts
                .shared_root
                .as_ref()
                .map_or("initramfs".into(), |r| r.display().to_string()),
        },
        &mut counts,
    );

    let shared = Shared::new(plan, &ctx, &tx);
    std::thread::scope(|s| {
        for slot in 0..jobs {
            let (shared, tx, ctx) = (&shared, tx.clone(), &ctx);
            s.spawn(move || {
                Worker {
                    slot,
                    shared,
                    ctx,
                    launcher,
                    cancel,
                    tx,
                    vm: None,
                    avoid: Vec::new(),
                }
                .work()
            });
        }
        drop(tx);
        // Forward events as the workers send them; the loop ends when every worker is done.
        for e in rx.iter() {
            forward(e, &mut counts);
        }
    });

    let interrupted = cancel.is_cancelled();
    // Programs cut short by an interrupt still get their ProgramFinished.
    let unfinished = shared.lock().unfinished();
    for (kernel, program) in unfinished {
        forward(RunEvent::ProgramFinished { kernel, program }, &mut counts);
    }
    forward(
        RunEvent::RunFinished {
            counts,
            duration: started.elapsed(),
            interrupted,
        },
        &mut counts,
    );
    counts
}

/// A unit of work on one kernel.
#[derive(Debug, Clone)]
enum Unit {
    /// List an atf/bpf program's cases.
    List(usize),
    /// Run a case of a program.
    Case(usize, Box<TestCase>),
    /// Run cases of a program in one exec (a BPF object whose tests share a load).
    Batch(usize, Vec<TestCase>),
}

impl Unit {
    fn program(&self) -> usize {
        match self {
            Self::List(p) | Self::Case(p, _) | Self::Batch(p, _) => *p,
        }
    }

    /// The cases it runs.
    fn cases(&self) -> Vec<&TestCase> {
        match self {
            Self::List(_) => Vec::new(),
            Self::Case(_, c) => vec![c],
            Self::Batch(_, cs) => cs.iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Parallel,
    Exclusive,
    Done,
}

#[derive(Debug)]
struct KernelWork {
    name: String,
    queue: VecDeque<Unit>,
    exclusive: VecDeque<Unit>,
    /// Units outstanding per program (queued, running, or a listing still to add cases).
    pending: Vec<usize>,
    /// Set once the kernel's VM could not boot: its units are broken without running.
    failed: Option<String>,
    /// VMs of this kernel up in slots now.
    live: usize,
}

#[derive(Debug)]
struct State {
    kernels: Vec<KernelWork>,
    phase: Phase,
    /// Units being run (which may add units when they are listings).
    running: usize,
    interrupted: bool,
}

impl State {
    /// (kernel, program index) pairs whose ProgramFinished has not been sent.
    fn unfinished(&self) -> Vec<(String, usize)> {
        self.kernels
            .iter()
            .flat_map(|k| {
                k.pending
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(p, _)| (k.name.clone(), p))
            })
            .collect()
    }
}

struct Shared<'a> {
    state: Mutex<State>,
    wake: Condvar,
    programs: &'a [TestProgram],
}

impl<'a> Shared<'a> {
    /// The initial state: every program's first unit on every kernel. Programs missing on the
    /// host and cases filtered out never enter the queues; the former get their broken result
    /// here.
    fn new(plan: &'a Plan, ctx: &Context<'_>, tx: &mpsc::Sender<RunEvent>) -> Self {
        let mut kernels = Vec::new();
        for kernel in &plan.kernels {
            let mut k = KernelWork {
                name: kernel.clone(),
                queue: VecDeque::new(),
                exclusive: VecDeque::new(),
                pending: vec![0; plan.programs.len()],
                failed: None,
                live: 0,
            };
            for (i, p) in plan.programs.iter().enumerate() {
                if !ctx.selected_program(p) {
                    continue;
                }
                let unbuilt = plan.unbuilt.iter().find(|(u, _)| *u == i);
                if unbuilt.is_some() || !p.host_path().is_file() {
                    let event = match unbuilt {
                        Some((_, why)) => build_failed(kernel, p, why),
                        None => {
                            let case = if p.needs_listing() {
                                LIST_CASE
                            } else {
                                MAIN_CASE
                            };
                            not_run(kernel, p, case, missing(p))
                        }
                    };
                    let _ = tx.send(event);
                    let _ = tx.send(RunEvent::ProgramFinished {
                        kernel: kernel.clone(),
                        program: p.path.clone(),
                    });
                    continue;
                }
                let units: Vec<Unit> = if p.needs_listing() {
                    vec![Unit::List(i)]
                } else {
                    p.cases
                        .iter()
                        .filter(|c| ctx.selected(p, &c.name))
                        .map(|c| Unit::Case(i, Box::new(c.clone())))
                        .collect()
                };
                if units.is_empty() {
                    continue;
                }
                if !p.needs_listing() {
                    let _ = tx.send(RunEvent::CasesListed {
                        kernel: kernel.clone(),
                        program: p.path.clone(),
                        cases: units.len(),
                    });
                }
                k.pending[i] = units.len();
                for u in units {
                    k.push(u);
                }
            }
            kernels.push(k);
        }
        // The lab's programs are referred to by index in `pending`; `unfinished` maps back.
        Self {
            state: Mutex::new(State {
                kernels,
                phase: Phase::Parallel,
                running: 0,
                interrupted: false,
            }),
            wake: Condvar::new(),
            programs: &plan.programs,
        }
    }

    fn lock(&self) -> Guard<'_, 'a> {
        Guard {
            state: self.state.lock().unwrap_or_else(|p| p.into_inner()),
            programs: self.programs,
        }
    }
}

/// The state, locked, with the programs at hand to name them.
struct Guard<'g, 'a> {
    state: MutexGuard<'g, State>,
    programs: &'a [TestProgram],
}

impl Guard<'_, '_> {
    fn unfinished(&self) -> Vec<(String, String)> {
        self.state
            .unfinished()
            .into_iter()
            .map(|(k, p)| (k, self.programs[p].path.clone()))
            .collect()
    }
}

impl KernelWork {
    fn push(&mut self, unit: Unit) {
        let exclusive = unit.cases().iter().any(|c| c.metadata.is_exclusive);
        if exclusive {
            self.exclusive.push_back(unit);
        } else {
            self.queue.push_back(unit);
        }
    }
}

fn queue_of(k: &mut KernelWork, exclusive: bool) -> &mut VecDeque<Unit> {
    if exclusive {
        &mut k.exclusive
    } else {
        &mut k.queue
    }
}

/// The next unit for a slot holding a VM of kernel `own`: its own kernel's first, otherwise
/// the kernel with the most work waiting.
fn pick(
    kernels: &mut [KernelWork],
    own: Option<usize>,
    exclusive: bool,
    avoid: &[usize],
) -> Option<(usize, Unit)> {
    if let Some(k) = own {
        if let Some(u) = queue_of(&mut kernels[k], exclusive).pop_front() {
            return Some((k, u));
        }
    }
    let len = |k: &KernelWork| {
        if exclusive {
            k.exclusive.len()
        } else {
            k.queue.len()
        }
    };
    let k = (0..kernels.len())
        .filter(|&k| len(&kernels[k]) > 0 && !avoid.contains(&k))
        .max_by_key(|&k| (len(&kernels[k]), std::cmp::Reverse(k)))?;
    queue_of(&mut kernels[k], exclusive)
        .pop_front()
        .map(|u| (k, u))
}

/// A CaseFinished for a case that never ran.
/// The one result of a program that did not build: case `__build__`, broken, the compiler's
/// first error line (`file:line:col: error: ...`) as the reason and its whole output as stderr.
fn build_failed(kernel: &str, p: &TestProgram, why: &str) -> RunEvent {
    let reason = why
        .lines()
        .find(|l| l.contains(": error:") || l.contains(": fatal error:"))
        .or_else(|| why.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or("the program did not build")
        .trim();
    let mut event = not_run(
        kernel,
        p,
        BUILD_CASE,
        TestResult::broken(reason).with_cause(Cause::Exec),
    );
    if let RunEvent::CaseFinished { stderr, .. } = &mut event {
        *stderr = why.to_string();
    }
    event
}

fn not_run(kernel: &str, p: &TestProgram, case: &str, result: TestResult) -> RunEvent {
    RunEvent::CaseFinished {
        id: CaseId {
            kernel: kernel.to_string(),
            program: p.path.clone(),
            case: case.to_string(),
        },
        interface: p.interface,
        result,
        subresults: Vec::new(),
        duration: Duration::ZERO,
        stdout: String::new(),
        stderr: String::new(),
    }
}

struct Worker<'s, 'a> {
    slot: usize,
    shared: &'s Shared<'a>,
    ctx: &'s Context<'a>,
    launcher: &'s dyn Launcher,
    cancel: &'s Cancel,
    tx: mpsc::Sender<RunEvent>,
    /// The VM this slot holds: its kernel's index and the guest.
    vm: Option<(usize, Box<dyn Guest>)>,
    /// Kernels this slot leaves to the others: a boot of one failed here while a VM of it was
    /// up in another slot (a boot's failure, not the kernel's).
    avoid: Vec<usize>,
}

impl Worker<'_, '_> {
    fn work(mut self) {
        while let Some((k, unit)) = self.next() {
            self.run_unit(k, unit);
            let mut g = self.shared.lock();
            g.state.running -= 1;
            drop(g);
            self.shared.wake.notify_all();
        }
        if let Some((k, vm)) = self.vm.take() {
            self.release(k, vm);
        }
    }

    /// Shuts down this slot's VM of kernel `k`.
    fn release(&self, k: usize, vm: Box<dyn Guest>) {
        vm.shutdown();
        let mut g = self.shared.lock();
        let kw = &mut g.state.kernels[k];
        kw.live = kw.live.saturating_sub(1);
    }

    /// The next unit for this slot, waiting while listings in progress may still add work.
    fn next(&mut self) -> Option<(usize, Unit)> {
        let mut g = self.shared.lock();
        loop {
            if self.cancel.is_cancelled() {
                if !g.state.interrupted {
                    g.state.interrupted = true;
                    let _ = self.tx.send(RunEvent::Interrupted { forced: false });
                }
                self.shared.wake.notify_all();
                return None;
            }
            let phase = g.state.phase;
            let own = self.vm.as_ref().map(|(k, _)| *k);
            match phase {
                Phase::Parallel => {
                    if let Some(found) = pick(&mut g.state.kernels, own, false, &self.avoid) {
                        g.state.running += 1;
                        return Some(found);
                    }
                    // Units this slot leaves to others (a kernel it avoids) keep the parallel
                    // phase going until a slot with a VM of their kernel has run them.
                    let waiting = g.state.kernels.iter().any(|k| !k.queue.is_empty());
                    if g.state.running == 0 && !waiting {
                        g.state.phase = Phase::Exclusive;
                        self.shared.wake.notify_all();
                        continue;
                    }
                }
                Phase::Exclusive => {
                    // One slot runs the exclusive cases, one at a time.
                    if self.slot != 0 {
                        return None;
                    }
                    if let Some(found) = pick(&mut g.state.kernels, own, true, &[]) {
                        g.state.running += 1;
                        return Some(found);
                    }
                    g.state.phase = Phase::Done;
                    self.shared.wake.notify_all();
                    return None;
                }
                Phase::Done => return None,
            }
            g.state = self
                .shared
                .wake
                .wait(g.state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn send(&self, e: RunEvent) {
        let _ = self.tx.send(e);
    }

    fn run_unit(&mut self, k: usize, unit: Unit) {
        let p = unit.program();
        let program = &self.shared.programs[p];
        let kernel = self.shared.lock().state.kernels[k].name.clone();

        // A kernel that cannot boot breaks its units without trying again.
        let failed = self.shared.lock().state.kernels[k].failed.clone();
        if let Some(reason) = failed {
            self.finish_unrun(
                k,
                &unit,
                TestResult::broken(reason).with_cause(Cause::VmBoot),
            );
            return;
        }
        // Requirements the host can check need no VM.
        let unit = match unit {
            Unit::Case(_, case) => {
                if let Some(skip) = self.ctx.host_requirements(program, &case) {
                    self.finish_unrun(k, &Unit::Case(p, case), skip);
                    return;
                }
                Unit::Case(p, case)
            }
            Unit::Batch(_, cases) => {
                let mut left = Vec::new();
                for case in cases {
                    match self.ctx.host_requirements(program, &case) {
                        Some(skip) => self.send(not_run(&kernel, program, &case.name, skip)),
                        None => left.push(case),
                    }
                }
                if left.is_empty() {
                    self.done(k, p);
                    return;
                }
                Unit::Batch(p, left)
            }
            other => other,
        };

        let fresh = unit
            .cases()
            .first()
            .is_some_and(|c| c.metadata.execenv == Execenv::Vm);
        if fresh {
            // A fresh VM of its own: this slot's VM is put away first.
            if let Some((vk, vm)) = self.vm.take() {
                self.release(vk, vm);
            }
        } else if self.vm.as_ref().is_some_and(|(vk, _)| *vk != k) {
            if let Some((vk, vm)) = self.vm.take() {
                self.release(vk, vm);
            }
        }
        if self.vm.is_none() {
            match self.boot(&kernel) {
                Ok(vm) => {
                    self.shared.lock().state.kernels[k].live += 1;
                    self.vm = Some((k, vm));
                }
                // Units that never started get no result on interrupt; their programs still
                // get ProgramFinished at the end of the run.
                Err(VmError::Cancelled) => return,
                Err(e) => {
                    if self.leave_to_others(k, &unit) {
                        return;
                    }
                    let reason = format!("VM boot failed: {e}");
                    self.fail_kernel(k, &reason);
                    self.finish_unrun(
                        k,
                        &unit,
                        TestResult::broken(reason).with_cause(Cause::VmBoot),
                    );
                    return;
                }
            }
        }
        let (vk, mut guest) = self.vm.take().expect("a VM was just booted");
        let lost = match unit {
            Unit::List(_) => match executor::list(guest.as_mut(), self.ctx, program) {
                Ok(listing) => {
                    let selected: Vec<TestCase> = listing
                        .cases
                        .into_iter()
                        .filter(|c| self.ctx.selected(program, &c.name))
                        .collect();
                    let count = selected.len();
                    let units: Vec<Unit> = if listing.batch && !selected.is_empty() {
                        vec![Unit::Batch(p, selected)]
                    } else {
                        selected
                            .into_iter()
                            .map(|c| Unit::Case(p, Box::new(c)))
                            .collect()
                    };
                    self.send(RunEvent::CasesListed {
                        kernel: kernel.clone(),
                        program: program.path.clone(),
                        cases: count,
                    });
                    let mut g = self.shared.lock();
                    let kw = &mut g.state.kernels[k];
                    kw.pending[p] += units.len();
                    for u in units {
                        kw.push(u);
                    }
                    drop(g);
                    self.shared.wake.notify_all();
                    self.done(k, p);
                    None
                }
                Err(ListError::Broken(result)) => {
                    self.send(not_run(&kernel, program, LIST_CASE, result));
                    self.done(k, p);
                    None
                }
                Err(ListError::Guest(e)) => {
                    let (result, lost) = self.vm_lost(&kernel, e);
                    self.send(not_run(&kernel, program, LIST_CASE, result));
                    self.done(k, p);
                    lost.then_some(())
                }
            },
            Unit::Batch(_, cases) => {
                let lost = self.run_batch(&kernel, program, &cases, guest.as_mut());
                self.done(k, p);
                (lost || fresh).then_some(())
            }
            Unit::Case(_, case) => {
                let id = CaseId {
                    kernel: kernel.clone(),
                    program: program.path.clone(),
                    case: case.name.clone(),
                };
                self.send(RunEvent::CaseStarted {
                    id: id.clone(),
                    slot: self.slot,
                });
                let tx = self.tx.clone();
                let live = self.ctx.live_output();
                let mut output = |stream: Stream, data: &[u8]| {
                    if live {
                        let _ = tx.send(RunEvent::CaseOutput {
                            id: id.clone(),
                            stream: match stream {
                                Stream::Stdout => lab_model::OutputStream::Stdout,
                                Stream::Stderr => lab_model::OutputStream::Stderr,
                            },
                            data: data.to_vec(),
                        });
                    }
                };
                let run = executor::run_case(guest.as_mut(), self.ctx, program, &case, &mut output);
                let (run, lost) = match run {
                    Ok(run) => (run, false),
                    Err(failed) => {
                        let (partial, e) = *failed;
                        let (result, lost) = self.vm_lost(&kernel, e);
                        (CaseRun { result, ..partial }, lost)
                    }
                };
                self.send(run.finished(id, program.interface));
                self.done(k, p);
                (lost || fresh).then_some(())
            }
        };
        if lost.is_some() {
            self.release(vk, guest);
        } else {
            self.vm = Some((vk, guest));
        }
    }

    fn boot(&mut self, kernel: &str) -> Result<Box<dyn Guest>, VmError> {
        self.send(RunEvent::VmBooting {
            slot: self.slot,
            kernel: kernel.to_string(),
        });
        let mut vm = self.launcher.launch(kernel, self.slot);
        if let Ok(guest) = vm.as_mut() {
            if let Err(e) = executor::prepare_vm(guest.as_mut(), self.ctx) {
                vm = Err(e);
            }
        }
        match &vm {
            Ok(guest) => self.send(RunEvent::VmReady {
                slot: self.slot,
                kernel: kernel.to_string(),
                release: guest.release(),
                boot_time: guest.boot_time(),
            }),
            Err(VmError::Cancelled) => {}
            Err(e) => self.send(RunEvent::VmFailed {
                slot: self.slot,
                kernel: kernel.to_string(),
                reason: e.to_string(),
                console_tail: match e {
                    VmError::Failed { console_tail, .. } => console_tail.clone(),
                    _ => Vec::new(),
                },
            }),
        }
        vm
    }

    /// The result of a unit whose request failed, and whether its VM is gone (then the next
    /// unit boots another).
    fn vm_lost(&mut self, kernel: &str, e: VmError) -> (TestResult, bool) {
        match e {
            VmError::Failed {
                reason,
                cause,
                console_tail,
            } => {
                self.send(RunEvent::VmFailed {
                    slot: self.slot,
                    kernel: kernel.to_string(),
                    reason: reason.clone(),
                    console_tail,
                });
                (TestResult::broken(reason).with_cause(cause), true)
            }
            VmError::Request(m) => (TestResult::broken(m).with_cause(Cause::Exec), false),
            VmError::Cancelled => (
                TestResult::broken("interrupted").with_cause(Cause::Interrupted),
                true,
            ),
        }
    }

    /// After a failed boot of kernel `k` for `unit`: where a VM of `k` is up in another slot
    /// (and the run is in its parallel phase), the failure is this boot's, not the kernel's
    /// (a loaded host, a stalled emulation): the unit goes back to the front of the queue for
    /// that slot and this slot leaves `k` to it. Returns whether it did.
    fn leave_to_others(&mut self, k: usize, unit: &Unit) -> bool {
        let mut g = self.shared.lock();
        if g.state.phase != Phase::Parallel || g.state.kernels[k].live == 0 {
            return false;
        }
        g.state.kernels[k].queue.push_front(unit.clone());
        drop(g);
        self.avoid.push(k);
        true
    }

    /// Marks kernel `k` unbootable and breaks its queued units.
    fn fail_kernel(&mut self, k: usize, reason: &str) {
        let units: Vec<Unit> = {
            let mut g = self.shared.lock();
            let kw = &mut g.state.kernels[k];
            kw.failed = Some(reason.to_string());
            kw.queue.drain(..).chain(kw.exclusive.drain(..)).collect()
        };
        for u in units {
            self.finish_unrun(k, &u, TestResult::broken(reason).with_cause(Cause::VmBoot));
        }
    }

    fn finish_unrun(&mut self, k: usize, unit: &Unit, result: TestResult) {
        let p = unit.program();
        let program = &self.shared.programs[p];
        let kernel = self.shared.lock().state.kernels[k].name.clone();
        match unit {
            Unit::List(_) => self.send(not_run(&kernel, program, LIST_CASE, result)),
            _ => {
                for c in unit.cases() {
                    self.send(not_run(&kernel, program, &c.name, result.clone()));
                }
            }
        }
        self.done(k, p);
    }

    /// Runs `cases` of `program` in one exec ([`executor::run_bpf_batch`]) and reports each;
    /// returns whether the VM was lost.
    fn run_batch(
        &mut self,
        kernel: &str,
        program: &TestProgram,
        cases: &[TestCase],
        guest: &mut dyn Guest,
    ) -> bool {
        let id = |c: &TestCase| CaseId {
            kernel: kernel.to_string(),
            program: program.path.clone(),
            case: c.name.clone(),
        };
        let mut sorted: Vec<&TestCase> = cases.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        // The first case is under way while the exec runs; the others start as it reports.
        if let Some(first) = sorted.first() {
            self.send(RunEvent::CaseStarted {
                id: id(first),
                slot: self.slot,
            });
        }
        let owned: Vec<TestCase> = sorted.iter().map(|c| (*c).clone()).collect();
        let (runs, lost) =
            match executor::run_bpf_batch(guest, self.ctx, program, &owned, &mut |_, _| {}) {
                Ok(runs) => (runs, false),
                Err(failed) => {
                    let (partial, e) = *failed;
                    let (result, lost) = self.vm_lost(kernel, e);
                    let runs = partial
                        .into_iter()
                        .map(|r| CaseRun {
                            result: result.clone(),
                            ..r
                        })
                        .collect();
                    (runs, lost)
                }
            };
        for (i, (case, run)) in owned.iter().zip(runs).enumerate() {
            if i > 0 {
                self.send(RunEvent::CaseStarted {
                    id: id(case),
                    slot: self.slot,
                });
            }
            self.send(run.finished(id(case), program.interface));
        }
        lost
    }

    /// One unit of program `p` on kernel `k` is done; the last one finishes the program.
    fn done(&mut self, k: usize, p: usize) {
        let mut g = self.shared.lock();
        let kw = &mut g.state.kernels[k];
        kw.pending[p] = kw.pending[p].saturating_sub(1);
        if kw.pending[p] == 0 {
            let e = RunEvent::ProgramFinished {
                kernel: kw.name.clone(),
                program: self.shared.programs[p].path.clone(),
            };
            // Sent under the lock so no later unit of this program can overtake it.
            let _ = self.tx.send(e);
        }
    }
}

/// The result of a program that is not on the host.
fn missing(p: &TestProgram) -> TestResult {
    TestResult::broken(format!(
        "Test program '{}' does not exist",
        p.host_path().display()
    ))
    .with_cause(Cause::Exec)
}

/// Where the suite roots go in the guest: `/lab/suites/N` for the Nth distinct root.
pub fn suite_roots(programs: &[TestProgram]) -> HashMap<PathBuf, usize> {
    let mut roots = HashMap::new();
    for p in programs {
        let n = roots.len();
        roots.entry(p.root.clone()).or_insert(n);
    }
    roots
}

mod single;
#[cfg(test)]
mod tests;

pub use single::{debug, list};
