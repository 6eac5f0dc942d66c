//! A VM as a child process, whatever runs it (QEMU, or the lab's own VMM): its stdout is the
//! guest console (logged, scanned for markers), its stderr its own diagnostics (scanned for
//! fatal faults), and the guest agent reaches lab through a Unix socket lab listens on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use lab_proto::{read_frame, write_frame, FrameError, GuestMessage, HostMessage};

use crate::console::ConsoleScanner;
use crate::vm::{BackendError, Machine, VmEvent};

/// How long one send to the agent may block before the agent counts as lost.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How much of the VM process's stderr is kept.
pub(crate) const MAX_STDERR: usize = 16 * 1024;

/// What it takes to start a VM process and follow it.
pub(crate) struct VmProcess {
    /// A name for threads ("debian-6.1").
    pub(crate) tag: String,
    /// The VM process, not yet spawned (stdio is set here).
    pub(crate) command: Command,
    /// Where the console goes.
    pub(crate) console_log: File,
    /// The agent's listener, bound before the VM starts.
    pub(crate) listener: UnixListener,
    /// Its path (removed when the machine is dropped).
    pub(crate) agent_socket: PathBuf,
    /// Helper processes that live and die with the VM (QEMU's vsock backend, the shared
    /// root's file server).
    pub(crate) helpers: Vec<Child>,
    /// Diagnostics gathered so far (the helper's too).
    pub(crate) stderr: Arc<Mutex<String>>,
    /// Threads already following the VM (the helper's).
    pub(crate) threads: Vec<JoinHandle<()>>,
}

/// Spawns the VM process and the threads that follow its console, stderr and agent channel.
pub(crate) fn spawn(
    vm: VmProcess,
    events: Sender<VmEvent>,
) -> Result<Box<dyn Machine>, BackendError> {
    let VmProcess {
        tag,
        mut command,
        console_log,
        listener,
        agent_socket,
        mut helpers,
        stderr: stderr_text,
        mut threads,
    } = vm;
    let spawn =
        |name: String, f: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name).spawn(f);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            for h in &mut helpers {
                let _ = h.kill();
                let _ = h.wait();
            }
            return Err(BackendError::Spawn(e));
        }
    };
    let scanner = Arc::new(Mutex::new(ConsoleScanner::new()));
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
    Ok(Box::new(ProcessMachine {
        child,
        helpers,
        socket: agent_socket,
        writer,
        scanner,
        stderr: stderr_text,
        threads,
        reaped: None,
    }))
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

/// The words of a VM process (QEMU's, the lab VMM's) for a guest it stopped and will not
/// resume.
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

/// The writing end of the agent channel, once the guest has connected.
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

/// A running VM process.
struct ProcessMachine {
    child: Child,
    /// Helper processes (QEMU's vsock backend, the shared root's file server).
    helpers: Vec<Child>,
    socket: PathBuf,
    writer: AgentWriter,
    scanner: Arc<Mutex<ConsoleScanner>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<JoinHandle<()>>,
    reaped: Option<Option<i32>>,
}

impl Machine for ProcessMachine {
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
        for h in &mut self.helpers {
            let _ = h.kill();
        }
    }

    fn wait(&mut self) -> Option<i32> {
        if let Some(code) = self.reaped {
            return code;
        }
        let code = self.child.wait().ok().and_then(|s| s.code());
        self.reaped = Some(code);
        // The VM is gone, so a helper's connection to it closed and it ends by itself (the
        // kill makes sure of it).
        for h in &mut self.helpers {
            let _ = h.kill();
            let _ = h.wait();
        }
        code
    }
}

impl Drop for ProcessMachine {
    fn drop(&mut self) {
        self.kill();
        self.wait();
        // Wake the agent thread if the guest never connected; harmless otherwise.
        let _ = UnixStream::connect(&self.socket);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}
