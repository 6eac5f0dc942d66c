//! Primitive encoding: little-endian integers, length-prefixed byte strings and lists, with
//! bounded, checked decoding.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended inside a value.
    #[error("truncated message")]
    Truncated,
    /// A length is over its bound.
    #[error("length {len} over the limit of {max}")]
    TooLong {
        /// The length announced.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A string is not UTF-8.
    #[error("string is not utf-8")]
    BadUtf8,
    /// A tag is not one this version knows.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag.
        tag: u32,
    },
    /// Bytes were left after a complete message.
    #[error("{0} trailing bytes after message")]
    Trailing(usize),
}

/// The longest string (path, argument, env entry, message) accepted.
pub const MAX_STRING: usize = 64 * 1024;
/// The most items in one list (argv, env).
pub const MAX_ITEMS: usize = 4096;

/// Appends encoded values to a buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bytes so far.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
    /// A byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    /// A u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// An i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Bytes with a u32 length prefix.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("encoded values are bounded far below 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(v);
        self
    }
    /// A string with a u32 length prefix.
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    /// A list of strings with a u32 count prefix.
    pub fn strs<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("lists are bounded far below 4 GiB");
        self.u32(len);
        for s in v {
            self.str(s.as_ref());
        }
        self
    }
}

/// Reads encoded values from a slice, checking every bound.
#[derive(Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    /// A u16.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A u32.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A u64.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// An i32.
    pub fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn len(&mut self, max: usize) -> Result<usize, WireError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(WireError::TooLong { len, max });
        }
        Ok(len)
    }
    /// Bytes of at most `max`.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.len(max)?;
        self.take(len)
    }
    /// A string of at most [`MAX_STRING`] bytes.
    pub fn str(&mut self) -> Result<String, WireError> {
        let raw = self.bytes(MAX_STRING)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8)
    }
    /// A list of at most [`MAX_ITEMS`] strings.
    pub fn strs(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.len(MAX_ITEMS)?;
        (0..n).map(|_| self.str()).collect()
    }
    /// Fails unless every byte was consumed.
    pub fn end(self) -> Result<(), WireError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut e = Encoder::new();
        e.u8(7)
            .u16(300)
            .u32(70_000)
            .u64(1 << 40)
            .i32(-5)
            .str("héllo")
            .strs(&["a", "", "c"]);
        let bytes = e.finish();
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u8().unwrap(), 7);
        assert_eq!(d.u16().unwrap(), 300);
        assert_eq!(d.u32().unwrap(), 70_000);
        assert_eq!(d.u64().unwrap(), 1 << 40);
        assert_eq!(d.i32().unwrap(), -5);
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.strs().unwrap(), vec!["a", "", "c"]);
        d.end().unwrap();
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocating() {
        let mut d = Decoder::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            d.str(),
            Err(WireError::TooLong {
                len: u32::MAX as usize,
                max: MAX_STRING
            })
        );
        let mut d = Decoder::new(&[3, 0, 0, 0, b'a']);
        assert_eq!(d.str(), Err(WireError::Truncated));
        let mut d = Decoder::new(&[2, 0, 0, 0, 0xff, 0xfe]);
        assert_eq!(d.str(), Err(WireError::BadUtf8));
        let d = Decoder::new(&[1]);
        assert_eq!(d.end(), Err(WireError::Trailing(1)));
    }
}
