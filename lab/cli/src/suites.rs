//! `lab test`, `lab list` and `lab debug`: Kyuafile suites run in VMs by the engine's
//! scheduler, its events fed to the reporters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use lab_engine::cancel::Cancel;
use lab_engine::config::UserConfig;
use lab_engine::launcher::VmLauncher;
use lab_engine::scheduler::{self, Options, Plan};
use lab_engine::suite::{kselftest, kyuafile};
use lab_model::{RunEvent, TestProgram};
use lab_report::{FanOut, HumanReporter, JsonReporter, JunitReporter, Reporter, TapReporter};

use crate::ui::{BadInput, Ui};
use crate::VmArgs;

/// What goes to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// TAP 14, one subtest per kernel and test program.
    Tap,
    /// One JSON object per event per line.
    Json,
    /// Nothing: the human view (stderr) and the JUnit file only.
    None,
}

/// Where the suites come from and which cases run: shared by test, list and debug.
#[derive(Debug, Clone, Args)]
pub struct Selection {
    /// Kyuafiles or directories holding one, or installed kselftest trees (holding
    /// kselftest-list.txt) (default: the bundled suites); other arguments are filters,
    /// `PROGRAM` or `PROGRAM:CASE` relative to the suite root.
    #[arg(value_name = "SUITE|FILTER")]
    args: Vec<String>,
    /// The Kyuafile to load (like kyua's -k); may be repeated.
    #[arg(long = "kyuafile", value_name = "PATH")]
    kyuafiles: Vec<PathBuf>,
}

impl Selection {
    /// Whether the run is of the bundled suites: no suite or object named.
    fn bundled(&self) -> bool {
        let (_, bare, _) = self.split();
        self.kyuafiles.is_empty()
            && bare.is_empty()
            && !self.args.iter().any(|a| {
                let p = Path::new(a);
                p.is_dir() || p.file_name().is_some_and(|f| f == "Kyuafile") && p.is_file()
            })
    }

