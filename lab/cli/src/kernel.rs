//! `lab kernel`: fetch Debian kernels, build kernels from source, list what is cached.

use std::path::PathBuf;

use clap::Subcommand;
use lab_kernel::build::{self, BuildRequest};
use lab_kernel::cache::Cache;
use lab_kernel::catalog::{self, Origin, Recipe};

use crate::ui::Ui;

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Fetch catalog kernels (debian-6.1, debian-6.12), or build catalog source kernels
    /// (lab-6.1, lab-6.12), replacing what is installed under the name.
    Fetch {
        /// Catalog names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Build a kernel from a source tree or a linux-source tarball with kernels/lab.config (or a
    /// catalog name such as lab-6.1, which uses Debian's linux-source package).
    Build {
        /// A source tree, a .tar.xz/.tar.gz tarball, or a catalog name.
        source: String,
        /// The name to install under (default: lab-<major>.<minor>).
        #[arg(long)]
        name: Option<String>,
        /// A config fragment instead of kernels/lab.config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Parallel jobs (default: all cores).
        #[arg(short, long)]
        jobs: Option<usize>,
    },
    /// List installed kernels and the catalog.
    List {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ui: &Ui, cmd: KernelCommand) -> anyhow::Result<u8> {
    let cache = Cache::from_env()?;
    let progress = |line: &str| ui.progress(line);
    match cmd {
        KernelCommand::Fetch { names } => {
            for name in names {
                let entry =
                    catalog::entry(&name).ok_or_else(|| catalog::CatalogError::Unknown {
                        name: name.clone(),
                        known: catalog::CATALOG
                            .iter()
                            .map(|e| e.name)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                let k = catalog::obtain(&cache, entry, &progress)?;
                println!("{}\t{}\t{}", k.info.id, k.info.release, k.dir.display());
            }
        }
        KernelCommand::Build {
            source,
            name,
            config,
            jobs,
        } => {
            let k = match catalog::entry(&source) {
                Some(
                    entry @ catalog::CatalogEntry {
                        recipe: Recipe::Build { .. },
                        ..
                    },
                ) if config.is_none() && name.is_none() => {
                    catalog::obtain(&cache, entry, &progress)?
                }
                _ => {
                    let req = BuildRequest {
                        source: PathBuf::from(&source),
                        name,
                        fragment: config,
                        jobs,
                    };
                    build::build(&cache, &req, &progress)?
                }
            };
            println!("{}\t{}\t{}", k.info.id, k.info.release, k.dir.display());
        }
        KernelCommand::List { json } => {
            let installed = catalog::installed(&cache)?;
            if json {
                let mut text = String::new();
                for k in &installed {
                    text.push_str(&serde_json::to_string(&k.info)?);
                    text.push('\n');
                }
                // A reader that stops early (`| grep -q`) is no error.
                crate::ui::print_stdout(&text)?;
                return Ok(0);
            }
            println!(
                "{:<34} {:<12} {:<30} {:<14} ORIGIN",
                "ID", "NAME", "RELEASE", "CONFIG"
            );
            for k in &installed {
                let origin = match &k.info.origin {
                    Origin::Debian { package, version } => format!("debian {package} {version}"),
                    Origin::Built { source, .. } => format!("built from {source}"),
                    Origin::File { path } => path.clone(),
                };
                let config = k
                    .info
                    .config_hash
                    .as_deref()
                    .map(|h| &h[..h.len().min(12)])
                    .unwrap_or("-");
                println!(
                    "{:<34} {:<12} {:<30} {:<14} {origin}",
                    k.info.id, k.info.name, k.info.release, config
                );
            }
            if installed.is_empty() {
                println!("(none installed)");
            }
            println!("\ncatalog (fetched or built on first use):");
            for e in catalog::CATALOG {
                let mark = if installed.iter().any(|k| k.info.name == e.name) {
                    "installed"
                } else {
                    ""
                };
                println!("  {:<12} {:<66} {mark}", e.name, e.description);
            }
        }
    }
    Ok(0)
}
