//! The `qemu` backend: `qemu-system-x86_64 -M microvm`, with the kernel console on the first
//! UART (QEMU's stdout, read by lab) and the agent channel on a second UART wired to a Unix
//! socket lab listens on. KVM when the host can run the guest, TCG otherwise.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::process::{self, MAX_STDERR};
use crate::vm::{Accel, Backend, BackendError, Machine, SpawnHook, VmEvent, VmSpec};

/// The QEMU program lab runs, unless `LAB_QEMU` names another.
pub const QEMU: &str = "qemu-system-x86_64";

/// The `qemu` backend.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    binary: PathBuf,
    spawn_hook: Option<SpawnHook>,
    vsock: Option<VsockBackend>,
    shared_root: Option<SharedRootServer>,
}

/// How to start the file server of a guest's shared root: a program (lab itself, with a hidden
/// subcommand) that gets `--source DIR --view DIR --socket PATH` appended, makes a read-only
/// view of DIR (`lab_vmm::shared_root`) and becomes virtiofsd serving it on PATH.
#[derive(Debug, Clone)]
pub struct SharedRootServer {
    /// The program.
    pub program: PathBuf,
    /// Its leading arguments.
    pub args: Vec<OsString>,
}

/// A VM's helper processes while it is being started: killed and reaped if a later step fails,
/// handed over to the running VM otherwise.
#[derive(Default)]
struct Helpers(Vec<Child>);