    /// The suites to load, bare BPF objects or sources to run as programs of their own, and
    /// the filters.
    fn split(&self) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<String>) {
        let mut suites = self.kyuafiles.clone();
        let mut bare = Vec::new();
        let mut filters = Vec::new();
        for a in &self.args {
            let path = Path::new(a);
            let ext = path.extension().and_then(|e| e.to_str());
            if path.is_dir() || path.file_name().is_some_and(|f| f == "Kyuafile") && path.is_file()
            {
                suites.push(path.to_path_buf());
            } else if path.is_file() && matches!(ext, Some("o" | "c")) {
                bare.push(path.to_path_buf());
            } else {
                filters.push(a.clone());
            }
        }
        if suites.is_empty() && bare.is_empty() {
            suites.push(crate::suites_dir());
        }
        (suites, bare, filters)
    }

    /// Loads every suite; a broken Kyuafile is bad input (exit 2) and nothing boots. A bare
    /// `.o` (or `.c`) becomes a bpf test program of its own.
    fn load(&self) -> anyhow::Result<(Vec<TestProgram>, Vec<String>)> {
        let (suites, bare, filters) = self.split();
        let mut programs = Vec::new();
        for s in suites {
            // An installed kselftest tree (kselftest-list.txt, no Kyuafile) is a suite too.
            let suite = if kselftest::is_tree(&s) && !s.join(kyuafile::KYUAFILE).exists() {
                kselftest::load(&s).map_err(|e| BadInput(error_text(&e)))?
            } else {
                kyuafile::load(&s).map_err(|e| BadInput(error_text(&e)))?
            };
            programs.extend(suite.programs);
        }
        for object in bare {
            let object = object
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", object.display()))?;
            let (Some(root), Some(name)) = (object.parent(), object.file_name()) else {
                return Err(BadInput(format!("not a BPF object: {}", object.display())).into());
            };
            programs.push(TestProgram::new(
                lab_model::Interface::Bpf,
                root,
                &name.to_string_lossy(),
                "bpf",
                lab_model::Metadata::default(),
            ));
        }
        let unmatched = scheduler::unmatched_filters(&programs, &filters);
        if !unmatched.is_empty() {
            return Err(BadInput(format!(
                "no test program matches {} (arguments are Kyuafiles, directories holding one, \
                 BPF objects, or PROGRAM[:CASE] filters relative to the suite root)",
                unmatched
                    .iter()
                    .map(|f| format!("'{f}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into());
        }
        Ok((programs, filters))
    }
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Kernels to run on, comma-separated; the same suites run on each.
    #[arg(short, long, value_delimiter = ',', default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: Vec<String>,
    /// VM slots: how many VMs run test cases at once (default: the host's cores).
    #[arg(short, long)]
    jobs: Option<usize>,
    #[command(flatten)]
    config: ConfigArgs,
    /// What goes to stdout.
    #[arg(long, value_enum, default_value_t = Format::Tap)]
    format: Format,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    #[command(flatten)]
    select: Selection,
    #[command(flatten)]
    vm: VmArgs,
}

/// The run's configuration, as kyua takes it.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Kyua's configuration file (`syntax(2)`, `unprivileged_user = 'nobody'`,
    /// `test_suites.SUITE.NAME = 'value'`), or `none`. Default: kyua's (~/.kyua/kyua.conf,
    /// else /etc/kyua/kyua.conf), or suites/kyua.conf for the bundled suites.
    #[arg(long = "config", value_name = "FILE|none")]
    file: Option<PathBuf>,
    /// A configuration variable, as kyua's -v: `test_suites.SUITE.NAME=VALUE` (what a suite's
    /// programs get and `required_configs` checks) or `unprivileged_user=USER`. Overrides the
    /// file.
    #[arg(long = "variable", visible_alias = "var", value_name = "KEY=VALUE")]
    variables: Vec<String>,
}

impl ConfigArgs {
    /// The file, then the variables; `bundled`: the run is of the bundled suites.
    fn resolve(&self, ui: &Ui, bundled: bool) -> anyhow::Result<UserConfig> {
        let file = match &self.file {
            Some(f) if f.as_os_str() == "none" => None,
            Some(f) => Some(f.clone()),
            None if bundled => Some(crate::suites_dir().join("kyua.conf")).filter(|f| f.is_file()),
            None => UserConfig::default_file(),
        };
        let mut config = match &file {
            Some(f) => UserConfig::load(f).map_err(|e| BadInput(error_text(&e)))?,
            None => UserConfig::default(),
        };
        for v in &self.variables {
            if let Some(warning) = config.set(v).map_err(|e| BadInput(e.to_string()))? {
                ui.warn(&warning);
            }
        }
        if ui.verbose() {
            let from = file.map_or("no file".into(), |f| f.display().to_string());
            ui.progress(&format!(
                "configuration from {from}: {}",
                config.lines().join(", ")
            ));
        }
        Ok(config)
    }
}

/// Says which programs would load, in lab's own userland, another library than the one they
/// were built against (or none): those that load libraries from outside the system's library
/// directories that the suite tree and `--carry` do not bring. At most a few lines.
fn warn_foreign_libraries(ui: &Ui, programs: &[TestProgram], carried: &[PathBuf]) {
    const SHOWN: usize = 5;
    let mut found = 0;
    for p in programs {
        let missing: Vec<PathBuf> = lab_engine::carry::foreign_libraries(&p.host_path())
            .into_iter()
            .filter(|lib| !lib.starts_with(&p.root) && !carried.iter().any(|c| lib.starts_with(c)))
            .collect();
        let Some(lib) = missing.first() else {
            continue;
        };
        found += 1;
        if found <= SHOWN {
            ui.warn(&format!(
                "{} loads {} on this host, which lab's guest userland does not have (it \
                 would load another library of that name, or none): run with --root host, \
                 or --carry {}",
                p.path,
                lib.display(),
                lib.parent().unwrap_or(Path::new("/")).display()
            ));
        }
    }
    if found > SHOWN {
        ui.warn(&format!(
            "{} more programs load libraries the guest does not have",
            found - SHOWN
        ));
    }
}

/// `vm`, with nested virtualization turned on when a program runs KVM itself
/// (`required_kvm`): its guests, and so every VM of the run, boot able to.
fn vm_for(vm: &VmArgs, programs: &[TestProgram]) -> VmArgs {
    let mut vm = vm.clone();
    vm.nested |= programs.iter().any(|p| p.metadata.required_kvm);
    vm
}

/// A lab whose guests carry what test programs need (atf-sh, bash) besides `vm`'s packages.
fn open_test_lab(vm: &VmArgs) -> anyhow::Result<lab_engine::lab::Lab> {
    let mut setup = crate::LabSetup::from(vm);
    for p in lab_engine::guest::DEFAULT_TEST_PACKAGES {
        if !setup.guest_packages.iter().any(|g| g == p) {
            setup.guest_packages.push((*p).to_string());
        }
    }
    crate::open_lab(setup)
}

/// Builds the programs lab compiles itself (`x.c` names: BPF sources, and test programs in C
/// with the BPF objects beside them) into the cache; a program that does not build is reported broken by the run, with clang's
/// words, and the rest runs.
fn build_programs(
    lab: &lab_engine::lab::Lab,
    programs: &mut [TestProgram],
) -> anyhow::Result<Vec<(usize, String)>> {
    let needs = |p: &TestProgram| {
        (p.path.ends_with(".c") && p.built.is_none())
            || (p.bpf.maps_setup.as_ref().is_some_and(|s| s.ends_with(".c"))
                && p.bpf.maps_setup_built.is_none())
    };
    if !programs.iter().any(needs) {
        return Ok(Vec::new());
    }
    let cache = lab.cache().dir("bpf")?;
    let mut unbuilt = Vec::new();
    for (i, p) in programs.iter_mut().enumerate() {
        if !needs(p) || !p.host_path().is_file() {
            continue;
        }
        // A maps setup program in C, built as test programs in C are.
        if let Some(rel) = p.bpf.maps_setup.clone().filter(|s| s.ends_with(".c")) {
            match lab_engine::suite::c_build::build(&p.root.join(&rel), &p.root, &cache) {
                Ok(exe) => p.bpf.maps_setup_built = Some(exe),
                Err(e) => {
                    unbuilt.push((i, relative_to_root(&error_text(&e), &p.root)));
                    continue;
                }
            }
        }
        if !p.path.ends_with(".c") || p.built.is_some() {
            continue;
        }
        // BPF sources become objects; other test programs in C become executables (with
        // the BPF objects beside them that they load).
        let built = if p.interface == lab_model::Interface::Bpf {
            bpf_builder(p)
                .build(&p.host_path(), &p.root, &cache)
                .map_err(|e| error_text(&e))
        } else {
            lab_engine::suite::c_build::build(&p.host_path(), &p.root, &cache)
                .map_err(|e| error_text(&e))
        };
        match built {
            Ok(artifact) => p.built = Some(artifact),
            // The compiler names files by their canonical paths; the suite's are shown
            // relative to its root, as the Kyuafile names them.
            Err(why) => unbuilt.push((i, relative_to_root(&why, &p.root))),
        }
    }
    Ok(unbuilt)
}

/// The builder for a `bpf_test_program`'s source: its Kyuafile's `cflags` and `include`
/// directories (root-relative) over lab's defaults.
fn bpf_builder(p: &TestProgram) -> lab_engine::suite::bpf_build::BpfBuilder {
    let mut builder = lab_engine::suite::bpf_build::BpfBuilder::new();
    if let Some(flags) = &p.bpf.cflags {
        builder = builder.cflags(flags.clone());
    }
    builder.includes(p.bpf.include.iter().map(|d| p.root.join(d)).collect())
}

/// A bpf program's options as `lab list -v` shows them, defaults included and marked so;
/// `chosen`: its Kyuafile set the state.
fn bpf_properties(p: &TestProgram, chosen: bool) -> Vec<(&'static str, String)> {
    let o = &p.bpf;
    let state = match (o.state, chosen) {
        (Some(s), true) => s.name().to_string(),
        (Some(lab_model::BpfState::Test), false) => {
            "test (default: the object's stages are Kmesh's jump)".to_string()
        }
        (Some(s), false) => format!("{} (default)", s.name()),
        (None, _) => "object (default; test for Kmesh-style objects)".to_string(),
    };
    let globals = o
        .globals
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let tail_calls = o
        .tail_calls
        .iter()
        .map(|t| format!("{}[{}]='{}'", t.map, t.slot, t.program))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = vec![
        ("bpf.state", state),
        ("bpf.globals", format!("{{{globals}}}")),
        ("bpf.tail_calls", format!("{{{tail_calls}}}")),
        (
            "bpf.maps_setup",
            o.maps_setup.clone().unwrap_or_else(|| "(none)".into()),
        ),
    ];
    if p.path.ends_with(".c") {
        let cflags = match &o.cflags {
            Some(f) => f.join(" "),
            None => format!(
                "{} (default)",
                lab_engine::suite::bpf_build::DEFAULT_FLAGS.join(" ")
            ),
        };
        out.push(("bpf.cflags", cflags));
        out.push(("bpf.include", format!("{{{}}}", o.include.join(", "))));
    }
    out
}

/// `text` with the suite root's canonical path (and a trailing `/`) taken out.
fn relative_to_root(text: &str, root: &Path) -> String {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    text.replace(&format!("{}/", root.display()), "")
}

/// An error and its causes on one line.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn test(ui: &Ui, cancel: &Cancel, args: TestArgs) -> anyhow::Result<u8> {
    let (mut programs, filters) = args.select.load()?;
    let config = args.config.resolve(ui, args.select.bundled())?;
    if let Some(path) = &args.junit {
        // Found out now, not after the run: the results must have somewhere to go.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(BadInput(format!(
                "--junit {}: no such directory {}",
                path.display(),
                dir.display()
            ))
            .into());
        }
    }
    let vm = vm_for(&args.vm, &programs);
    if vm.shared_root().is_none() {
        warn_foreign_libraries(ui, &programs, vm.carried());
    }
    let mut lab = open_test_lab(&vm)?;
    crate::setup_carry(ui, &mut lab, &vm, &args.kernel)?;
    let unbuilt = build_programs(&lab, &mut programs)?;
    let mut kernels = HashMap::new();
    for name in &args.kernel {
        let (prepared, accel) = crate::boot::prepare(ui, &mut lab, name, &[], &vm)?;
        kernels.insert(name.clone(), (prepared, vm.boot_options(accel, None)));
    }
    let plan = Plan {
        kernels: args.kernel.clone(),
        programs,
        filters,
        unbuilt,
    };
    let opts = Options {
        jobs: args
            .jobs
            .or(config.parallelism)
            .unwrap_or_else(default_jobs)
            .max(1),
        config,
        live_output: false,
        vm_memory: u64::from(args.vm.memory) << 20,
        shared_root: args.vm.shared_root(),
    };
    let mut reporters = FanOut::default();
    match args.format {
        Format::Tap => {
            reporters.push(Box::new(TapReporter::new(std::io::stdout())));
        }
        Format::Json => {
            reporters.push(Box::new(JsonReporter::new(std::io::stdout())));
        }
        Format::None => {}
    }
    if !ui.quiet() || args.format == Format::None {
        reporters.push(Box::new(HumanReporter::stderr()));
    }
    if let Some(path) = &args.junit {
        reporters.push(Box::new(JunitReporter::new(path.clone())));
    }
    let launcher = VmLauncher::new(&lab, kernels, cancel.clone());
    let mut report_error = None;
    let counts = scheduler::run(&plan, &opts, &launcher, cancel, &mut |e| {
        if let Err(err) = reporters.event(e) {
            report_error.get_or_insert(err);
        }
    });
    if let Some(err) = report_error {
        return Err(anyhow::Error::new(err).context("reporting failed"));
    }
    Ok(if cancel.is_cancelled() {
        crate::exit::INTERRUPTED
    } else if counts.all_good() {
        0
    } else {
        1
    })
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show each case's metadata (also with -v, as kyua list -v).
    #[arg(short, long)]
    metadata: bool,
    /// The kernel whose VM lists atf programs.
    #[arg(short, long, default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: String,
    #[command(flatten)]
    select: Selection,
    #[command(flatten)]
    vm: VmArgs,
}

