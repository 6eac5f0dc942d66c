//! The `qemu` backend: `qemu-system-x86_64 -M microvm`, with the kernel console on the first
//! UART (QEMU's stdout, read by lab) and the agent channel on a second UART wired to a Unix
//! socket lab listens on. KVM when the host can run the guest, TCG otherwise.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lab_proto::{read_frame, write_frame, FrameError, GuestMessage, HostMessage};

use crate::console::ConsoleScanner;
use crate::vm::{Accel, Backend, BackendError, Machine, VmEvent, VmSpec};

/// The QEMU program lab runs, unless `LAB_QEMU` names another.
pub const QEMU: &str = "qemu-system-x86_64";

/// How long one send to the agent may block before the agent counts as lost.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How much of QEMU's stderr is kept.
const MAX_STDERR: usize = 16 * 1024;

/// The `qemu` backend.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    binary: PathBuf,
    pdeathsig: Option<PathBuf>,
    vsock: Option<VsockBackend>,
}

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
        // util-linux's setpriv ties QEMU's life to lab's: if lab dies, even by SIGKILL, the
        // kernel kills QEMU, so no VM outlives the run that started it.
        let pdeathsig = which("setpriv");
        Ok(Self {
            binary,
            pdeathsig,
            vsock: None,
        })
    }

    /// Carries the agent over the lab's own virtio-vsock device, served by `backend`, instead
    /// of the second UART.
    pub fn with_vsock(mut self, backend: VsockBackend) -> Self {
        self.vsock = Some(backend);
        self
    }

    /// The agent transport VMs of this backend get.
    pub fn channel_name(&self) -> &'static str {
        if self.vsock.is_some() {
            "vsock"
        } else {
            "serial"
        }
    }

    /// `program args…` under `setpriv --pdeathsig KILL` when available: the child dies with lab.
    fn command(&self, program: &Path) -> Command {
        match &self.pdeathsig {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
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

/// The vhost-user socket and the hybrid-vsock socket of the VM of `spec`.
fn vsock_paths(spec: &VmSpec) -> (PathBuf, PathBuf) {
    (
        spec.workdir.join("vhost.sock"),
        spec.workdir.join("vsock.sock"),
    )
}

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
    // microvm: no PCI, no firmware tables beyond what Linux needs; ACPI stays on so that
    // kernels power off through it and so Debian kernels find the virtio-mmio devices it
    // describes. A vhost-user device needs guest RAM the backend process can map: a shared
    // memfd.
    push(&mut a, "-M");
    push(
        &mut a,
        if vsock {
            "microvm,acpi=on,rtc=on,memory-backend=mem"
        } else {
            "microvm,acpi=on,rtc=on"
        },
    );
    push(&mut a, "-accel");
    push(&mut a, spec.accel.name());
    push(&mut a, "-cpu");
    // Under KVM the host CPU, less the MSR some nested hosts cannot emulate; under TCG, the
    // most capable emulated CPU.
    push(
        &mut a,
        match spec.accel {
            Accel::Kvm => "host,-arch-capabilities",
            Accel::Tcg => "max",
        },
    );
    push(&mut a, "-smp");
    push(&mut a, &spec.cpus.to_string());
    push(&mut a, "-m");
    push(&mut a, &format!("{}M", spec.memory_mib));
    if vsock {
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
            // Modern (virtio 1.x) virtio-mmio transport for the vhost-user device.
            push(&mut a, "-global");
            push(&mut a, "virtio-mmio.force-legacy=false");
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
    let cmdline = format!(
        "{} {}",
        full_cmdline(spec, host_tsc_khz()),
        channel_param(channel)
    );
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
        let scanner = Arc::new(Mutex::new(ConsoleScanner::new()));
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let mut threads = Vec::new();
        let tag = spec.name.clone();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f)
        };

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
        let (helper, listener) = match helper {
            Some((h, l)) => (Some(h), l),
            None => (
                None,
                UnixListener::bind(&agent_socket).map_err(BackendError::Spawn)?,
            ),
        };

        let mut cmd = self.command(&self.binary);
        cmd.args(args(spec, &channel))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .current_dir(&spec.workdir);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut h) = helper {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                return Err(BackendError::Spawn(e));
            }
        };
        let stdout = child.stdout.take().expect("stdout was piped");
        let stderr = child.stderr.take().expect("stderr was piped");
        {
            let (scanner, events) = (scanner.clone(), events.clone());
            let f = Box::new(move || read_console(stdout, console_log, &scanner, &events));
            threads.push(spawn(format!("{tag}-console"), f).map_err(BackendError::Spawn)?);
        }
        {
            let (text, events) = (stderr_text.clone(), events.clone());
            let f = Box::new(move || read_stderr(stderr, &text, &events));
            threads.push(spawn(format!("{tag}-stderr"), f).map_err(BackendError::Spawn)?);
        }
        let writer: AgentWriter = Arc::new(Mutex::new(None));
        {
            let writer = writer.clone();
            let f = Box::new(move || read_agent(listener, &writer, &events));
            threads.push(spawn(format!("{tag}-agent"), f).map_err(BackendError::Spawn)?);
        }
        Ok(Box::new(QemuMachine {
            child,
            helper,
            socket: agent_socket,
            writer,
            scanner,
            stderr: stderr_text,
            threads,
            reaped: None,
        }))
    }
}

