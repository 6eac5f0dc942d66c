//! What the lab's builds of test programs share (BPF objects, C test programs): content keys for
//! their cache entries, Make depfiles, atomic writes, and compiler output cut to size.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A cache key: the recipe and every input's path and contents; `None` if one cannot be read.
pub(crate) fn content_key(recipe: &str, deps: &[PathBuf]) -> Option<String> {
    let mut key = Sha256::new();
    key.update(recipe.as_bytes());
    for dep in deps {
        let contents = fs::read(dep).ok()?;
        key.update([0]);
        key.update(dep.as_os_str().as_encoded_bytes());
        key.update([0]);
        key.update(Sha256::digest(&contents));
    }
    Some(hex(&key.finalize()))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first `max` bytes of `who`'s output `text`, cut at a character boundary.
pub(crate) fn head(text: &str, max: usize, who: &str) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[{who} output cut at {max} bytes]", &text[..end])
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename; on
/// failure, the path that failed and why.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(|e| (dir.to_path_buf(), e))?;
    file.write_all(bytes).map_err(|e| (path.to_path_buf(), e))?;
    file.persist(path)
        .map_err(|e| (path.to_path_buf(), e.error))?;
    Ok(())
}

/// The prerequisites in a Make depfile (`target: dep dep \` …), unescaped: `\ ` is a space,
/// `\#` a hash, `$$` a dollar, a backslash before a newline continues the line.
pub(crate) fn parse_depfile(text: &str) -> Vec<PathBuf> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(' ' | '#') => word.extend(chars.next()),
                Some('\n') => {
                    chars.next();
                    words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
                }
                Some('\r') => {
                    chars.next();
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                    words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
                }
                _ => word.push('\\'),
            },
            '$' if chars.peek() == Some(&'$') => {
                chars.next();
                word.push('$');
            }
            c if c.is_whitespace() => {
                words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
            }
            c => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    // Drop the target: everything up to the first word ending in an unescaped ':'.
    let target_end = words
        .iter()
        .position(|w| w.ends_with(':'))
        .map_or(0, |i| i + 1);
    words.drain(..target_end);
    words.into_iter().map(PathBuf::from).collect()
}