/// `lab list`: like `kyua list`; atf programs are listed inside a VM (they are the guest's
/// programs), plain and tap ones need none.
pub fn list(ui: &Ui, cancel: &Cancel, args: ListArgs) -> anyhow::Result<u8> {
    let (mut programs, filters) = args.select.load()?;
    let mut lab = open_test_lab(&args.vm)?;
    let unbuilt = build_programs(&lab, &mut programs)?;
    let mut broken = false;
    for (i, why) in &unbuilt {
        broken = true;
        let first = why
            .lines()
            .find(|l| l.contains("error:"))
            .unwrap_or_else(|| why.lines().next().unwrap_or_default());
        println!(
            "{}:{} (broken: {})",
            programs[*i].path,
            lab_model::BUILD_CASE,
            first.trim()
        );
    }
    let programs: Vec<TestProgram> = programs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !unbuilt.iter().any(|(u, _)| u == i))
        .map(|(_, p)| p)
        .collect();
    let needs_vm = programs.iter().any(TestProgram::needs_listing);
    let mut kernels = HashMap::new();
    if needs_vm {
        let (prepared, accel) = crate::boot::prepare(ui, &mut lab, &args.kernel, &[], &args.vm)?;
        kernels.insert(
            args.kernel.clone(),
            (prepared, args.vm.boot_options(accel, None)),
        );
    }
    let launcher = VmLauncher::new(&lab, kernels, cancel.clone());
    let chosen_state: std::collections::HashSet<String> = programs
        .iter()
        .filter(|p| p.bpf.state.is_some())
        .map(|p| p.path.clone())
        .collect();
    let plan = Plan {
        kernels: vec![args.kernel.clone()],
        programs,
        filters,
        unbuilt: Vec::new(),
    };
    let listed = scheduler::list(&plan, &launcher).context("failed to list the test programs")?;
    for (program, cases) in listed {
        match cases {
            Ok(cases) => {
                for case in cases {
                    println!("{}:{}", program.path, case.name);
                    if args.metadata || ui.verbose() {
                        println!("    test_suite = {}", program.test_suite);
                        for (k, v) in case.metadata.properties() {
                            println!("    {k} = {v}");
                        }
                        if program.interface == lab_model::Interface::Bpf {
                            let chosen = chosen_state.contains(&program.path);
                            for (k, v) in bpf_properties(&program, chosen) {
                                println!("    {k} = {v}");
                            }
                        }
                    }
                }
            }
            Err(result) => {
                broken = true;
                println!("{}:{} ({result})", program.path, lab_model::LIST_CASE);
            }
        }
    }
    Ok(u8::from(broken))
}

