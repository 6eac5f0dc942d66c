//! The executor: lists a test program and runs one test case in a guest, Kyua-style: a fresh
//! work directory with HOME and TMPDIR in it, TZ=UTC, its own process group, the case's
//! timeout enforced from the host, requirements checked first, and the interface turning the
//! run into a result. The execenv decides how the process is isolated in the guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lab_model::{
    BpfState, Cause, Execenv, Interface, RequiredUser, SubResult, TestCase, TestProgram, TestResult,
};
use lab_proto::{ExitStatus, Job, Stream};

use crate::interface::{atf, bpf, plain, tap, RunOutcome};
use crate::scheduler::{suite_roots, ExecOutcome, Guest, Options, Plan, VmError};

/// How long listing a program may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an atf cleanup routine may take (Kyua's).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the lab's own bookkeeping commands may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of each output stream kept for the report (the tail).
const KEEP_OUTPUT: usize = 64 * 1024;
/// The most of stdout kept for parsing (listings, TAP streams).
const PARSE_OUTPUT: usize = 8 << 20;
/// Where result files go in the guest (world-writable, sticky: unprivileged cases write there).
const RESULTS_DIR: &str = "/tmp/lab-results";
/// Where work directories go in the guest.
const WORK_DIR: &str = "/tmp/lab-work";
/// The guest's unprivileged user and group (`nobody`, `nogroup`).
const UNPRIVILEGED: (u32, u32) = (65534, 65534);
/// The guest's architecture and platform names, as Kyua's `allowed_*` properties see them.
const ARCHITECTURES: &[&str] = &["x86_64", "amd64"];
const PLATFORMS: &[&str] = &["x86_64", "amd64", "linux"];

/// The run's fixed facts, shared by every slot.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    opts: &'a Options,
    filters: &'a [String],
    /// Suite root on the host → where the guest has it: `/lab/suites/N` (put there), or its
    /// own path where the guest's shared root shows it.
    roots: HashMap<PathBuf, String>,
    /// Files of every suite root: (guest path, mode, host path).
    files: Vec<(String, u32, PathBuf)>,
    next: AtomicU64,
}

impl<'a> Context<'a> {
    pub(crate) fn new(plan: &'a Plan, opts: &'a Options) -> Self {
        let numbered = suite_roots(&plan.programs);
        let mut files = Vec::new();
        let mut sorted: Vec<_> = numbered.iter().collect();
        sorted.sort_by_key(|(_, n)| **n);
        let mut roots = HashMap::new();
        for (root, n) in sorted {
            // What the shared root shows is not copied: the guest has it at its own path.
            let dir = match shown(opts.shared_root.as_deref(), root) {
                Some(dir) => dir,
                None => {
                    let dir = format!("/lab/suites/{n}");
                    collect_files(root, &dir, &mut files);
                    dir
                }
            };
            roots.insert(root.clone(), dir);
        }
        for p in &plan.programs {
            let n = roots.get(&p.root).map_or("/lab/suites/0", String::as_str);
            if let (Some(exe), Some(rel)) = (&p.bpf.maps_setup_built, &p.bpf.maps_setup) {
                files.push((maps_setup_guest_path(n, rel, true), 0o755, exe.clone()));
            }
            let Some(built) = &p.built else { continue };
            if p.interface == Interface::Bpf {
                files.push((built_guest_path(n, p), 0o644, built.clone()));
                continue;
            }
            // A compiled test program comes with what was built beside it (its BPF
            // objects): the whole output directory goes beside the program.
            let dir = guest_dir(n, p);
            if let Some(out) = built.parent() {
                let mut outputs = Vec::new();
                collect_files(out, &dir, &mut outputs);
                files.extend(outputs);
            }
        }
        Self {
            opts,
            filters: &plan.filters,
            roots,
            files,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn live_output(&self) -> bool {
        self.opts.live_output
    }

    /// Whether `case` of `program` passes the plan's filters.
    pub(crate) fn selected(&self, program: &TestProgram, case: &str) -> bool {
        self.filters.is_empty()
            || self.filters.iter().any(|f| match f.split_once(':') {
                Some((p, c)) => glob_path(p, &program.path) && (c == case || c == "*"),
                None => glob_path(f, &program.path),
            })
    }

    /// Whether any case of `program` may pass the filters.
    pub(crate) fn selected_program(&self, program: &TestProgram) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| filter_names(f, program))
    }

    /// What runs in the guest: the program, or what lab built from it.
    fn guest_path(&self, program: &TestProgram) -> String {
        let n = self
            .roots
            .get(&program.root)
            .map_or("/lab/suites/0", String::as_str);
        if program.built.is_some() {
            built_guest_path(n, program)
        } else {
            format!("{n}/{}", program.path)
        }
    }

