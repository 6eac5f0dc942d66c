//! The host half of lab-vmm's QEMU vsock check (see `tests/qemu_vsock.sh`), speaking hybrid
//! vsock on a VM's Unix socket:
//!
//! - `vsock_probe check <uds>`: waits for the guest's echo server (port 1234), measures connect
//!   latency and 64-byte round trips, echoes 16 MiB through the guest, sends 16 MiB to its sink
//!   (1235) and reads 16 MiB from its source (1236), then accepts the guest's own connection on
//!   `<uds>_5000` and swaps 16 MiB each way with it. Every byte is checked.
//! - `vsock_probe kill <uds>`: streams through the guest's echo server until the connection
//!   ends; prints `@@probe transfer-started` once data flows (the script then kills the VM).
//!
//! The byte patterns match `tests/guest/vsock_guest.c`.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ECHO_PORT: u32 = 1234;
const SINK_PORT: u32 = 1235;
const SOURCE_PORT: u32 = 1236;
const HOST_PORT: u32 = 5000;
const BIG: u64 = 16 * 1024 * 1024;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn pattern(i: u64, seed: u8) -> u8 {
    let x = i ^ (i >> 11) ^ (i >> 19);
    (x.wrapping_mul(0x9d) as u8).wrapping_add(seed)
}

/// Hybrid vsock: `CONNECT <port>\n`, then `OK <host port>\n`.
fn connect(uds: &Path, port: u32) -> io::Result<(UnixStream, u32)> {
    let mut s = UnixStream::connect(uds)?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&line);
    let host_port = line
        .strip_prefix("OK ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected reply {line:?}")))?;
    Ok((s, host_port))
}

fn write_pattern(mut s: UnixStream, bytes: u64, seed: u8) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(sent + i as u64, seed);
        }
        s.write_all(&buf[..n])?;
        sent += n as u64;
    }
    s.shutdown(std::net::Shutdown::Write)
}