impl Helpers {
    fn take(mut self) -> Vec<Child> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        for h in &mut self.0 {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// The virtio-fs tag of a guest's shared root.
pub const ROOT_TAG: &str = "labroot";

/// How long the shared root's file server may take to listen.
const ROOT_SERVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// How to start the vhost-user vsock backend for a VM: a program (lab itself, with a hidden
/// subcommand) that gets `--socket VHOST_USER --uds UDS --cid CID` appended, prints one line
/// `listening` on stdout once QEMU may connect, and serves until QEMU disconnects.
#[derive(Debug, Clone)]
pub struct VsockBackend {
    /// The program.
    pub program: PathBuf,
    /// Its leading arguments.
    pub args: Vec<OsString>,
}

/// Finds `program` on `PATH` (or takes it as a path if it has a slash).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

impl QemuBackend {
    /// Finds QEMU (`$LAB_QEMU` or `qemu-system-x86_64` on PATH).
    pub fn find() -> Result<Self, BackendError> {
        let name = std::env::var("LAB_QEMU").unwrap_or_else(|_| QEMU.to_string());
        let binary = which(&name).ok_or_else(|| BackendError::NotInstalled {
            program: name,
            package: "qemu-system-x86".into(),
        })?;
        Ok(Self {
            binary,
            spawn_hook: None,
            vsock: None,
            shared_root: None,
        })
    }

    /// Applies `hook` to QEMU and its vsock backend before they are spawned (the CLI's
    /// parent-death signal: if lab dies, even by SIGKILL, the kernel kills them, so no VM
    /// outlives the run that started it).
    pub fn with_spawn_hook(mut self, hook: SpawnHook) -> Self {
        self.spawn_hook = Some(hook);
        self
    }

    /// Carries the agent over the lab's own virtio-vsock device, served by `backend`, instead
    /// of the second UART.
    pub fn with_vsock(mut self, backend: VsockBackend) -> Self {
        self.vsock = Some(backend);
        self
    }

    /// Serves guests' shared roots with `server`.
    pub fn with_shared_root(mut self, server: SharedRootServer) -> Self {
        self.shared_root = Some(server);
        self
    }

    /// Starts the file server of the shared root `root` for the VM of `spec` and waits until
    /// its socket is there. Its messages go to `virtiofsd.log` in the VM's work directory.
    fn start_shared_root(&self, root: &Path, spec: &VmSpec) -> Result<Child, BackendError> {
        let server = self.shared_root.as_ref().ok_or_else(|| {
            BackendError::Unsupported("this lab has no file server for a shared root".into())
        })?;
        let view = spec.workdir.join("root-view");
        std::fs::create_dir_all(&view).map_err(BackendError::Spawn)?;
        let socket = root_socket(spec);
        let log_path = spec.workdir.join("virtiofsd.log");
        let log = File::create(&log_path).map_err(BackendError::Spawn)?;
        let mut cmd = self.command(&server.program);
        cmd.args(&server.args)
            .arg("--source")
            .arg(root)
            .arg("--view")
            .arg(&view)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().map_err(BackendError::Spawn)?;
        let started = std::time::Instant::now();
        loop {
            if socket.exists() {
                return Ok(child);
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > ROOT_SERVER_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                let mut text = String::new();
                let _ = File::open(&log_path).and_then(|f| f.take(4096).read_to_string(&mut text));
                let why = text
                    .lines()
                    .last()
                    .unwrap_or("no message")
                    .trim()
                    .to_string();
                return Err(BackendError::Helper(format!(
                    "the file server of the shared root {} did not start: {why}",
                    root.display()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The agent transport VMs of this backend get.
    pub fn channel_name(&self) -> &'static str {
        if self.vsock.is_some() {
            "vsock"
        } else {
            "serial"
        }
    }

    /// `program`, with the spawn hook applied: the child dies with lab.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        if let Some(hook) = self.spawn_hook {
            hook(&mut c);
        }
        c
    }

    /// Starts the vsock backend for the VM of `spec` (sockets `vhost.sock` for QEMU and
    /// `vsock.sock` for the host side, in its work directory) and waits for it to listen.
    fn start_vsock(
        &self,
        backend: &VsockBackend,
        spec: &VmSpec,
        stderr_text: &Arc<Mutex<String>>,
        events: &Sender<VmEvent>,
        threads: &mut Vec<JoinHandle<()>>,
    ) -> Result<Child, BackendError> {
        let (vhost_user, uds) = vsock_paths(spec);
        let tag = &spec.name;
        let mut cmd = self.command(&backend.program);
        cmd.args(&backend.args)
            .arg("--socket")
            .arg(&vhost_user)
            .arg("--uds")
            .arg(&uds)
            .arg("--cid")
            .arg(GUEST_CID.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(BackendError::Spawn)?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        let mut line = String::new();
        let listening =
            BufReader::new(stdout).read_line(&mut line).is_ok() && line.trim() == "listening";
        if !listening {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut err);
            return Err(BackendError::Spawn(std::io::Error::other(format!(
                "the vsock backend did not start: {}",
                err.trim()
            ))));
        }
        // The backend ends when QEMU disconnects; before that, only because the guest broke the
        // device or it failed: then the VM's agent channel is gone, and the VM with it.
        let (text, events) = (stderr_text.clone(), events.clone());
        let f = Box::new(move || {
            let mut err = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut err);
            let err = err.trim();
            if let Ok(mut t) = text.lock() {
                if !err.is_empty() && t.len() < MAX_STDERR {
                    t.push_str(err);
                    t.push('\n');
                }
            }
            if let Some(last) = err.lines().last() {
                let _ = events.send(VmEvent::Fault(format!("vsock device: {}", last.trim())));
            }
        });
        let t = std::thread::Builder::new()
            .name(format!("{tag}-vsock"))
            .spawn(f)
            .map_err(BackendError::Spawn)?;
        threads.push(t);
        Ok(child)
    }

    /// The QEMU program.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Whether QEMU knows the device model `name` (`-device help`).
    pub fn has_device(&self, name: &str) -> bool {
        Command::new(&self.binary)
            .args(["-device", "help"])
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.lines()
                    .any(|l| l.contains(&format!("name \"{name}\"")))
            })
            .unwrap_or(false)
    }

    /// `qemu-system-x86_64 --version`, first line.
    pub fn version(&self) -> Option<String> {
        let out = Command::new(&self.binary).arg("--version").output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_string)
    }
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo's "cpu MHz". On hosts without frequency
/// scaling (VMs, servers) that is the TSC's rate; where it scales, the figure is the current
/// clock and the guest's clock runs somewhat off, which a boot survives (measuring with rdtsc
/// needs `unsafe` and belongs in the VMM crate).
pub fn host_tsc_khz() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_mhz(&text)
}

fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    // The value has three decimals at most: kHz is exact.
    let khz = (mhz * 1000.0).round() as u64;
    (khz > 0).then_some(khz)
}

