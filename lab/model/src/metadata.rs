//! Test metadata, with the properties and the string syntax Kyua defines for them (shared by
//! Kyuafiles and atf's `-l` listing).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kyua's default test case timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// A metadata property that could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// No such property.
    #[error("unknown metadata property '{0}'")]
    Unknown(String),
    /// The value does not parse for the property.
    #[error("invalid value '{value}' for metadata property '{key}': {why}")]
    Invalid {
        /// The property.
        key: String,
        /// The value given.
        value: String,
        /// What was expected.
        why: &'static str,
    },
}

/// Who a test case must run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequiredUser {
    /// Anyone (the guest runs tests as root).
    #[default]
    Any,
    /// root.
    Root,
    /// Someone who is not root (the guest's `nobody`).
    Unprivileged,
}

/// Where a test case runs inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Execenv {
    /// A plain process in a shared VM, isolated Kyua-style (own process group, work directory,
    /// HOME and TMPDIR there, TZ=UTC).
    #[default]
    Host,
    /// Like `host`, in a fresh set of namespaces (mount, pid, uts, ipc; net with `vnet`): the
    /// Linux guest's FreeBSD jail.
    Jail,
    /// A fresh VM of its own.
    Vm,
}

impl Execenv {
    /// The name used in Kyuafiles.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Jail => "jail",
            Self::Vm => "vm",
        }
    }
}

/// The metadata of a test program or test case. A test case's metadata starts as its
/// program's and is then overridden property by property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Architectures the test may run on (empty: any).
    pub allowed_architectures: BTreeSet<String>,
    /// Platforms the test may run on (empty: any).
    pub allowed_platforms: BTreeSet<String>,
    /// User-defined properties (`custom.NAME` in Kyuafiles, `X-NAME` in atf).
    pub custom: BTreeMap<String, String>,
    /// What the test is for.
    pub description: String,
    /// The execution environment.
    pub execenv: Execenv,
    /// Parameters for the jail (`vnet` gives it a network stack of its own).
    pub execenv_jail_params: String,
    /// Whether the test case has a cleanup routine (atf).
    pub has_cleanup: bool,
    /// Whether the test must run alone, after the parallel phase.
    pub is_exclusive: bool,
    /// Configuration variables that must be set.
    pub required_configs: BTreeSet<String>,
    /// Free disk space needed, in bytes.
    pub required_disk_space: u64,
    /// Files that must exist in the guest.
    pub required_files: BTreeSet<String>,
    /// Kernel modules that must be loaded (Kyua's `required_kmods`): lab loads them in the
    /// guest (with modprobe, fetching them from lab as needed) before the case, and skips it
    /// with Kyua's reason when that fails.
    #[serde(default)]
    pub required_kmods: BTreeSet<String>,
    /// lab's own: the case runs KVM itself (`/dev/kvm`), so its VM boots with nested
    /// virtualization and the guest loads its kvm module; skipped where the guest has no
    /// `/dev/kvm` all the same.
    #[serde(default)]
    pub required_kvm: bool,
    /// Memory needed, in bytes.
    pub required_memory: u64,
    /// Programs that must exist in the guest (absolute, or looked up in PATH).
    pub required_programs: BTreeSet<String>,
    /// Who it must run as.
    pub required_user: RequiredUser,
    /// How long it may run.
    #[serde(with = "secs")]
    pub timeout: Duration,
}

