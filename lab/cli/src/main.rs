//! `lab`: the command line of the hermetic kernel test lab.

mod bench;
mod boot;
mod doctor;
mod kernel;
mod suites;
mod ui;
mod vmm;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lab_engine::accel::AccelRequest;
use lab_engine::cancel::Cancel;
use lab_engine::kvm::{KvmBackend, VmmProgram};
use lab_engine::lab::Lab;
use lab_engine::qemu::{QemuBackend, SharedRootServer, VsockBackend};
use lab_engine::session::BootOptions;
use lab_engine::vm::{Accel, Backend, BackendError, BackendKind, MissingBackend};
use lab_kernel::cache::Cache;

/// The guest agent, built static by build.rs and carried inside this binary.
pub static GUEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-init"));

/// Exit statuses of lab itself (a job's own status passes through `lab boot`).
pub mod exit {
    /// Bad usage or input: unknown kernel, missing or garbage kernel file, bad arguments.
    pub const USAGE: u8 = 2;
    /// The VM or the lab failed (kernel panic, boot timeout, agent lost, fetch failed), like
    /// vmtest and sysexits' EX_UNAVAILABLE.
    pub const VM_FAILED: u8 = 69;
    /// The job ran past its timeout, like timeout(1).
    pub const TIMED_OUT: u8 = 124;
    /// Interrupted (Ctrl-C, SIGTERM).
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "A hermetic kernel test lab: boots real Linux kernels in microVMs and runs jobs and suites inside them."
)]
struct Cli {
    /// Print what lab is doing (always on when stderr is a terminal).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print only errors and the job's own output.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Boot a kernel, run one command in the guest, print its output, exit with its status.
    Boot(boot::BootArgs),
    /// Boot a kernel once and run several shell commands in it, in order.
    RunInVm(boot::RunInVmArgs),
    /// Run test suites (Kyuafiles) in VMs, in parallel, on one or more kernels; by default the
    /// bundled suites on the default kernel, fetched on first use. TAP 14 on stdout.
    Test(suites::TestArgs),
    /// List the test cases of suites, like `kyua list` (atf programs are listed in a VM).
    List(suites::ListArgs),
    /// Run one test case with its output live; optionally keep its VM up when it fails.
    Debug(suites::DebugArgs),
    /// Check this host: /dev/kvm, QEMU, tools, cache; which backend and accelerator each kernel
    /// gets, and why.
    Doctor(doctor::DoctorArgs),
    /// Fetch, build and list kernels.
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),
    /// Measure the lab.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// (internal) Serve one VM's virtio-vsock device to QEMU over vhost-user; lab starts one
    /// per VM. Prints `listening` once QEMU may connect.
    #[command(name = "__vsock-backend", hide = true)]
    VsockBackend {
        /// The vhost-user socket QEMU connects to.
        #[arg(long)]
        socket: PathBuf,
        /// The hybrid-vsock Unix socket (host side).
        #[arg(long)]
        uds: PathBuf,
        /// The guest's context id.
        #[arg(long)]
        cid: u64,
    },
    /// (internal) Run one VM in the lab's own microVM; lab starts one per VM (`--backend kvm`).
    /// The console is stdout; the last line on stderr says how the VM ended.
    #[command(name = "__vmm", hide = true)]
    Vmm(vmm::VmmArgs),
    /// (internal) Serve a guest's shared root: a read-only view of SOURCE at VIEW, in a user
    /// and mount namespace of its own, served by virtiofsd on SOCKET.
    #[command(name = "__shared-root", hide = true)]
    SharedRoot {
        /// The host directory the guest sees.
        #[arg(long)]
        source: PathBuf,
        /// An empty directory the view is mounted on.
        #[arg(long)]
        view: PathBuf,
        /// The vhost-user socket QEMU connects to.
        #[arg(long)]
        socket: PathBuf,
    },
}

/// The hidden `__shared-root` command: makes the read-only view, then becomes virtiofsd.
/// Runs before any thread is started (entering a user namespace needs a single thread).
fn shared_root(
    source: &std::path::Path,
    view: &std::path::Path,
    socket: &std::path::Path,
) -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    let virtiofsd = lab_vmm::shared_root::find_virtiofsd().ok_or_else(|| {
        anyhow::anyhow!(
            "virtiofsd not found (Debian: apt-get install virtiofsd, or qemu-system-common's \
             /usr/lib/qemu/virtiofsd; or set LAB_VIRTIOFSD)"
        )
    })?;
    let help = std::process::Command::new(&virtiofsd)
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
        })
        .unwrap_or_default();
    let rust = help.contains("--shared-dir");
    lab_vmm::shared_root::make_view(source, view).map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        anyhow::anyhow!(
            "cannot make a read-only view of {}: {e}: {}",
            source.display(),
            cause.unwrap_or_default()
        )
    })?;
    let err = std::process::Command::new(&virtiofsd)
        .args(lab_vmm::shared_root::virtiofsd_args(rust, socket, view))
        .exec();
    Err(anyhow::anyhow!("cannot run {}: {err}", virtiofsd.display()))
}