/// The kernel command line QEMU passes: `spec`'s, plus what this backend needs. Under TCG the
/// guest reads the host's TSC, but calibrating it against the emulated PIT fails about one boot
/// in five, and nearly always on a busy host ("tsc: Unable to calibrate against PIT"); a microvm
/// has no HPET or PM timer to fall back on, so the guest then spins in calibrate_delay waiting
/// for jiffies that never come. Telling the kernel the rate skips the calibration;
/// `tsc=reliable` keeps the clocksource watchdog from dropping the TSC when the host is loaded.
pub fn full_cmdline(spec: &VmSpec, tsc_khz: Option<u64>) -> String {
    match (spec.accel, tsc_khz) {
        (Accel::Tcg, Some(khz)) => format!("{} tsc_early_khz={khz} tsc=reliable", spec.cmdline),
        _ => spec.cmdline.clone(),
    }
}

/// How the agent talks to lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// The second UART (ttyS1), wired by QEMU to a Unix socket lab listens on. Works with any
    /// kernel that has an 8250 driver; slow (well under 1 MiB/s).
    Serial {
        /// The socket QEMU connects the UART to.
        socket: PathBuf,
    },
    /// The lab's own virtio-vsock device, served to QEMU over vhost-user by a backend process;
    /// the guest connects to the host's `port`, which reaches `<uds>_<port>`.
    Vsock {
        /// The vhost-user socket the backend listens on for QEMU.
        vhost_user: PathBuf,
    },
}

/// The vhost-user socket of the shared root's file server for the VM of `spec`.
fn root_socket(spec: &VmSpec) -> PathBuf {
    spec.workdir.join("root.sock")
}

/// The vhost-user socket and the hybrid-vsock socket of the VM of `spec`.
fn vsock_paths(spec: &VmSpec) -> (PathBuf, PathBuf) {
    (
        spec.workdir.join("vhost.sock"),
        spec.workdir.join("vsock.sock"),
    )
}

/// QEMU's `-cpu`: under KVM the host CPU, less the MSR some nested hosts cannot emulate;
/// under TCG the most capable emulated CPU, which has AMD SVM with nested paging.
///
/// Hardware virtualization stays as the model has it, nested guest or not: under TCG `max`
/// always offers SVM, and under KVM `host` offers VMX/SVM exactly when the host's
/// kvm_intel/kvm_amd runs with `nested=1`. Taking SVM away from TCG's `max` (`-svm` or
/// `svm=off`, QEMU 7.2) breaks the guest: every `d_path` (readlink of `/proc/self/exe`, of
/// `/proc/self/fd/*`) comes back as the last component masked with `x`, and every static glibc
/// program aborts at start. So `--nested` decides what the guest does with it (guest-init loads
/// its kvm module), not what QEMU shows; the lab VMM, which shapes CPUID itself, hides it.
pub fn cpu_model(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "host,-arch-capabilities",
        Accel::Tcg => "max",
    }
}

/// The size of TCG's translation cache per VM, in MiB (`-accel tcg,tb-size=`).
pub const TCG_TB_SIZE_MIB: u32 = 256;

/// The vsock port guest-init connects to on the host.
pub const AGENT_PORT: u32 = 1024;

/// The guest's vsock context id.
pub const GUEST_CID: u32 = 3;

/// The words the backend adds to the kernel command line: the channel, and under TCG the TSC
/// rate (see [`full_cmdline`]).
fn channel_param(channel: &Channel) -> String {
    match channel {
        Channel::Serial { .. } => "lab.channel=/dev/ttyS1".to_string(),
        Channel::Vsock { .. } => format!("lab.channel=vsock:{AGENT_PORT}"),
    }
}