/// Reads until EOF; returns (bytes, mismatches against the pattern).
fn read_pattern(s: &mut UnixStream, seed: u8) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut bad) = (0u64, 0u64);
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok((got, bad));
        }
        bad += buf[..n]
            .iter()
            .enumerate()
            .filter(|(i, b)| **b != pattern(got + *i as u64, seed))
            .count() as u64;
        got += n as u64;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn check(uds: &Path) -> Result<()> {
    // 1. The guest's echo server comes up.
    let t0 = Instant::now();
    loop {
        match connect(uds, ECHO_PORT) {
            Ok(_) => break,
            Err(_) if t0.elapsed() < Duration::from_secs(180) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => return Err(format!("guest echo server never answered: {e}").into()),
        }
    }
    println!(
        "@@probe echo server up after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // 2. Connect latency: CONNECT sent to OK read.
    let mut lat = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (_s, port) = connect(uds, ECHO_PORT)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        ports.push(port);
    }
    let min = lat.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "@@probe connect latency ms: median {:.2} min {:.2} (20 connects, host ports {}..{})",
        median(&mut lat),
        min,
        ports[0],
        ports[ports.len() - 1]
    );

    // 3. 64-byte round trips.
    let (mut s, _) = connect(uds, ECHO_PORT)?;
    let mut rtt = Vec::new();
    let mut buf = [0u8; 64];
    for round in 0..1000u64 {
        let msg: Vec<u8> = (0..64).map(|i| pattern(round * 64 + i, 7)).collect();
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut buf)?;
        rtt.push(t.elapsed().as_secs_f64() * 1e6);
        if buf[..] != msg[..] {
            return Err(format!("round trip {round} came back different").into());
        }
    }
    let mut sorted = rtt.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "@@probe 64-byte round trip us: median {:.0} p99 {:.0} (1000 rounds)",
        median(&mut rtt),
        sorted[sorted.len() * 99 / 100]
    );
    drop(s);

    // 4. 16 MiB through the echo server: host -> guest -> host, checked.
    let (mut s, _) = connect(uds, ECHO_PORT)?;
    let w = s.try_clone()?;
    let t = Instant::now();
    let writer = std::thread::spawn(move || write_pattern(w, BIG, 0x41));
    let (got, bad) = read_pattern(&mut s, 0x41)?;
    let elapsed = t.elapsed();
    writer.join().map_err(|_| "writer panicked")??;
    if got != BIG || bad != 0 {
        return Err(format!("echo: got {got} of {BIG} bytes, {bad} mismatched").into());
    }
    println!(
        "@@probe echo 16 MiB byte-identical: {:.2} s, {:.1} MiB/s each way",
        elapsed.as_secs_f64(),
        mib_s(BIG, elapsed)
    );
    drop(s);

    // 5. One way each: 16 MiB into the guest's sink (it checks and reports), 16 MiB out of its
    //    source (checked here).
    let (mut s, _) = connect(uds, SINK_PORT)?;
    let w = s.try_clone()?;
    let t = Instant::now();
    write_pattern(w, BIG, 0x41)?;
    let mut reply = [0u8; 16];
    s.read_exact(&mut reply)?;
    let elapsed = t.elapsed();
    let got = u64::from_le_bytes(reply[..8].try_into()?);
    let bad = u64::from_le_bytes(reply[8..].try_into()?);
    if got != BIG || bad != 0 {
        return Err(format!("sink: guest got {got} of {BIG} bytes, {bad} mismatched").into());
    }
    println!(
        "@@probe host->guest 16 MiB byte-identical: {:.2} s, {:.1} MiB/s",
        elapsed.as_secs_f64(),
        mib_s(BIG, elapsed)
    );
    drop(s);
    let t = Instant::now();
    let (mut s, _) = connect(uds, SOURCE_PORT)?;
    let (got, bad) = read_pattern(&mut s, 0x42)?;
    let elapsed = t.elapsed();
    if got != BIG || bad != 0 {
        return Err(format!("source: got {got} of {BIG} bytes, {bad} mismatched").into());
    }
    println!(
        "@@probe guest->host 16 MiB byte-identical: {:.2} s, {:.1} MiB/s",
        elapsed.as_secs_f64(),
        mib_s(BIG, elapsed)
    );
    drop(s);

    // 6. The guest connects to host port 5000: 16 MiB each way, checked on both ends.
    let path = PathBuf::from(format!("{}_{HOST_PORT}", uds.display()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    let (mut g, _) = rx
        .recv_timeout(Duration::from_secs(180))
        .map_err(|_| "the guest never connected to host port 5000")??;
    let _ = std::fs::remove_file(&path);
    let w = g.try_clone()?;
    let t = Instant::now();
    let writer = std::thread::spawn(move || write_pattern(w, BIG, 0x42));
    let (got, bad) = read_pattern(&mut g, 0x41)?;
    let elapsed = t.elapsed();
    writer.join().map_err(|_| "writer panicked")??;
    if got != BIG || bad != 0 {
        return Err(format!("guest stream: got {got} of {BIG} bytes, {bad} mismatched").into());
    }
    println!(
        "@@probe guest-initiated 16 MiB each way, byte-identical: {:.2} s, {:.1} MiB/s each way",
        elapsed.as_secs_f64(),
        mib_s(BIG, elapsed)
    );
    Ok(())
}

fn kill(uds: &Path) -> Result<()> {
    let (mut s, _) = connect(uds, ECHO_PORT)?;
    let w = s.try_clone()?;
    std::thread::spawn(move || write_pattern(w, u64::MAX, 0x41));
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    let mut announced = false;
    let how = loop {
        match s.read(&mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(n) => {
                got += n as u64;
                if !announced && got >= 4 * 1024 * 1024 {
                    println!("@@probe transfer-started");
                    io::stdout().flush()?;
                    announced = true;
                }
            }
            Err(e) => break format!("error: {e}"),
        }
    };
    println!("@@probe transfer-ended after {got} bytes echoed ({how})");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [mode, uds] if mode == "check" => check(Path::new(uds)),
        [mode, uds] if mode == "kill" => kill(Path::new(uds)),
        _ => {
            eprintln!("usage: vsock_probe check|kill <uds path>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("@@probe FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