fn read_console(
    mut stdout: impl Read,
    mut log: File,
    scanner: &Mutex<ConsoleScanner>,
    events: &Sender<VmEvent>,
) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = log.write_all(&buf[..n]);
        let found = scanner
            .lock()
            .map(|mut s| s.feed(&buf[..n]))
            .unwrap_or_default();
        for e in found {
            let _ = events.send(VmEvent::Console(e));
        }
    }
    let found = scanner.lock().map(|mut s| s.finish()).unwrap_or_default();
    for e in found {
        let _ = events.send(VmEvent::Console(e));
    }
    let _ = events.send(VmEvent::ConsoleClosed);
}

/// QEMU's words for a guest it stopped and will not resume.
const FATAL: &[&str] = &[
    "KVM internal error",
    "emulation failure",
    "KVM: entry failed",
];

fn read_stderr(mut stderr: impl Read, text: &Mutex<String>, events: &Sender<VmEvent>) {
    let mut buf = [0u8; 4096];
    let mut reported = false;
    while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
            break;
        }
        let chunk = String::from_utf8_lossy(&buf[..n]);
        if let Ok(mut t) = text.lock() {
            if t.len() < MAX_STDERR {
                t.push_str(&chunk);
            }
            if !reported {
                if let Some(line) = t.lines().find(|l| FATAL.iter().any(|f| l.contains(f))) {
                    reported = true;
                    let _ = events.send(VmEvent::Fault(line.trim().to_string()));
                }
            }
        }
    }
}

/// The writing end of the agent channel, once QEMU has connected.
type AgentWriter = Arc<Mutex<Option<UnixStream>>>;

fn read_agent(listener: UnixListener, writer: &AgentWriter, events: &Sender<VmEvent>) {
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    drop(listener);
    if let (Ok(clone), Ok(mut slot)) = (stream.try_clone(), writer.lock()) {
        // A guest that stops reading must not wedge lab: a send that cannot make progress for
        // this long fails, and the session counts the agent as lost.
        let _ = clone.set_write_timeout(Some(SEND_TIMEOUT));
        *slot = Some(clone);
    }
    // A connection without QEMU's chardev on the other end is the wake-up from `Drop`.
    let _ = events.send(VmEvent::AgentConnected);
    loop {
        match read_frame(&mut stream) {
            Ok(Some(payload)) => match GuestMessage::decode(&payload) {
                Ok(msg) => {
                    if events.send(VmEvent::Agent(msg)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = events.send(VmEvent::AgentError(e.to_string()));
                    return;
                }
            },
            Ok(None) => break,
            Err(e) => {
                let _ = events.send(VmEvent::AgentError(e.to_string()));
                return;
            }
        }
    }
    let _ = events.send(VmEvent::AgentClosed);
}

/// A running QEMU.
struct QemuMachine {
    child: Child,
    /// The vsock backend process, when the agent rides on vsock.
    helper: Option<Child>,
    socket: PathBuf,
    writer: AgentWriter,
    scanner: Arc<Mutex<ConsoleScanner>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<JoinHandle<()>>,
    reaped: Option<Option<i32>>,
}

impl Machine for QemuMachine {
    fn console_tail(&self) -> Vec<String> {
        self.scanner.lock().map(|s| s.tail()).unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, msg: &HostMessage) -> std::io::Result<()> {
        let mut slot = self
            .writer
            .lock()
            .map_err(|_| std::io::Error::other("agent writer poisoned"))?;
        let stream = slot.as_mut().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "agent channel not connected",
            )
        })?;
        write_frame(stream, &msg.encode()).map_err(|e| match e {
            FrameError::Io(e) => e,
            other => std::io::Error::other(other.to_string()),
        })
    }

    fn kill(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
        }
        if let Some(h) = self.helper.as_mut() {
            let _ = h.kill();
        }
    }

    fn wait(&mut self) -> Option<i32> {
        if let Some(code) = self.reaped {
            return code;
        }
        let code = self.child.wait().ok().and_then(|s| s.code());
        self.reaped = Some(code);
        // QEMU is gone, so the backend's vhost-user connection closed and it ends by itself.
        if let Some(h) = self.helper.as_mut() {
            let _ = h.wait();
        }
        code
    }
}

impl Drop for QemuMachine {
    fn drop(&mut self) {
        self.kill();
        self.wait();
        // Wake the agent thread if QEMU never connected; harmless otherwise.
        let _ = UnixStream::connect(&self.socket);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
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
            workdir: "/w".into(),
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
            "-M microvm,acpi=on,rtc=on -accel tcg -cpu max",
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