/// QEMU's arguments for `spec` with the agent on `channel`.
pub fn args(spec: &VmSpec, channel: &Channel) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let push = |a: &mut Vec<OsString>, s: &str| a.push(s.into());
    let path_arg = |prefix: &str, path: &Path| {
        let mut s = OsString::from(prefix);
        s.push(path.as_os_str());
        s
    };
    let vsock = matches!(channel, Channel::Vsock { .. });
    // vhost-user devices (vsock, the shared root's virtio-fs) need RAM their servers can map.
    let shared = vsock || spec.root.is_some();
    // microvm: no PCI, no firmware tables beyond what Linux needs; ACPI stays on so that
    // kernels power off through it and so Debian kernels find the virtio-mmio devices it
    // describes. A vhost-user device needs guest RAM the backend process can map: a shared
    // memfd.
    push(&mut a, "-M");
    push(
        &mut a,
        if shared {
            "microvm,acpi=on,rtc=on,memory-backend=mem"
        } else {
            "microvm,acpi=on,rtc=on"
        },
    );
    push(&mut a, "-accel");
    match spec.accel {
        // TCG's translation cache: QEMU's default for system emulation is 1 GiB, which a busy
        // guest fills (per VM, on top of its RAM); 256 MiB holds what a test VM runs.
        Accel::Tcg => push(&mut a, &format!("tcg,tb-size={TCG_TB_SIZE_MIB}")),
        Accel::Kvm => push(&mut a, spec.accel.name()),
    }
    push(&mut a, "-cpu");
    push(&mut a, cpu_model(spec.accel));
    push(&mut a, "-smp");
    push(&mut a, &spec.cpus.to_string());
    push(&mut a, "-m");
    push(&mut a, &format!("{}M", spec.memory_mib));
    if shared {
        push(&mut a, "-object");
        push(
            &mut a,
            &format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                spec.memory_mib
            ),
        );
    }
    for fixed in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
        push(&mut a, fixed);
    }
    if shared {
        // Modern (virtio 1.x) virtio-mmio transport for the vhost-user devices.
        push(&mut a, "-global");
        push(&mut a, "virtio-mmio.force-legacy=false");
    }
    if spec.root.is_some() {
        push(&mut a, "-chardev");
        a.push(path_arg("socket,id=root,path=", &root_socket(spec)));
        push(&mut a, "-device");
        push(
            &mut a,
            &format!("vhost-user-fs-device,chardev=root,tag={ROOT_TAG}"),
        );
    }
    // The console: first UART on QEMU's stdout.
    push(&mut a, "-chardev");
    push(&mut a, "stdio,id=console,signal=off");
    push(&mut a, "-serial");
    push(&mut a, "chardev:console");
    match channel {
        Channel::Serial { socket } => {
            // The second UART (ttyS1, 0x2f8, IRQ 3) to lab's socket.
            push(&mut a, "-chardev");
            a.push(path_arg("socket,id=agent,path=", socket));
            push(&mut a, "-device");
            push(&mut a, "isa-serial,chardev=agent,index=1");
        }
        Channel::Vsock { vhost_user } => {
            push(&mut a, "-chardev");
            a.push(path_arg("socket,id=vsock,path=", vhost_user));
            push(&mut a, "-device");
            push(&mut a, "vhost-user-vsock-device,chardev=vsock");
        }
    }
    push(&mut a, "-kernel");
    a.push(spec.kernel.clone().into_os_string());
    push(&mut a, "-initrd");
    a.push(spec.initrd.clone().into_os_string());
    push(&mut a, "-append");
    let mut cmdline = format!(
        "{} {}",
        full_cmdline(spec, host_tsc_khz()),
        channel_param(channel)
    );
    if spec.root.is_some() {
        cmdline.push_str(&format!(" lab.root=virtiofs:{ROOT_TAG}"));
    }
    a.push(cmdline.into());
    a
}

