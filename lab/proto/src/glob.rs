//! fnmatch(3) without flags, the way kmod matches `modules.alias` patterns: what the host's
//! module index (lab-kernel) and the guest's modprobe (guest-init) must agree on.

/// fnmatch(3) without flags, as kmod matches `modules.alias` patterns: `*`, `?`, and
/// bracket expressions (`[abc]`, `[a-z]`, `[!x]`).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matching with one backtrack point for the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = bracket(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unterminated bracket is a literal '['.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c if c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the bracket expression starting at `p[start]` (`[`): whether it
/// matched and the index after the closing `]`; `None` if the bracket never closes.
fn bracket(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        // (pattern, text, matches)
        let table = [
            ("rtnl-link-veth", "rtnl-link-veth", true),
            ("net-pf-40", "net-pf-4", false),
            (
                "pci:v00008086d*sv*sd*bc*sc*i*",
                "pci:v00008086d00001234sv0sd0bc02sc00i00",
                true,
            ),
            ("pci:v00008086d*", "pci:v00001af4d00001000", false),
            ("fs-?p", "fs-9p", true),
            ("a[0-9]b", "a5b", true),
            ("a[!0-9]b", "a5b", false),
            ("a[!0-9]b", "axb", true),
            ("*", "", true),
            ("a*", "", false),
            ("a[b", "a[b", true),
            ("*x*y", "axbxcy", true),
        ];
        for (pattern, text, want) in table {
            assert_eq!(glob_match(pattern, text), want, "{pattern} vs {text}");
        }
    }
}