/// The hidden `__vsock-backend` command: binds both sockets, says so, and serves until QEMU
/// disconnects. A guest that breaks the device ends it with an error on stderr, which lab
/// reports as that VM's failure.
fn vsock_backend(socket: &std::path::Path, uds: &std::path::Path, cid: u64) -> anyhow::Result<u8> {
    use std::io::Write;
    // The backend's errors carry rust-vmm errors that are not Sync: rendered as text here.
    fn text(e: &dyn std::error::Error) -> anyhow::Error {
        let mut s = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            s.push_str(": ");
            s.push_str(&cause.to_string());
            source = cause.source();
        }
        anyhow::anyhow!(s)
    }
    let server = lab_vmm::vhost_user::VsockServer::bind(socket, uds, cid).map_err(|e| text(&e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening")?;
    out.flush()?;
    drop(out);
    server.run().map_err(|e| text(&e))?;
    Ok(0)
}

/// How the guest agent talks to lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ChannelArg {
    /// The lab's own virtio-vsock device (fast; needs vsock in the guest kernel, which every
    /// catalog kernel has).
    #[default]
    Vsock,
    /// The second UART (slow, but any kernel with an 8250 driver has it).
    Serial,
}

/// Which VMM runs guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BackendArg {
    /// The lab's own microVM where KVM can boot the kernel (probed once per kernel and host),
    /// QEMU otherwise.
    #[default]
    Auto,
    /// Force the lab's own microVM (needs /dev/kvm).
    Kvm,
    /// Force QEMU (with --accel).
    Qemu,
}

/// How guests are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum AccelArg {
    /// KVM when it boots the kernel (probed once per kernel and host), else TCG.
    #[default]
    Auto,
    /// Force KVM.
    Kvm,
    /// Force TCG (QEMU's software emulation).
    Tcg,
}

impl AccelArg {
    fn request(self) -> AccelRequest {
        match self {
            Self::Auto => AccelRequest::Auto,
            Self::Kvm => AccelRequest::Force(Accel::Kvm),
            Self::Tcg => AccelRequest::Force(Accel::Tcg),
        }
    }
}