    fn srcdir(&self, program: &TestProgram) -> String {
        let path = self.guest_path(program);
        match path.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => dir.to_string(),
            _ => "/".to_string(),
        }
    }

    /// The configuration a test program is given: its test suite's variables, and the
    /// `unprivileged_user` under both of Kyua's spellings where set (Kyua's `generate_config`).
    fn test_config(&self, program: &TestProgram) -> Vec<(String, String)> {
        self.opts
            .config
            .program_vars(&program.test_suite)
            .into_iter()
            .collect()
    }

    /// The user `required_user = 'unprivileged'` runs as: the configured `unprivileged_user`
    /// (`nobody`, `root`, or a numeric `UID[:GID]`). Unset, such cases were skipped by
    /// [`Context::host_requirements`]; `nobody` stands in.
    fn unprivileged(&self) -> Result<(u32, u32), TestResult> {
        match &self.opts.config.unprivileged_user {
            None => Ok(UNPRIVILEGED),
            Some(name) => guest_user(name).ok_or_else(|| {
                TestResult::broken(format!(
                    "unprivileged_user '{name}' is no user of the guest (nobody, root, or a \
                     numeric UID[:GID])"
                ))
                .with_cause(Cause::Exec)
            }),
        }
    }

    fn unique(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The requirements the host can decide (configuration, architecture, platform, user,
    /// memory); `Some(skipped)` when one is not met. Kyua's order and wording.
    pub(crate) fn host_requirements(
        &self,
        program: &TestProgram,
        case: &TestCase,
    ) -> Option<TestResult> {
        let md = &case.metadata;
        let config = &self.opts.config;
        for name in &md.required_configs {
            if !config.is_defined(&program.test_suite, name) {
                return Some(requirement(format!(
                    "Required configuration property '{name}' not defined"
                )));
            }
        }
        let architecture = config.architecture.as_deref();
        let architectures = architecture.map_or(ARCHITECTURES.to_vec(), |a| vec![a]);
        if !md.allowed_architectures.is_empty()
            && !architectures
                .iter()
                .any(|a| md.allowed_architectures.contains(*a))
        {
            return Some(requirement(format!(
                "Current architecture '{}' not supported",
                architectures[0]
            )));
        }
        let platforms = config
            .platform
            .as_deref()
            .map_or(PLATFORMS.to_vec(), |p| vec![p]);
        if !md.allowed_platforms.is_empty()
            && !platforms.iter().any(|p| md.allowed_platforms.contains(*p))
        {
            return Some(requirement(format!(
                "Current platform '{}' not supported",
                platforms[0]
            )));
        }
        // The guest runs cases as root: Kyua run as root skips these without a user to run
        // them as.
        if md.required_user == RequiredUser::Unprivileged && config.unprivileged_user.is_none() {
            return Some(requirement(
                "Requires an unprivileged user but the unprivileged-user configuration \
                 variable is not defined"
                    .to_string(),
            ));
        }
        if md.required_memory > 0 && md.required_memory > self.opts.vm_memory {
            return Some(requirement(format!(
                "Requires {} bytes of physical memory but only {} available",
                md.required_memory, self.opts.vm_memory
            )));
        }
        None
    }
}

/// A user of the guest by name (its /etc/passwd has root and nobody) or number.
fn guest_user(name: &str) -> Option<(u32, u32)> {
    match name {
        "nobody" => Some(UNPRIVILEGED),
        "root" => Some((0, 0)),
        _ => {
            let (uid, gid) = name.split_once(':').unwrap_or((name, name));
            Some((uid.parse().ok()?, gid.parse().ok()?))
        }
    }
}

/// Where a built artifact runs in the guest: a BPF object beside its source with `.o`
/// appended; a compiled test program under its own name in its source's directory.
fn built_guest_path(root: &str, program: &TestProgram) -> String {
    match (&program.built, program.interface) {
        (Some(exe), iface) if iface != Interface::Bpf => {
            let name = exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{}/{name}", guest_dir(root, program))
        }
        _ => format!("{root}/{}.o", program.path),
    }
}

/// Where a bpf program's `maps_setup` runs in the guest: the file itself, or what lab built
/// from `x.c`, as `x` beside it.
fn maps_setup_guest_path(root: &str, rel: &str, built: bool) -> String {
    let rel = if built {
        rel.strip_suffix(".c").unwrap_or(rel)
    } else {
        rel
    };
    format!("{root}/{rel}")
}

/// The guest directory holding a program.
fn guest_dir(root: &str, program: &TestProgram) -> String {
    match program.path.rsplit_once('/') {
        Some((dir, _)) => format!("{root}/{dir}"),
        None => root.to_string(),
    }
}

/// Where the guest sees host directory `dir` through its shared root `shared`, if it does.
fn shown(shared: Option<&std::path::Path>, dir: &std::path::Path) -> Option<String> {
    let rel = dir.strip_prefix(shared?).ok()?;
    let text = rel.to_str()?;
    Some(if text.is_empty() {
        "/".to_string()
    } else {
        format!("/{text}")
    })
}

fn requirement(reason: String) -> TestResult {
    TestResult::skipped(reason).with_cause(Cause::Requirement)
}

/// Whether `filter` (`PROGRAM`, `PROGRAM:CASE`) names `program` (its cases may be known only
/// once it is listed).
pub(crate) fn filter_names(filter: &str, program: &TestProgram) -> bool {
    let p = filter.split_once(':').map_or(filter, |(p, _)| p);
    glob_path(p, &program.path)
}

/// `pattern` matches `path` exactly, or as a directory prefix, or with a trailing `*`.
fn glob_path(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => path == pattern || path.starts_with(&format!("{pattern}/")),
    }
}

