//! Framing over a byte stream: a magic byte pair, a u32 payload length, then the payload.
//!
//! The magic lets a reader notice that it is not reading frames at all (a kernel message on the
//! wrong port, garbage from a broken guest) instead of trusting an arbitrary length.

use std::io::{self, Read, Write};

/// The bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"LB";

/// The largest payload accepted (1 MiB): output chunks are far smaller.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("i/o failed on the agent channel")]
    Io(#[from] io::Error),
    /// The stream does not start with a frame.
    #[error("bad frame magic {0:02x?}")]
    Magic([u8; 2]),
    /// A frame announced a payload over [`MAX_FRAME`].
    #[error("frame of {0} bytes over the limit of {MAX_FRAME}")]
    TooLong(usize),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Writes one frame holding `payload`.
pub fn write_frame(out: &mut dyn Write, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLong(payload.len()));
    }
    let len = u32::try_from(payload.len()).expect("MAX_FRAME fits in u32");
    let mut header = [0u8; 6];
    header[..2].copy_from_slice(&MAGIC);
    header[2..].copy_from_slice(&len.to_le_bytes());
    out.write_all(&header)?;
    out.write_all(payload)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub fn read_frame(input: &mut dyn Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 6];
    match read_full(input, &mut header)? {
        0 => return Ok(None),
        6 => {}
        _ => return Err(FrameError::Truncated),
    }
    if header[..2] != MAGIC {
        return Err(FrameError::Magic([header[0], header[1]]));
    }
    let len = u32::from_le_bytes([header[2], header[3], header[4], header[5]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut payload = vec![0u8; len];
    if read_full(input, &mut payload)? != len {
        return Err(FrameError::Truncated);
    }
    Ok(Some(payload))
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte at a time, like a slow serial line.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn frames_round_trip_over_a_trickling_stream() {
        let mut out = Vec::new();
        write_frame(&mut out, b"one").unwrap();
        write_frame(&mut out, b"").unwrap();
        write_frame(&mut out, &[7; 5000]).unwrap();
        let mut r = Trickle(&out);
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"one");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), vec![7; 5000]);
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn garbage_oversize_and_truncation_are_errors() {
        let mut r: &[u8] = b"Kernel panic";
        assert!(matches!(read_frame(&mut r), Err(FrameError::Magic(_))));
        let mut r: &[u8] = &[b'L', b'B', 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(read_frame(&mut r), Err(FrameError::TooLong(_))));
        let mut r: &[u8] = &[b'L', b'B', 4, 0, 0, 0, 1];
        assert!(matches!(read_frame(&mut r), Err(FrameError::Truncated)));
        let mut r: &[u8] = &[b'L', b'B', 4];
        assert!(matches!(read_frame(&mut r), Err(FrameError::Truncated)));
        assert!(matches!(
            write_frame(&mut Vec::new(), &vec![0; MAX_FRAME + 1]),
            Err(FrameError::TooLong(_))
        ));
    }
}
