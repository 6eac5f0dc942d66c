//! Reads a guest's serial console: keeps a log file and a tail for error messages, and picks out
//! the lines that matter (guest-init's markers, kernel panics).

use std::collections::VecDeque;

use lab_proto::Marker;

/// How many console lines an error message carries.
pub const TAIL_LINES: usize = 40;

/// A notable console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// A guest-init marker.
    Marker(Marker),
    /// The kernel panicked; the line's text after "Kernel panic - not syncing: ".
    Panic(String),
}

/// Splits console bytes into lines, remembers the last [`TAIL_LINES`], and reports events.
#[derive(Debug, Default)]
pub struct ConsoleScanner {
    partial: Vec<u8>,
    tail: VecDeque<String>,
}

/// The longest line kept; longer lines are cut (a guest can print without newlines forever).
const MAX_LINE: usize = 4096;

impl ConsoleScanner {
    /// A scanner with nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the console; returns the events of every line they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ConsoleEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.finish_line(&line, &mut events);
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
        events
    }

    /// Flushes an unterminated last line (at end of stream).
    pub fn finish(&mut self) -> Vec<ConsoleEvent> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.finish_line(&line, &mut events);
        }
        events
    }

    fn finish_line(&mut self, raw: &[u8], events: &mut Vec<ConsoleEvent>) {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches('\r').to_string();
        if let Some(marker) = Marker::parse(&line) {
            events.push(ConsoleEvent::Marker(marker));
        } else if let Some(at) = line.find("Kernel panic - not syncing") {
            let reason = line[at..]
                .trim_start_matches("Kernel panic - not syncing")
                .trim_start_matches(':')
                .trim();
            events.push(ConsoleEvent::Panic(reason.to_string()));
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The last lines seen, oldest first, including an unterminated last line.
    pub fn tail(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().cloned().collect();
        if !self.partial.is_empty() {
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lab_proto::ExitStatus;

    #[test]
    fn markers_and_panics_are_found_across_chunk_boundaries() {
        let mut s = ConsoleScanner::new();
        let mut events = s.feed(b"[    0.1] Linux version 6.1\r\n@@lab/1 ready agent=0.1.0 ker");
        assert!(events.is_empty());
        events.extend(s.feed(b"nel=6.1.0\r\n[   2.0] sysrq: Trigger a crash\r\n"));
        events.extend(s.feed(b"[   2.0] Kernel panic - not syncing: sysrq triggered crash\r\n"));
        events.extend(s.feed(b"@@lab/1 exit code=4"));
        events.extend(s.finish());
        assert_eq!(
            events,
            vec![
                ConsoleEvent::Marker(Marker::Ready {
                    agent: "0.1.0".into(),
                    kernel: "6.1.0".into()
                }),
                ConsoleEvent::Panic("sysrq triggered crash".into()),
                ConsoleEvent::Marker(Marker::Exit(ExitStatus::Code(4))),
            ]
        );
    }

    #[test]
    fn the_tail_is_bounded_and_lines_are_cut() {
        let mut s = ConsoleScanner::new();
        for i in 0..100 {
            s.feed(format!("line {i}\n").as_bytes());
        }
        s.feed(&vec![b'x'; 10 * MAX_LINE]);
        let tail = s.tail();
        assert_eq!(tail.len(), TAIL_LINES + 1);
        assert_eq!(tail[0], "line 60");
        assert_eq!(tail[TAIL_LINES].len(), MAX_LINE);
    }
}