/// Every regular file under `dir` (following symlinks, skipping `.git`), with its guest path.
fn collect_files(dir: &Path, guest_dir: &str, out: &mut Vec<(String, u32, PathBuf)>) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".git" {
            continue;
        }
        let path = e.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let guest = format!("{guest_dir}/{name}");
        if meta.is_dir() {
            collect_files(&path, &guest, out);
        } else if meta.is_file() {
            out.push((guest, meta.permissions().mode() & 0o7777, path));
        }
    }
}

/// Readies a fresh VM: the suite trees and the results directory.
pub(crate) fn prepare_vm(guest: &mut dyn Guest, ctx: &Context<'_>) -> Result<(), VmError> {
    for (path, mode, host) in &ctx.files {
        let data = std::fs::read(host)
            .map_err(|e| VmError::Request(format!("failed to read {}: {e}", host.display())))?;
        guest.put(path, *mode, &data)?;
    }
    let script = format!("mkdir -p /lab/suites {RESULTS_DIR} {WORK_DIR} && chmod 1777 {RESULTS_DIR} /lab /lab/suites 2>/dev/null; chmod -R a+rX /lab");
    let out = run_capture(guest, sh(&script), SETUP_TIMEOUT)?;
    if out.outcome.status != ExitStatus::Code(0) {
        return Err(VmError::Request(format!(
            "failed to prepare the guest: {}: {}",
            out.outcome.status,
            out.stderr.trim()
        )));
    }
    Ok(())
}

/// Why a program could not be listed.
#[derive(Debug)]
pub(crate) enum ListError {
    /// The program's fault: its `__test_cases_list__` result.
    Broken(TestResult),
    /// The VM's.
    Guest(VmError),
}

/// A program's cases, and how they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The cases.
    pub(crate) cases: Vec<TestCase>,
    /// Whether they run in one exec (a BPF object shared by its tests, `state = 'object'`).
    pub(crate) batch: bool,
}

/// Lists the cases of an atf (or bpf) program in the guest.
pub(crate) fn list(
    guest: &mut dyn Guest,
    ctx: &Context<'_>,
    program: &TestProgram,
) -> Result<Listing, ListError> {
    let argv = match program.interface {
        Interface::Atf => atf::list_argv(&ctx.guest_path(program)),
        Interface::Bpf => bpf::list_argv(&ctx.guest_path(program)),
        Interface::Plain | Interface::Tap | Interface::Kselftest => {
            return Ok(Listing {
                cases: program.cases.clone(),
                batch: false,
            })
        }
    };
    let mut job = Job::new(argv);
    job.cwd = ctx.srcdir(program);
    job.env = base_env(Interface::Atf, "/tmp");
    let out = run_capture(guest, job, LIST_TIMEOUT).map_err(ListError::Guest)?;
    // A listing that fails is the program's doing, except for lab's own eBPF runner.
    let cause = (program.interface == Interface::Bpf).then_some(Cause::Protocol);
    let broken = |reason: String| {
        let mut result = TestResult::broken(reason);
        result.cause = cause;
        ListError::Broken(result)
    };
    if out.outcome.timed_out {
        return Err(ListError::Broken(
            TestResult::broken(format!(
                "Test program timed out while listing its cases after {LIST_TIMEOUT:?}"
            ))
            .with_cause(Cause::Timeout),
        ));
    }
    if out.outcome.status != ExitStatus::Code(0) {
        return Err(broken(format!(
            "Test program failed to list its cases ({}){}",
            out.outcome.status,
            stderr_hint(&out.stderr)
        )));
    }
    match program.interface {
        Interface::Bpf => bpf::parse_list(&out.stdout)
            .map(|listing| Listing {
                batch: program.bpf.effective_state(listing.kmesh) == BpfState::Object,
                cases: listing
                    .names
                    .into_iter()
                    .map(|name| TestCase {
                        name,
                        metadata: program.metadata.clone(),
                    })
                    .collect(),
            })
            .map_err(|e| broken(format!("Invalid BPF test list: {e}"))),
        _ => atf::parse_list(&out.stdout, &program.metadata)
            .map(|cases| Listing {
                cases,
                batch: false,
            })
            .map_err(|e| broken(e.reason())),
    }
}

