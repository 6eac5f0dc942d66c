//! One VM, no slots: listing a suite's programs (`lab list`) and running one case with its
//! output live (`lab debug`).

use lab_model::{CaseId, Cause, RunEvent, TestCase, TestProgram, TestResult, LIST_CASE, MAIN_CASE};
use lab_proto::Stream;

use super::{missing, not_run, Guest, Launcher, Options, Plan, VmError};
use crate::cancel::Cancel;
use crate::executor::{self, CaseRun, Context, ListError};

/// Lists every program of `plan` (its first kernel) as `lab list` shows them: atf and bpf
/// programs in a VM booted when the first one needs it, plain and tap ones without one.
/// A program that cannot be listed gets its `__test_cases_list__` result instead of cases. A
/// bpf program comes back with the state its run would use filled in when its Kyuafile set none.
#[allow(clippy::type_complexity)]
pub fn list(
    plan: &Plan,
    launcher: &dyn Launcher,
) -> Result<Vec<(TestProgram, Result<Vec<TestCase>, TestResult>)>, VmError> {
    let opts = Options {
        jobs: 1,
        config: crate::config::UserConfig::default(),
        live_output: false,
        vm_memory: 0,
        shared_root: None,
    };
    let ctx = Context::new(plan, &opts);
    let kernel = plan.kernels.first().map(String::as_str).unwrap_or_default();
    let mut vm: Option<Box<dyn Guest>> = None;
    let mut out = Vec::new();
    for program in &plan.programs {
        let keep = |cases: Vec<TestCase>| -> Vec<TestCase> {
            cases
                .into_iter()
                .filter(|c| ctx.selected(program, &c.name))
                .collect()
        };
        if !program.host_path().is_file() {
            out.push((program.clone(), Err(missing(program))));
            continue;
        }
        if !program.needs_listing() {
            let cases = keep(program.cases.clone());
            if !cases.is_empty() {
                out.push((program.clone(), Ok(cases)));
            }
            continue;
        }
        if !ctx.selected_program(program) {
            continue;
        }
        let guest = match vm.as_mut() {
            Some(g) => g,
            None => {
                let mut g = launcher.launch(kernel, 0)?;
                executor::prepare_vm(g.as_mut(), &ctx)?;
                vm.insert(g)
            }
        };
        match executor::list(guest.as_mut(), &ctx, program) {
            Ok(listing) => {
                // The state the run would use, for `lab list -v` to show.
                let mut program = program.clone();
                if program.interface == lab_model::Interface::Bpf && program.bpf.state.is_none() {
                    program.bpf.state = Some(if listing.batch {
                        lab_model::BpfState::Object
                    } else {
                        lab_model::BpfState::Test
                    });
                }
                out.push((program, Ok(keep(listing.cases))))
            }
            Err(ListError::Broken(r)) => out.push((program.clone(), Err(r))),
            Err(ListError::Guest(e)) => return Err(e),
        }
    }
    if let Some(g) = vm {
        g.shutdown();
    }
    Ok(out)
}

/// Runs the one case `plan.filters[0]` names on the plan's first kernel with its output live
/// (`opts.live_output`), emitting its events. When `keep` is set and the case did not pass,
/// returns its VM for inspection. Ok(None) with no CaseFinished emitted: no such case.
pub fn debug(
    plan: &Plan,
    opts: &Options,
    launcher: &dyn Launcher,
    cancel: &Cancel,
    on_event: &mut dyn FnMut(&RunEvent),
    keep: bool,
) -> Result<Option<Box<dyn Guest>>, VmError> {
    let ctx = Context::new(plan, opts);
    let kernel = plan.kernels.first().cloned().unwrap_or_default();
    let Some((program, case)) = plan
        .programs
        .iter()
        .filter(|p| ctx.selected_program(p))
        .map(|p| {
            (
                p,
                plan.filters
                    .first()
                    .and_then(|f| f.split_once(':'))
                    .map(|(_, c)| c),
            )
        })
        .next()
    else {
        return Ok(None);
    };
    let case = case.unwrap_or(MAIN_CASE).to_string();
    if !program.host_path().is_file() {
        return Err(VmError::Request(
            missing(program).reason.unwrap_or_default(),
        ));
    }
    if cancel.is_cancelled() {
        return Err(VmError::Cancelled);
    }
    on_event(&RunEvent::VmBooting {
        slot: 0,
        kernel: kernel.clone(),
    });
    let mut guest = launcher.launch(&kernel, 0)?;
    executor::prepare_vm(guest.as_mut(), &ctx)?;
    on_event(&RunEvent::VmReady {
        slot: 0,
        kernel: kernel.clone(),
        release: guest.release(),
        boot_time: guest.boot_time(),
    });
    let cases = match executor::list(guest.as_mut(), &ctx, program) {
        Ok(listing) => listing.cases,
        Err(ListError::Guest(e)) => return Err(e),
        Err(ListError::Broken(result)) => {
            on_event(&not_run(&kernel, program, LIST_CASE, result));
            return Ok(keep.then_some(guest));
        }
    };
    let Some(case) = cases.into_iter().find(|c| c.name == case) else {
        guest.shutdown();
        return Ok(None);
    };
    let id = CaseId {
        kernel: kernel.clone(),
        program: program.path.clone(),
        case: case.name.clone(),
    };
    on_event(&RunEvent::CaseStarted {
        id: id.clone(),
        slot: 0,
    });
    let mut output = |stream: Stream, data: &[u8]| {
        on_event(&RunEvent::CaseOutput {
            id: id.clone(),
            stream: match stream {
                Stream::Stdout => lab_model::OutputStream::Stdout,
                Stream::Stderr => lab_model::OutputStream::Stderr,
            },
            data: data.to_vec(),
        });
    };
    let run = executor::run_case(guest.as_mut(), &ctx, program, &case, &mut output);
    let (run, lost) = match run {
        Ok(run) => (run, None),
        Err(failed) => {
            let (partial, e) = *failed;
            let result = match &e {
                VmError::Cancelled => {
                    TestResult::broken("interrupted").with_cause(Cause::Interrupted)
                }
                VmError::Request(m) => TestResult::broken(m.clone()).with_cause(Cause::Exec),
                VmError::Failed { reason, cause, .. } => {
                    TestResult::broken(reason.clone()).with_cause(*cause)
                }
            };
            (CaseRun { result, ..partial }, Some(e))
        }
    };
    let good = run.result.kind == lab_model::ResultType::Passed;
    on_event(&run.finished(id, program.interface));
    if let Some(VmError::Failed { .. }) = lost {
        guest.shutdown();
        return Ok(None);
    }
    if keep && !good {
        return Ok(Some(guest));
    }
    guest.shutdown();
    Ok(None)
}