impl Backend for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(
        &self,
        spec: &VmSpec,
        events: Sender<VmEvent>,
    ) -> Result<Box<dyn Machine>, BackendError> {
        let console_log =
            File::create(spec.workdir.join("console.log")).map_err(BackendError::Spawn)?;
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let mut threads = Vec::new();
        let tag = spec.name.clone();
        // Helpers started so far die if a later step fails.
        let mut helpers = Helpers::default();
        if let Some(root) = &spec.root {
            helpers.0.push(self.start_shared_root(root, spec)?);
        }

        // The agent's listener exists before anything starts: QEMU's UART (serial) or the
        // guest's vsock connection (through the backend's hybrid socket) reaches it.
        let (channel, agent_socket, helper) = match &self.vsock {
            None => {
                let socket = spec.workdir.join("agent.sock");
                (
                    Channel::Serial {
                        socket: socket.clone(),
                    },
                    socket,
                    None,
                )
            }
            Some(backend) => {
                let (vhost_user, uds) = vsock_paths(spec);
                let mut agent = uds.into_os_string();
                agent.push(format!("_{AGENT_PORT}"));
                let agent = PathBuf::from(agent);
                let listener = UnixListener::bind(&agent).map_err(BackendError::Spawn)?;
                let helper =
                    self.start_vsock(backend, spec, &stderr_text, &events, &mut threads)?;
                (
                    Channel::Vsock { vhost_user },
                    agent,
                    Some((helper, listener)),
                )
            }
        };
        let listener = match helper {
            Some((h, l)) => {
                helpers.0.push(h);
                l
            }
            None => UnixListener::bind(&agent_socket).map_err(BackendError::Spawn)?,
        };

        let mut cmd = self.command(&self.binary);
        cmd.args(args(spec, &channel)).current_dir(&spec.workdir);
        process::spawn(
            process::VmProcess {
                tag,
                command: cmd,
                console_log,
                listener,
                agent_socket,
                helpers: helpers.take(),
                stderr: stderr_text,
                threads,
            },
            events,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> VmSpec {
        VmSpec {
            name: "t".into(),
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            cmdline: "console=ttyS0 panic=-1".into(),
            cpus: 2,
            memory_mib: 512,
            accel,
            nested: false,
            workdir: "/w".into(),
            root: None,
        }
    }

    fn joined(a: &[OsString]) -> String {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn serial_arguments_describe_a_microvm_with_two_uarts() {
        let channel = Channel::Serial {
            socket: "/w/agent.sock".into(),
        };
        let a = joined(&args(&spec(Accel::Tcg), &channel));
        for want in [
            "-M microvm,acpi=on,rtc=on -accel tcg,tb-size=256 -cpu max",
            "-smp 2 -m 512M",
            "-no-reboot",
            "-serial chardev:console",
            "socket,id=agent,path=/w/agent.sock",
            "isa-serial,chardev=agent,index=1",
            "-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyS0 panic=-1",
        ] {
            assert!(a.contains(want), "{want:?} missing from {a}");
        }
        assert!(!a.contains("vhost-user"), "{a}");
        assert!(a.ends_with(" lab.channel=/dev/ttyS1"), "{a}");
        let a = joined(&args(&spec(Accel::Kvm), &channel));
        assert!(a.contains("-accel kvm -cpu host,-arch-capabilities"), "{a}");
    }

    #[test]
    fn vsock_arguments_share_guest_memory_with_the_backend() {
        let channel = Channel::Vsock {
            vhost_user: "/w/vhost.sock".into(),
        };
        let a = joined(&args(&spec(Accel::Tcg), &channel));
        for want in [
            "-M microvm,acpi=on,rtc=on,memory-backend=mem",
            "-m 512M -object memory-backend-memfd,id=mem,size=512M,share=on",
            "-global virtio-mmio.force-legacy=false",
            "socket,id=vsock,path=/w/vhost.sock",
            "vhost-user-vsock-device,chardev=vsock",
        ] {
            assert!(a.contains(want), "{want:?} missing from {a}");
        }
        assert!(!a.contains("isa-serial"), "{a}");
        assert!(a.ends_with(" lab.channel=vsock:1024"), "{a}");
    }

    #[test]
    fn the_command_line_stays_one_argument() {
        let channel = Channel::Serial {
            socket: "/w/a.sock".into(),
        };
        let a = args(&spec(Accel::Kvm), &channel);
        let at = a.iter().position(|s| s == "-append").unwrap();
        assert_eq!(a[at + 1], "console=ttyS0 panic=-1 lab.channel=/dev/ttyS1");
    }

    #[test]
    fn tcg_guests_are_told_the_tsc_rate() {
        assert_eq!(
            full_cmdline(&spec(Accel::Tcg), Some(2_596_152)),
            "console=ttyS0 panic=-1 tsc_early_khz=2596152 tsc=reliable"
        );
        assert_eq!(
            full_cmdline(&spec(Accel::Kvm), Some(1)),
            "console=ttyS0 panic=-1"
        );
        assert_eq!(
            full_cmdline(&spec(Accel::Tcg), None),
            "console=ttyS0 panic=-1"
        );
        let cpuinfo = "processor\t: 0\nmodel name\t: x\ncpu MHz\t\t: 2596.152\n";
        assert_eq!(parse_cpu_mhz(cpuinfo), Some(2_596_152));
        assert_eq!(parse_cpu_mhz("cpu MHz : fast\n"), None);
    }
}