impl Default for Metadata {
    fn default() -> Self {
        Self {
            allowed_architectures: BTreeSet::new(),
            allowed_platforms: BTreeSet::new(),
            custom: BTreeMap::new(),
            description: String::new(),
            execenv: Execenv::Host,
            execenv_jail_params: String::new(),
            has_cleanup: false,
            is_exclusive: false,
            required_configs: BTreeSet::new(),
            required_disk_space: 0,
            required_files: BTreeSet::new(),
            required_kmods: BTreeSet::new(),
            required_kvm: false,
            required_memory: 0,
            required_programs: BTreeSet::new(),
            required_user: RequiredUser::Any,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The properties lab knows, in Kyua's order: Kyua's (0.14's `required_kmods` included), and
/// lab's own `required_kvm` after Kyua's `required_files`/`required_kmods`.
pub const PROPERTIES: &[&str] = &[
    "allowed_architectures",
    "allowed_platforms",
    "description",
    "execenv",
    "execenv_jail_params",
    "has_cleanup",
    "is_exclusive",
    "required_configs",
    "required_disk_space",
    "required_files",
    "required_kmods",
    "required_kvm",
    "required_memory",
    "required_programs",
    "required_user",
    "timeout",
];

impl Metadata {
    /// Sets property `key` from its string form, as Kyua parses it: lists are
    /// whitespace-separated, sizes take a k/m/g/t suffix, booleans are true/false/yes/no,
    /// timeouts are seconds. `custom.NAME` sets a custom property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), MetadataError> {
        let invalid = |why| MetadataError::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            why,
        };
        let words = || value.split_whitespace().map(str::to_string).collect();
        match key {
            "allowed_architectures" => self.allowed_architectures = words(),
            "allowed_platforms" => self.allowed_platforms = words(),
            "description" => self.description = value.to_string(),
            "execenv" => {
                self.execenv = match value.trim() {
                    "" | "host" => Execenv::Host,
                    "jail" => Execenv::Jail,
                    "vm" => Execenv::Vm,
                    _ => return Err(invalid("expected host, jail or vm")),
                }
            }
            "execenv_jail_params" => self.execenv_jail_params = value.to_string(),
            "has_cleanup" => {
                self.has_cleanup = parse_bool(value).ok_or_else(|| invalid("expected a boolean"))?
            }
            "is_exclusive" => {
                self.is_exclusive =
                    parse_bool(value).ok_or_else(|| invalid("expected a boolean"))?
            }
            "required_configs" => self.required_configs = words(),
            "required_disk_space" => {
                self.required_disk_space = parse_bytes(value)
                    .ok_or_else(|| invalid("expected a size such as 512k or 1G"))?
            }
            "required_files" => self.required_files = words(),
            "required_kmods" => self.required_kmods = words(),
            "required_kvm" => {
                self.required_kvm =
                    parse_bool(value).ok_or_else(|| invalid("expected a boolean"))?
            }
            "required_memory" => {
                self.required_memory = parse_bytes(value)
                    .ok_or_else(|| invalid("expected a size such as 512k or 1G"))?
            }
            "required_programs" => self.required_programs = words(),
            "required_user" => {
                self.required_user = match value.trim() {
                    "" => RequiredUser::Any,
                    "root" => RequiredUser::Root,
                    "unprivileged" => RequiredUser::Unprivileged,
                    _ => return Err(invalid("expected root or unprivileged")),
                }
            }
            "timeout" => {
                let secs: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid("expected a whole number of seconds"))?;
                self.timeout = Duration::from_secs(secs);
            }
            _ => match key.strip_prefix("custom.") {
                Some(name) if !name.is_empty() => {
                    self.custom.insert(name.to_string(), value.to_string());
                }
                _ => return Err(MetadataError::Unknown(key.to_string())),
            },
        }
        Ok(())
    }

    /// Every property as `(name, value)` in Kyua's string form, custom ones last as
    /// `custom.NAME` (what `lab list -v` prints).
    pub fn properties(&self) -> Vec<(String, String)> {
        let join = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(" ");
        let user = match self.required_user {
            RequiredUser::Any => "",
            RequiredUser::Root => "root",
            RequiredUser::Unprivileged => "unprivileged",
        };
        let mut out: Vec<(String, String)> = vec![
            (
                "allowed_architectures".into(),
                join(&self.allowed_architectures),
            ),
            ("allowed_platforms".into(), join(&self.allowed_platforms)),
            ("description".into(), self.description.clone()),
            ("execenv".into(), self.execenv.name().into()),
            (
                "execenv_jail_params".into(),
                self.execenv_jail_params.clone(),
            ),
            ("has_cleanup".into(), self.has_cleanup.to_string()),
            ("is_exclusive".into(), self.is_exclusive.to_string()),
            ("required_configs".into(), join(&self.required_configs)),
            (
                "required_disk_space".into(),
                self.required_disk_space.to_string(),
            ),
            ("required_files".into(), join(&self.required_files)),
            ("required_kmods".into(), join(&self.required_kmods)),
            ("required_kvm".into(), self.required_kvm.to_string()),
            ("required_memory".into(), self.required_memory.to_string()),
            ("required_programs".into(), join(&self.required_programs)),
            ("required_user".into(), user.into()),
            ("timeout".into(), self.timeout.as_secs().to_string()),
        ];
        out.extend(
            self.custom
                .iter()
                .map(|(k, v)| (format!("custom.{k}"), v.clone())),
        );
        out
    }

    /// Whether the jail gets a network stack of its own (`vnet` in the jail parameters).
    pub fn jail_vnet(&self) -> bool {
        self.execenv_jail_params
            .split_whitespace()
            .any(|p| p == "vnet" || p == "vnet=new")
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => None,
    }
}

/// Parses a size such as `512`, `4k`, `2M`, `1G` or `1T` (binary multiples, case-insensitive).
pub fn parse_bytes(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    let (num, mult) = match v.as_bytes()[v.len() - 1].to_ascii_lowercase() {
        b'k' => (&v[..v.len() - 1], 1u64 << 10),
        b'm' => (&v[..v.len() - 1], 1 << 20),
        b'g' => (&v[..v.len() - 1], 1 << 30),
        b't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_every_property_from_strings() {
        let mut m = Metadata::default();
        let table = [
            ("allowed_architectures", "amd64  x86_64"),
            ("allowed_platforms", "lab"),
            ("description", "does a thing"),
            ("execenv", "jail"),
            ("execenv_jail_params", "vnet allow.raw_sockets"),
            ("has_cleanup", "true"),
            ("is_exclusive", "yes"),
            ("required_configs", "a b"),
            ("required_disk_space", "1G"),
            ("required_files", "/etc/passwd"),
            ("required_kmods", "veth  sch_ingress"),
            ("required_kvm", "true"),
            ("required_memory", "64m"),
            ("required_programs", "/bin/sh ip"),
            ("required_user", "unprivileged"),
            ("timeout", "12"),
            ("custom.owner", "net team"),
        ];
        for (k, v) in table {
            m.set(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        assert_eq!(m.allowed_architectures.len(), 2);
        assert_eq!(m.execenv, Execenv::Jail);
        assert!(m.jail_vnet());
        assert!(m.has_cleanup && m.is_exclusive);
        assert_eq!(m.required_disk_space, 1 << 30);
        assert_eq!(m.required_memory, 64 << 20);
        assert_eq!(m.required_user, RequiredUser::Unprivileged);
        assert_eq!(m.required_kmods.len(), 2);
        assert!(m.required_kvm);
        assert_eq!(m.timeout, Duration::from_secs(12));
        assert_eq!(m.custom["owner"], "net team");
        let props = m.properties();
        assert_eq!(props.len(), PROPERTIES.len() + 1);
        assert!(props.contains(&("required_programs".into(), "/bin/sh ip".into())));
    }

    #[test]
    fn rejects_bad_values_and_names() {
        let mut m = Metadata::default();
        for (k, v) in [
            ("timeout", "soon"),
            ("timeout", "-1"),
            ("is_exclusive", "maybe"),
            ("required_memory", "lots"),
            ("required_user", "bob"),
            ("execenv", "chroot"),
            ("required_kvm", "sometimes"),
        ] {
            assert!(
                matches!(m.set(k, v), Err(MetadataError::Invalid { .. })),
                "{k}={v}"
            );
        }
        assert_eq!(
            m.set("colour", "red"),
            Err(MetadataError::Unknown("colour".into()))
        );
        assert!(m.set("custom.", "x").is_err());
        assert_eq!(m, Metadata::default());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("4K"), Some(4096));
        assert_eq!(parse_bytes(""), None);
        assert_eq!(parse_bytes("k"), None);
        assert_eq!(parse_bytes("99999999999T"), None);
    }
}