/// Options of every command that boots VMs.
#[derive(Debug, Clone, Args)]
pub struct VmArgs {
    /// Which VMM runs guests.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// How QEMU executes guests (the lab's own VMM always uses KVM).
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// How the guest agent talks to lab.
    #[arg(long, value_enum, default_value_t = ChannelArg::Vsock)]
    channel: ChannelArg,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory per VM, in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Seconds from launch until the guest agent must be up (per attempt).
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// Boot attempts when the agent does not come up in time.
    #[arg(long, default_value_t = 2)]
    boot_attempts: u32,
    /// Seconds the guest agent may stay silent (it beats every 2 s) before its VM counts as
    /// lost; raise it where guests run very slowly (nested in an emulated guest).
    #[arg(long, env = "LAB_AGENT_SILENCE", default_value_t = lab_engine::session::AGENT_SILENCE.as_secs())]
    agent_silence: u64,
    /// Seconds the KVM probe of `--backend auto`/`--accel auto` gives a kernel to boot under
    /// KVM (nested hosts boot slowly); a negative verdict made with a shorter deadline, or
    /// older than a day, is probed again.
    #[arg(long, env = "LAB_PROBE_TIMEOUT", default_value_t = lab_engine::accel::DEFAULT_PROBE_DEADLINE.as_secs())]
    probe_timeout: u64,
    /// Extra kernel command-line words.
    #[arg(long = "append", value_name = "WORDS")]
    append: Vec<String>,
    /// Keep each VM's work directory (console log) for inspection.
    #[arg(long)]
    keep_workdir: bool,
    /// A Debian package whose files (with its dependencies') the guest gets, fetched with apt
    /// on first use and cached; repeat for more.
    #[arg(long = "guest-package", value_name = "NAME")]
    guest_package: Vec<String>,
    /// A kernel module (name or alias) the guest loads at boot, with its dependencies; repeat
    /// or separate with commas. Any other module a guest needs is fetched on demand by its
    /// modprobe (and the kernel's request_module).
    #[arg(long = "module", value_name = "NAME", value_delimiter = ',')]
    module: Vec<String>,
    /// Give the guest hardware virtualization so that it can run KVM itself: QEMU/TCG emulates
    /// it, QEMU/KVM and the lab VMM pass the host's through (needs kvm_amd/kvm_intel with
    /// nested=1). The guest loads its kvm module at boot; `lab doctor` says where this works.
    #[arg(long)]
    nested: bool,
    /// A host file or directory the guest carries at the same absolute path (a program with
    /// the shared libraries it loads); repeat for more. It lives in guest RAM.
    #[arg(long = "carry", value_name = "PATH")]
    carry: Vec<PathBuf>,
    /// Carry lab itself into the guest (its binary as /usr/local/bin/lab with its libraries,
    /// and the cache an inner `lab boot`/`lab test` needs: KERNELS, comma-separated, by
    /// default this command's, with their boot and kvm modules, busybox and the guest
    /// packages), so that lab runs inside a guest with no network and no apt. With --nested,
    /// the inner lab runs its VMs in the lab VMM (`--backend kvm`).
    #[arg(
        long = "with-lab",
        value_name = "KERNELS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "",
        value_delimiter = ','
    )]
    with_lab: Option<Vec<String>>,
    /// The root the guest's jobs run in: `initramfs` (lab's own small userland, hermetic),
    /// `host` (this machine's root filesystem, read-only, under a tmpfs overlay: test programs
    /// find the libraries, data files and programs they were installed with, at their own
    /// paths, and nothing is copied into the guest), or a directory (a rootfs tree) shown the
    /// same way. Served by virtiofsd on the QEMU backend.
    #[arg(long, value_name = "initramfs|host|DIR", default_value = "initramfs")]
    root: String,
    /// For a kernel given by path: its module tree (a `lib/modules/RELEASE` directory, as
    /// `make modules_install` writes it). Default: `/lib/modules/RELEASE` where this machine
    /// has it.
    #[arg(long = "modules", value_name = "DIR")]
    modules_dir: Option<PathBuf>,
}

impl VmArgs {
    /// The host paths `--carry` brings into the guest.
    pub fn carried(&self) -> &[PathBuf] {
        &self.carry
    }

    /// The host directory the guest's root shows, if not the initramfs.
    pub fn shared_root(&self) -> Option<PathBuf> {
        match self.root.as_str() {
            "initramfs" | "" => None,
            "host" => Some(PathBuf::from("/")),
            dir => Some(std::fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir))),
        }
    }

    /// What `prepare` asks of the accelerator choice: the lab's own VMM needs KVM.
    fn accel_request(&self) -> AccelRequest {
        match self.backend {
            BackendArg::Kvm => AccelRequest::Force(Accel::Kvm),
            BackendArg::Auto | BackendArg::Qemu => self.accel.request(),
        }
    }

    /// The VMM for a guest on `accel`: under `auto`, the lab's own wherever KVM was chosen
    /// (the KVM probe boots the kernel in it), QEMU otherwise.
    fn backend_kind(&self, accel: Accel) -> BackendKind {
        match (self.backend, accel) {
            // The shared root needs QEMU's virtio-fs device; a forced lab VMM says so.
            (BackendArg::Auto, Accel::Kvm) if self.shared_root().is_some() => BackendKind::Qemu,
            (BackendArg::Kvm, _) | (BackendArg::Auto, Accel::Kvm) => BackendKind::Vmm,
            _ => BackendKind::Qemu,
        }
    }

    /// The KVM probe's deadline and how long its verdicts are trusted.
    fn probe_policy(&self) -> lab_engine::accel::ProbePolicy {
        lab_engine::accel::ProbePolicy {
            deadline: Duration::from_secs(self.probe_timeout.max(1)),
            ..Default::default()
        }
    }

    fn boot_options(&self, accel: Accel, run_timeout: Option<Duration>) -> BootOptions {
        BootOptions {
            backend: self.backend_kind(accel),
            cpus: self.cpus,
            memory_mib: self.memory,
            accel,
            boot_timeout: Duration::from_secs(self.boot_timeout),
            run_timeout,
            boot_attempts: self.boot_attempts,
            extra_cmdline: self
                .append
                .iter()
                .flat_map(|w| w.split_whitespace().map(str::to_string))
                .collect(),
            keep_workdir: self.keep_workdir,
            nested: self.nested,
            agent_silence: Duration::from_secs(self.agent_silence.max(1)),
            root: self.shared_root(),
        }
    }
}