#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The case to run: PROGRAM:CASE (PROGRAM alone for plain and tap programs).
    case: String,
    /// The kernel to run it on.
    #[arg(short, long, default_value = lab_kernel::catalog::DEFAULT_KERNEL)]
    kernel: String,
    /// Kyuafiles or directories holding one (default: the bundled suites).
    #[arg(long = "kyuafile", value_name = "PATH")]
    kyuafiles: Vec<PathBuf>,
    #[command(flatten)]
    config: ConfigArgs,
    /// When the case does not pass, keep its VM up and run shell commands read from stdin in
    /// it (one per line) until end of input.
    #[arg(long)]
    inspect: bool,
    #[command(flatten)]
    vm: VmArgs,
}

/// `lab debug PROGRAM:CASE`: one case, its output live, its result; optionally the VM kept for
/// inspection.
pub fn debug(ui: &Ui, cancel: &Cancel, args: DebugArgs) -> anyhow::Result<u8> {
    let select = Selection {
        args: Vec::new(),
        kyuafiles: args.kyuafiles.clone(),
    };
    let (mut programs, _) = select.load()?;
    let (program, case) = match args.case.split_once(':') {
        Some((p, c)) => (p.to_string(), c.to_string()),
        None => (args.case.clone(), lab_model::MAIN_CASE.to_string()),
    };
    if !programs.iter().any(|p| p.path == program) {
        return Err(BadInput(format!("no test program '{program}' in the suites")).into());
    }
    let config = args.config.resolve(ui, args.kyuafiles.is_empty())?;
    let vm = vm_for(&args.vm, &programs);
    let mut lab = open_test_lab(&vm)?;
    let unbuilt = build_programs(&lab, &mut programs)?;
    if let Some((_, why)) = unbuilt.iter().find(|(i, _)| programs[*i].path == program) {
        return Err(BadInput(format!("{program} does not build: {why}")).into());
    }
    let (prepared, accel) = crate::boot::prepare(ui, &mut lab, &args.kernel, &[], &vm)?;
    let mut kernels = HashMap::new();
    kernels.insert(
        args.kernel.clone(),
        (prepared, vm.boot_options(accel, None)),
    );
    let launcher = VmLauncher::new(&lab, kernels, cancel.clone());
    let plan = Plan {
        kernels: vec![args.kernel.clone()],
        programs,
        filters: vec![format!("{program}:{case}")],
        unbuilt: Vec::new(),
    };
    let opts = Options {
        jobs: 1,
        config,
        live_output: true,
        vm_memory: u64::from(args.vm.memory) << 20,
        shared_root: args.vm.shared_root(),
    };
    let mut found = false;
    let mut good = true;
    let mut human = HumanReporter::plain(std::io::stderr());
    let kept = scheduler::debug(
        &plan,
        &opts,
        &launcher,
        cancel,
        &mut |e| {
            match e {
                RunEvent::CaseOutput { stream, data, .. } => write_stream(*stream, data),
                RunEvent::CaseFinished { id, result, .. } => {
                    found = true;
                    good = result.kind.is_good();
                    println!("{}: {result}", id.kyua_name());
                }
                _ => {}
            }
            let _ = human.event(e);
        },
        args.inspect,
    )
    .context("debug run failed")?;
    if let Some(mut guest) = kept {
        eprintln!("lab: the VM is kept up: each line read from stdin runs in it (end with EOF)");
        for line in std::io::stdin().lines() {
            let line = line.context("failed to read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let job = lab_proto::Job::new(["/bin/sh", "-c", line.as_str()]);
            let out = guest.exec(&job, std::time::Duration::from_secs(600), &mut |s, d| {
                write_stream(
                    match s {
                        lab_proto::Stream::Stdout => lab_model::OutputStream::Stdout,
                        lab_proto::Stream::Stderr => lab_model::OutputStream::Stderr,
                    },
                    d,
                )
            });
            match out {
                Ok(o) if o.status != lab_proto::ExitStatus::Code(0) => {
                    eprintln!("lab: {}", o.status)
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("lab: the VM failed: {e}");
                    break;
                }
            }
        }
        guest.shutdown();
    }
    if !found {
        return Err(BadInput(format!("no test case '{program}:{case}' in the suites")).into());
    }
    Ok(if cancel.is_cancelled() {
        crate::exit::INTERRUPTED
    } else {
        u8::from(!good)
    })
}

fn write_stream(stream: lab_model::OutputStream, data: &[u8]) {
    use std::io::Write;
    let _ = match stream {
        lab_model::OutputStream::Stdout => {
            let mut out = std::io::stdout();
            out.write_all(data).and_then(|()| out.flush())
        }
        lab_model::OutputStream::Stderr => std::io::stderr().write_all(data),
    };
}