/// The runner's arguments for `program`'s bpf options (paths in the guest).
fn bpf_run_args(ctx: &Context<'_>, program: &TestProgram, object: bool) -> bpf::RunArgs {
    let o = &program.bpf;
    bpf::RunArgs {
        object,
        globals: o
            .globals
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        tail_calls: o
            .tail_calls
            .iter()
            .map(|t| (t.map.clone(), t.slot, t.program.clone()))
            .collect(),
        maps_setup: o.maps_setup.as_ref().map(|rel| {
            let n = ctx
                .roots
                .get(&program.root)
                .map_or("/lab/suites/0", String::as_str);
            maps_setup_guest_path(n, rel, o.maps_setup_built.is_some())
        }),
    }
}

/// Runs the tests `cases` of a bpf program with one load of its object (`state = 'object'`):
/// one exec, one result per case. On a guest failure, what was gathered so far with the error.
pub(crate) fn run_bpf_batch(
    guest: &mut dyn Guest,
    ctx: &Context<'_>,
    program: &TestProgram,
    cases: &[TestCase],
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Vec<CaseRun>, Box<(Vec<CaseRun>, VmError)>> {
    let all = |result: TestResult| {
        cases
            .iter()
            .map(|_| CaseRun::empty(result.clone()))
            .collect::<Vec<_>>()
    };
    let Some(first) = cases.first() else {
        return Ok(Vec::new());
    };
    let md = &program.metadata;
    let user = match md.required_user {
        RequiredUser::Unprivileged => match ctx.unprivileged() {
            Ok(user) => Some(user),
            Err(broken) => return Ok(all(broken)),
        },
        RequiredUser::Root | RequiredUser::Any => None,
    };
    match guest_requirements(guest, first, user) {
        Ok(Some(skip)) => return Ok(all(skip)),
        Ok(None) => {}
        Err(e) => return Err(Box::new((all(TestResult::broken("not run")), e))),
    }
    let n = ctx.unique();
    let workdir = format!("{WORK_DIR}/{n}");
    let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let mut job = Job::new(bpf::run_argv(
        &ctx.guest_path(program),
        &names,
        &bpf_run_args(ctx, program, true),
    ));
    job.env = base_env(Interface::Bpf, &workdir);
    job.cwd = workdir;
    job.user = user;
    job.workdir = true;
    let per_case = md.timeout;
    let timeout = per_case
        .checked_mul(u32::try_from(cases.len()).unwrap_or(u32::MAX))
        .unwrap_or(per_case)
        .min(Duration::from_secs(24 * 3600));
    let mut captured = Captured::default();
    let exec = guest.exec(&job, timeout, &mut |s, d| {
        captured.push(s, d);
        output(s, d);
    });
    let outcome = match exec {
        Ok(o) => o,
        Err(e) => return Err(Box::new((all(TestResult::broken("not run")), e))),
    };
    let stdout = captured.parse_stdout();
    let stderr = String::from_utf8_lossy(&captured.stderr).into_owned();
    let runs = bpf::parse_runs(&stdout);
    let share = outcome.wall / u32::try_from(cases.len()).unwrap_or(1).max(1);
    Ok(cases
        .iter()
        .map(|case| {
            let (result, subresults, log, duration) = match (&runs, to_run(&outcome).finished()) {
                (Ok(runs), Some(ExitStatus::Code(0))) => match runs.get(&case.name) {
                    Some(run) => {
                        let (r, subs, log) = bpf::ran(run, &case.name);
                        let d = run.wall_ns.map_or(share, Duration::from_nanos);
                        (r, subs, log, d)
                    }
                    None => (
                        TestResult::broken("the bpf runner reported nothing for this test")
                            .with_cause(Cause::Protocol),
                        Vec::new(),
                        String::new(),
                        Duration::ZERO,
                    ),
                },
                _ => {
                    let run: Result<bpf::RunnerOutput, bpf::BpfError> = match &runs {
                        Ok(_) => Err(bpf::BpfError::NoJson),
                        Err(e) => Err(bpf::BpfError::Other(e.to_string())),
                    };
                    let (r, subs, log) = bpf::result(&run, &to_run(&outcome), &case.name);
                    (r, subs, log, share)
                }
            };
            CaseRun {
                result,
                subresults,
                duration,
                stdout: log,
                stderr: stderr.clone(),
            }
        })
        .collect())
}

fn stderr_hint(stderr: &str) -> String {
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
}

/// What a case's run gave.
#[derive(Debug, Clone)]
pub(crate) struct CaseRun {
    pub(crate) result: TestResult,
    pub(crate) subresults: Vec<SubResult>,
    pub(crate) duration: Duration,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl CaseRun {
    /// The `CaseFinished` event of case `id` of a program of `interface`.
    pub(crate) fn finished(
        self,
        id: lab_model::CaseId,
        interface: Interface,
    ) -> lab_model::RunEvent {
        lab_model::RunEvent::CaseFinished {
            id,
            interface,
            result: self.result,
            subresults: self.subresults,
            duration: self.duration,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }

    fn empty(result: TestResult) -> Self {
        Self {
            result,
            subresults: Vec::new(),
            duration: Duration::ZERO,
            stdout: String::new(),
            stderr: String::new(),
        }
    }
}

/// Runs one case; on a guest failure, returns what was gathered so far with the error.
pub(crate) fn run_case(
    guest: &mut dyn Guest,
    ctx: &Context<'_>,
    program: &TestProgram,
    case: &TestCase,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<CaseRun, Box<(CaseRun, VmError)>> {
    let fail = |e| Box::new((CaseRun::empty(TestResult::broken("not run")), e));
    let md = &case.metadata;
    let user = match md.required_user {
        RequiredUser::Unprivileged => match ctx.unprivileged() {
            Ok(user) => Some(user),
            Err(broken) => return Ok(CaseRun::empty(broken)),
        },
        RequiredUser::Root | RequiredUser::Any => None,
    };
    if let Some(skip) = guest_requirements(guest, case, user).map_err(fail)? {
        return Ok(CaseRun::empty(skip));
    }

    let n = ctx.unique();
    let workdir = format!("{WORK_DIR}/{n}");
    let cleanup = program.interface == Interface::Atf && md.has_cleanup;
    let isolation = isolation(&ctx.guest_path(program), case);
    let make_job = |argv: Vec<String>| {
        let mut job = Job::new(argv);
        job.env = base_env(program.interface, &workdir);
        if matches!(program.interface, Interface::Plain | Interface::Tap) {
            // Kyua hands plain and tap programs the configuration as TEST_ENV_ variables.
            job.env.extend(
                ctx.test_config(program)
                    .iter()
                    .map(|(k, v)| format!("TEST_ENV_{k}={v}")),
            );
        }
        job.cwd = workdir.clone();
        job.user = user;
        job.isolation = isolation.clone();
        // The body and cleanup of a case share its work directory: the lab makes and removes
        // it around both; otherwise the agent does, around the one exec.
        job.workdir = !cleanup;
        job
    };
    if cleanup {
        let owner = user
            .map(|(u, g)| format!(" && chown {u}:{g} {workdir}"))
            .unwrap_or_default();
        setup(guest, &format!("mkdir -p -m 0755 {workdir}{owner}")).map_err(fail)?;
    }

    let mut captured = Captured::default();
    let mut tee = |stream: Stream, data: &[u8]| {
        captured.push(stream, data);
        output(stream, data);
    };
    let guest_program = ctx.guest_path(program);
    let srcdir = ctx.srcdir(program);
    let config = ctx.test_config(program);

    let outcome = match program.interface {
        Interface::Atf => {
            let resfile = format!("{RESULTS_DIR}/{n}");
            let body = make_job(atf::run_argv(
                &guest_program,
                &srcdir,
                &case.name,
                &resfile,
                &config,
            ));
            let result = (|| {
                let body_out = guest.exec(&body, md.timeout, &mut tee)?;
                let raw = guest
                    .get(&resfile)?
                    .map(|bytes| atf::parse_result_file(&String::from_utf8_lossy(&bytes)));
                let cleanup_out = if cleanup {
                    let job = make_job(atf::cleanup_argv(
                        &guest_program,
                        &srcdir,
                        &case.name,
                        &config,
                    ));
                    Some(guest.exec(&job, CLEANUP_TIMEOUT, &mut tee)?)
                } else {
                    None
                };
                let result = atf::result(
                    raw,
                    &to_run(&body_out),
                    cleanup_out.as_ref().map(to_run).as_ref(),
                );
                Ok((result, Vec::new(), body_out.wall))
            })();
            // Result files are tiny and uniquely named: they stay until the VM goes, saving
            // a round trip per case. A cleanup case's work directory is the lab's to remove
            // (best effort: a VM that died has nothing left to clean).
            if cleanup {
                let _ = setup(guest, &format!("rm -rf {workdir}"));
            }
            result
        }
        Interface::Plain => {
            let job = make_job(vec![guest_program.clone()]);
            guest
                .exec(&job, md.timeout, &mut tee)
                .map(|o| (plain::result(&to_run(&o)), Vec::new(), o.wall))
        }
        Interface::Tap => {
            let job = make_job(vec![guest_program.clone()]);
            guest.exec(&job, md.timeout, &mut tee).map(|o| {
                let report = tap::parse(&captured.parse_stdout());
                let (result, subs) = tap::result(&report, &to_run(&o));
                (result, subs, o.wall)
            })
        }
        Interface::Kselftest => {
            // As kselftest/runner.sh runs it: from its collection's directory (it finds its
            // helpers and data there), as root with root's home.
            let mut job = make_job(vec![guest_program.clone()]);
            job.cwd = srcdir.clone();
            job.workdir = false;
            job.env = vec![
                "HOME=/root".to_string(),
                "TZ=UTC".to_string(),
                "LANG=C".to_string(),
            ];
            guest.exec(&job, md.timeout, &mut tee).map(|o| {
                let report = tap::parse_ktap(&captured.parse_stdout());
                let (result, subs) = tap::kselftest_result(&report, &to_run(&o));
                (result, subs, o.wall)
            })
        }
        Interface::Bpf => {
            let job = make_job(bpf::run_argv(
                &guest_program,
                &[&case.name],
                &bpf_run_args(ctx, program, false),
            ));
            guest.exec(&job, md.timeout, &mut tee).map(|o| {
                let run = bpf::parse_run(&captured.parse_stdout());
                let (result, subs, log) = bpf::result(&run, &to_run(&o), &case.name);
                // The decoded log is what a user reads: it stands in for the runner's JSON.
                captured.replace_stdout(log);
                (result, subs, o.wall)
            })
        }
    };
    let (stdout, stderr) = captured.texts();
    match outcome {
        Ok((result, subresults, duration)) => Ok(CaseRun {
            result,
            subresults,
            duration,
            stdout,
            stderr,
        }),
        Err(e) => Err(Box::new((
            CaseRun {
                result: TestResult::broken("not run"),
                subresults: Vec::new(),
                duration: Duration::ZERO,
                stdout,
                stderr,
            },
            e,
        ))),
    }
}

fn to_run(o: &ExecOutcome) -> RunOutcome {
    RunOutcome {
        status: o.status,
        timed_out: o.timed_out,
    }
}

/// Kyua's jail name for a case: `kyua` + the program's path as run and the case, every
/// character outside `[A-Za-z0-9_]` as `_`, cut from the left to fit a UTS hostname.
pub fn jail_name(program: &str, case: &str) -> String {
    const HOSTNAME_MAX: usize = 64;
    let name: String = format!("{program}_{case}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let keep = HOSTNAME_MAX - "kyua".len();
    let cut = name.len().saturating_sub(keep);
    format!("kyua{}", &name[cut..])
}

fn isolation(guest_program: &str, case: &TestCase) -> Option<lab_proto::Isolation> {
    let md = &case.metadata;
    if md.execenv != Execenv::Jail {
        return None;
    }
    use lab_proto::message::{NS_IPC, NS_MOUNT, NS_NET, NS_PID, NS_UTS};
    let mut namespaces = NS_MOUNT | NS_PID | NS_UTS | NS_IPC;
    if md.jail_vnet() {
        namespaces |= NS_NET;
    }
    Some(lab_proto::Isolation {
        namespaces,
        hostname: jail_name(guest_program, &case.name),
    })
}

/// Kyua's isolation of a test's environment: HOME and TMPDIR in the work directory, TZ=UTC,
/// the locale cleared (guest-init's base environment has none).
fn base_env(interface: Interface, workdir: &str) -> Vec<String> {
    // Kyua's prepare_environment: HOME and TMPDIR the work directory, TZ=UTC, and LANG and the
    // LC_* variables unset (a bare name removes a variable from the guest's base environment,
    // which has LANG=C.UTF-8).
    let mut env = vec![
        format!("HOME={workdir}"),
        format!("TMPDIR={workdir}"),
        "TZ=UTC".to_string(),
    ];
    env.extend(
        [
            "LANG",
            "LC_ALL",
            "LC_COLLATE",
            "LC_CTYPE",
            "LC_MESSAGES",
            "LC_MONETARY",
            "LC_NUMERIC",
            "LC_TIME",
        ]
        .map(String::from),
    );
    if interface == Interface::Atf {
        env.push("__RUNNING_INSIDE_ATF_RUN=internal-yes-value".to_string());
    }
    env
}

/// The requirements only the guest can decide (files, programs, disk space, the user).
fn guest_requirements(
    guest: &mut dyn Guest,
    case: &TestCase,
    user: Option<(u32, u32)>,
) -> Result<Option<TestResult>, VmError> {
    let md = &case.metadata;
    if md.required_files.is_empty()
        && md.required_programs.is_empty()
        && md.required_disk_space == 0
        && md.required_kmods.is_empty()
        && !md.required_kvm
    {
        return Ok(None);
    }
    let _ = user;
    let mut script = String::new();
    // Kyua checks that required modules are loaded; in a VM of its own, lab loads them first
    // (the guest's modprobe fetches them from lab), so only a module the kernel lacks, or
    // one that fails to load, skips the case.
    for m in &md.required_kmods {
        script.push_str(&format!(
            "/sbin/modprobe -q {q} 2>/dev/null || echo kmod {q}\n",
            q = quote(m)
        ));
    }
    if md.required_kvm {
        script.push_str("[ -c /dev/kvm ] || echo kvm\n");
    }
    for f in &md.required_files {
        script.push_str(&format!("[ -e {q} ] || echo file {q}\n", q = quote(f)));
    }
    for p in &md.required_programs {
        if p.starts_with('/') {
            script.push_str(&format!("[ -x {q} ] || echo prog {q}\n", q = quote(p)));
        } else {
            script.push_str(&format!(
                "command -v {q} >/dev/null 2>&1 || echo path {q}\n",
                q = quote(p)
            ));
        }
    }
    if md.required_disk_space > 0 {
        script.push_str(&format!(
            "echo disk $(df -Pk {WORK_DIR} | awk 'NR==2 {{ print $4 }}')\n"
        ));
    }
    let out = run_capture(guest, sh(&script), SETUP_TIMEOUT)?;
    let kmods: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kmod "))
        .collect();
    if !kmods.is_empty() {
        // Kyua's words (os/freebsd/reqs_checker_kmods.cpp).
        let names: String = kmods.iter().map(|k| format!(" {k}")).collect();
        return Ok(Some(requirement(format!(
            "Required kmods are not loaded:{names}."
        ))));
    }
    for line in out.stdout.lines() {
        let (kind, what) = line.split_once(' ').unwrap_or((line, ""));
        let reason = match kind {
            "kvm" => {
                "Requires /dev/kvm: the guest has no hardware virtualization (see `lab doctor`)"
                    .to_string()
            }
            "file" => format!("Required file '{what}' not found"),
            "prog" => format!("Required program '{what}' not found"),
            "path" => format!("Required program '{what}' not found in PATH"),
            "disk" => {
                let avail = what.trim().parse::<u64>().unwrap_or(0) * 1024;
                if avail >= md.required_disk_space {
                    continue;
                }
                format!(
                    "Requires {} bytes of free disk space but only {avail} bytes available",
                    md.required_disk_space
                )
            }
            _ => continue,
        };
        return Ok(Some(requirement(reason)));
    }
    Ok(None)
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn sh(script: &str) -> Job {
    Job::new(["/bin/sh", "-c", script])
}

/// Runs a lab bookkeeping command; a failure is the guest's, not the test's.
fn setup(guest: &mut dyn Guest, script: &str) -> Result<(), VmError> {
    let out = run_capture(guest, sh(script), SETUP_TIMEOUT)?;
    if out.outcome.status == ExitStatus::Code(0) {
        Ok(())
    } else {
        Err(VmError::Request(format!(
            "'{script}' failed in the guest: {}{}",
            out.outcome.status,
            stderr_hint(&out.stderr)
        )))
    }
}

struct Capture {
    outcome: ExecOutcome,
    stdout: String,
    stderr: String,
}

fn run_capture(guest: &mut dyn Guest, job: Job, timeout: Duration) -> Result<Capture, VmError> {
    let mut captured = Captured::default();
    let outcome = guest.exec(&job, timeout, &mut |s, d| captured.push(s, d))?;
    Ok(Capture {
        outcome,
        stdout: captured.parse_stdout(),
        stderr: String::from_utf8_lossy(&captured.stderr).into_owned(),
    })
}

/// Output kept from an exec: stdout up to the parse limit (then its tail), stderr's tail.
#[derive(Debug, Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdout_dropped: bool,
}

impl Captured {
    fn push(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => {
                if self.stdout.len() + data.len() <= PARSE_OUTPUT {
                    self.stdout.extend_from_slice(data);
                } else {
                    self.stdout_dropped = true;
                }
            }
            Stream::Stderr => {
                self.stderr.extend_from_slice(data);
                if self.stderr.len() > 2 * KEEP_OUTPUT {
                    self.stderr.drain(..self.stderr.len() - KEEP_OUTPUT);
                }
            }
        }
    }

    fn replace_stdout(&mut self, text: String) {
        self.stdout = text.into_bytes();
        self.stdout_dropped = false;
    }

    fn parse_stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The kept tails for the report.
    fn texts(&self) -> (String, String) {
        let tail = |b: &[u8]| {
            let start = b.len().saturating_sub(KEEP_OUTPUT);
            String::from_utf8_lossy(&b[start..]).into_owned()
        };
        let mut stdout = tail(&self.stdout);
        if self.stdout_dropped {
            stdout.push_str("\n[lab: output past 8 MiB dropped]\n");
        }
        (stdout, tail(&self.stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unprivileged_user_is_configured_as_kyuas() {
        assert_eq!(guest_user("nobody"), Some((65534, 65534)));
        assert_eq!(guest_user("root"), Some((0, 0)));
        assert_eq!(guest_user("1000"), Some((1000, 1000)));
        assert_eq!(guest_user("1000:100"), Some((1000, 100)));
        assert_eq!(guest_user("alice"), None);
        let plan = Plan {
            kernels: vec![],
            programs: vec![],
            filters: vec![],
            unbuilt: vec![],
        };
        let with = |vars: &[&str]| {
            let mut config = crate::config::UserConfig::default();
            for v in vars {
                config.set(v).unwrap();
            }
            Options {
                jobs: 1,
                config,
                live_output: false,
                vm_memory: 0,
                shared_root: None,
            }
        };
        let program = |suite: &str| {
            TestProgram::new(
                Interface::Plain,
                std::path::Path::new("/s"),
                "p",
                suite,
                lab_model::Metadata::default(),
            )
        };
        let unprivileged = || TestCase {
            name: "main".into(),
            metadata: lab_model::Metadata {
                required_user: RequiredUser::Unprivileged,
                ..Default::default()
            },
        };
        let opts = with(&[
            "unprivileged_user=1000",
            "test_suites.s.x=1",
            "test_suites.t.y=2",
        ]);
        let ctx = Context::new(&plan, &opts);
        // Both spellings reach the test, as Kyua passes them, with its own suite's variables.
        assert_eq!(
            ctx.test_config(&program("s")),
            [
                ("unprivileged-user".to_string(), "1000".to_string()),
                ("unprivileged_user".to_string(), "1000".to_string()),
                ("x".to_string(), "1".to_string())
            ]
        );
        assert_eq!(ctx.unprivileged().ok(), Some((1000, 1000)));
        assert_eq!(ctx.host_requirements(&program("s"), &unprivileged()), None);

        // Unset, a case that needs the user is skipped with Kyua's words.
        let opts = with(&[]);
        let ctx = Context::new(&plan, &opts);
        assert!(ctx.test_config(&program("s")).is_empty());
        let skip = ctx
            .host_requirements(&program("s"), &unprivileged())
            .unwrap();
        assert!(
            skip.to_string().contains(
                "Requires an unprivileged user but the unprivileged-user configuration variable \
                 is not defined"
            ),
            "{skip}"
        );
    }

    #[test]
    fn jail_names_follow_kyua() {
        assert_eq!(
            jail_name("/lab/suites/0/net/bind.sh", "main"),
            "kyua_lab_suites_0_net_bind_sh_main"
        );
        let long = jail_name(&format!("/{}", "x".repeat(100)), "case-1");
        assert_eq!(long.len(), 64);
        assert!(long.starts_with("kyuax") && long.ends_with("_case_1"));
    }

    #[test]
    fn filters() {
        assert!(glob_path("net", "net/bind.sh"));
        assert!(glob_path("net/", "net/bind.sh"));
        assert!(!glob_path("ne", "net/bind.sh"));
        assert!(glob_path("ne*", "net/bind.sh"));
        assert!(glob_path("net/bind.sh", "net/bind.sh"));
    }
}