/// The modules a guest mounts its shared root with (built in where the kernel has them so).
const SHARED_ROOT_MODULES: &[&str] = &["virtiofs", "overlay"];

/// A shared root must be a directory, and virtiofsd there to serve it: said before anything
/// boots (bad input, exit 2), not once per VM.
fn check_shared_root(root: &std::path::Path) -> anyhow::Result<()> {
    if !root.is_dir() {
        return Err(ui::BadInput(format!("--root {}: no such directory", root.display())).into());
    }
    if lab_vmm::shared_root::find_virtiofsd().is_none() {
        return Err(ui::BadInput(
            "--root needs virtiofsd (Debian 12: qemu-system-common's /usr/lib/qemu/virtiofsd; \
             later: apt-get install virtiofsd; or set LAB_VIRTIOFSD)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// What a lab is opened with: the agents' channel, the guests' extra packages and modules, and
/// whether they run KVM themselves.
#[derive(Debug, Clone, Default)]
pub struct LabSetup {
    channel: ChannelArg,
    /// The guests' shared root, if any (checked before anything boots).
    root: Option<PathBuf>,
    host_modules: Option<PathBuf>,
    guest_packages: Vec<String>,
    modules: Vec<String>,
    nested: bool,
}

impl From<&VmArgs> for LabSetup {
    fn from(vm: &VmArgs) -> Self {
        let mut modules = vm.module.clone();
        if vm.shared_root().is_some() {
            // What guest-init mounts a shared root with: virtio-fs, and overlayfs for writes.
            modules.extend(SHARED_ROOT_MODULES.iter().map(|m| (*m).to_string()));
        }
        Self {
            channel: vm.channel,
            guest_packages: vm.guest_package.clone(),
            host_modules: vm.modules_dir.clone(),
            root: vm.shared_root(),
            modules,
            nested: vm.nested,
        }
    }
}

/// A channel alone: guests without extra packages.
impl From<ChannelArg> for LabSetup {
    fn from(channel: ChannelArg) -> Self {
        Self {
            channel,
            ..Self::default()
        }
    }
}

/// The cache and the lab over it, its VMs' agents on the setup's channel, its guests carrying
/// its packages (pass `&VmArgs` for both).
pub fn open_lab(setup: impl Into<LabSetup>) -> anyhow::Result<Lab> {
    let setup = setup.into();
    if let Some(root) = &setup.root {
        check_shared_root(root)?;
    }
    let cache = Cache::from_env()?;
    let mut lab = Lab::new(cache, qemu_backend(setup.channel)?, GUEST_INIT);
    lab.set_guest_packages(setup.guest_packages);
    lab.set_boot_modules(setup.modules);
    lab.set_host_modules(setup.host_modules);
    lab.set_nested(setup.nested);
    // The lab's own VMM (this program as `lab __vmm`): used where KVM boots the kernel in it.
    lab.set_vmm(Box::new(vmm_backend()?));
    Ok(lab)
}

/// Gives `lab`'s guests the host files `vm` asks to carry: `--carry` paths, and with
/// `--with-lab` lab itself with the cache for its kernels (`default_kernels` unless named).
pub fn setup_carry(
    ui: &ui::Ui,
    lab: &mut Lab,
    vm: &VmArgs,
    default_kernels: &[String],
) -> anyhow::Result<()> {
    use lab_engine::carry::{self, Carry};
    if vm.carry.is_empty() && vm.with_lab.is_none() {
        return Ok(());
    }
    let mut gathered = match &vm.with_lab {
        None => Carry::new(),
        Some(names) => {
            let names: Vec<String> = match names.iter().filter(|n| !n.is_empty()).count() {
                0 => default_kernels.to_vec(),
                _ => names.iter().filter(|n| !n.is_empty()).cloned().collect(),
            };
            let progress = |line: &str| ui.progress(line);
            let mut kernels = Vec::new();
            for name in &names {
                let kernel = lab.kernel(name, &progress)?;
                lab_kernel::catalog::ensure_module_tree(lab.cache(), &kernel, &progress)?;
                kernels.push(kernel);
            }
            // What an inner `lab test` asks for, resolved and layered here, where apt is.
            lab_kernel::guest_packages::GuestPackages::new(
                lab_engine::guest::DEFAULT_TEST_PACKAGES.iter().copied(),
            )
            .layer(lab.cache(), &progress)?;
            let exe = std::env::current_exe()?;
            carry::lab_itself(lab.cache(), &exe, &kernels, lab.boot_modules())?
        }
    };
    for path in &vm.carry {
        let abs = if path.is_absolute() {
            path.clone()
        } else {
            std::env::current_dir()?.join(path)
        };
        gathered.add_path(&abs)?;
    }
    lab.set_carry(gathered);
    Ok(())
}

/// QEMU as a backend, its agents on `channel`; where QEMU is not installed, a backend that
/// says so when a VM needs it, so that the lab's own VMM runs without QEMU.
pub fn qemu_backend(channel: ChannelArg) -> anyhow::Result<Box<dyn Backend>> {
    let mut backend = match QemuBackend::find() {
        Ok(b) => b.with_spawn_hook(lab_vmm::process::die_with_parent),
        Err(BackendError::NotInstalled { program, package }) => {
            return Ok(Box::new(MissingBackend::new("qemu", program, package)))
        }
        Err(e) => return Err(e.into()),
    };
    if channel == ChannelArg::Vsock {
        // The vsock backend is this very program, run with a hidden subcommand.
        let program = std::env::current_exe()?;
        backend = backend.with_vsock(VsockBackend {
            program,
            args: vec!["__vsock-backend".into()],
        });
    }
    // A guest's shared root is served by this program too, as a read-only view for virtiofsd.
    backend = backend.with_shared_root(SharedRootServer {
        program: std::env::current_exe()?,
        args: vec!["__shared-root".into()],
    });
    Ok(Box::new(backend))
}

/// The lab's own VMM as a backend: this very program run as `lab __vmm`, one process per VM,
/// each dying with lab (its parent-death signal set by lab itself).
pub fn vmm_backend() -> anyhow::Result<KvmBackend> {
    Ok(KvmBackend::new(VmmProgram {
        program: std::env::current_exe()?,
        args: vec!["__vmm".into()],
    })
    .with_spawn_hook(lab_vmm::process::die_with_parent))
}

/// Installs SIGINT/SIGTERM handling: the first signal cancels the run (VMs are torn down, what
/// was obtained is reported); a second one exits at once (VMs die with lab through their
/// parent-death signal).
fn install_signals(cancel: Cancel) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for _ in signals.forever() {
                seen += 1;
                if seen == 1 {
                    // Cancel first: with stderr closed, eprintln! would panic this thread and
                    // the run would never stop.
                    cancel.cancel();
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "lab: interrupted; stopping VMs (again to kill at once)"
                    );
                } else {
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::SharedRoot {
        source,
        view,
        socket,
    } = &cli.command
    {
        // Single-threaded still: no signal thread yet.
        return match shared_root(source, view, socket) {
            Ok(code) => ExitCode::from(code),
            Err(err) => {
                eprintln!("lab: {err:#}");
                ExitCode::from(1)
            }
        };
    }
    let ui = ui::Ui::new(cli.verbose, cli.quiet);
    let cancel = Cancel::new();
    install_signals(cancel.clone());
    let result = match cli.command {
        Command::Boot(args) => boot::run(&ui, &cancel, args),
        Command::RunInVm(args) => boot::run_in_vm(&ui, &cancel, args),
        Command::Test(args) => suites::test(&ui, &cancel, args),
        Command::List(args) => suites::list(&ui, &cancel, args),
        Command::Debug(args) => suites::debug(&ui, &cancel, args),
        Command::Doctor(args) => doctor::run(&ui, args),
        Command::Kernel(cmd) => kernel::run(&ui, cmd),
        Command::Bench(cmd) => bench::run(&ui, &cancel, cmd),
        Command::VsockBackend { socket, uds, cid } => vsock_backend(&socket, &uds, cid),
        Command::Vmm(args) => vmm::run(args),
        Command::SharedRoot { .. } => unreachable!("served before the signal thread starts"),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            ui.error(&err);
            ExitCode::from(ui::exit_code_of(&err))
        }
    }
}

/// Where the bundled suites are: `$LAB_SUITES`, else `suites/` beside the current directory or
/// the source tree this binary was built from.
pub fn suites_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAB_SUITES") {
        return PathBuf::from(dir);
    }
    let here = PathBuf::from("suites");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../suites")
}
