//! The lab as the CLI sees it: resolves kernels, assembles guest images, picks the accelerator
//! and runs jobs in fresh VMs. One place that ties the cache, the backend and guest-init.

use std::path::PathBuf;
use std::time::Duration;

use lab_kernel::cache::{Cache, CacheError};
use lab_kernel::catalog::{self, CatalogError, Kernel};
use lab_kernel::guest_packages::{GuestPackages, GuestPackagesError, Layer, ResolvedPackage};
use lab_kernel::packages::{self, PackageError};
use lab_kernel::Progress;
use lab_proto::Job;

use crate::accel::{
    self, AccelChoice, AccelRequest, ChoiceInput, KvmAccess, ProbePolicy, Verdict, Verdicts,
};
use crate::cancel::Cancel;
use crate::carry::Carry;
use crate::guest::{self, ExtraFile, GuestError, GuestModules, Userland};
use crate::scratch;
use crate::session::{self, BootOptions, BootRequest, JobReport, SessionError, SessionEvent, Vm};
use crate::vm::{Accel, Backend};

/// Errors of preparing a boot (before any VM runs).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The cache failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The kernel could not be resolved, fetched or built.
    #[error(transparent)]
    Kernel(#[from] CatalogError),
    /// The guest's user space could not be fetched.
    #[error("failed to fetch the guest user space")]
    Userland(#[source] PackageError),
    /// The guest image could not be assembled.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The guest's extra packages could not be resolved, fetched or layered.
    #[error("failed to add guest packages")]
    Packages(#[from] GuestPackagesError),
    /// The carried host files could not be gathered or layered.
    #[error("failed to carry host files into the guest")]
    Carry(#[from] crate::carry::CarryError),
}

/// The lab: cache, backend and guest agent.
pub struct Lab {
    cache: Cache,
    backend: Box<dyn Backend>,
    /// The lab's own VMM, when this lab may use it.
    vmm: Option<Box<dyn Backend>>,
    guest_init: &'static [u8],
    userland: Option<Userland>,
    guest_packages: GuestPackages,
    /// The layer of `guest_packages`, once built.
    packages_layer: Option<Layer>,
    /// Modules every guest of this lab loads at boot or carries.
    modules: GuestModules,
    /// Host files every guest carries, and their layer once built.
    carry: Option<(Carry, Option<PathBuf>)>,
    /// The module tree for kernels given by path (`--modules DIR`); else their release's
    /// `/lib/modules` where the host has it.
    host_modules: Option<PathBuf>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("cache", &self.cache)
            .field("backend", &self.backend.name())
            .finish_non_exhaustive()
    }
}

/// A kernel with its base image, ready to boot.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The kernel.
    pub kernel: Kernel,
    /// The base initramfs (without a job or packages).
    pub base_image: PathBuf,
    /// What the guest boots with: the base image, with the package layer appended when there
    /// are guest packages.
    pub initrd: PathBuf,
    /// The guest packages in it, with their dependencies and versions.
    pub packages: Vec<ResolvedPackage>,
    /// The kernel's module tree, served to guests on demand (none for kernels without one).
    pub modules: Option<lab_kernel::module_index::ModuleSource>,
}

impl Lab {
    /// A lab over `cache` running VMs with `backend`; `guest_init` is the static agent binary.
    /// Scratch directories that an earlier, killed lab left behind are swept.
    pub fn new(cache: Cache, backend: Box<dyn Backend>, guest_init: &'static [u8]) -> Self {
        scratch::sweep(&scratch::base_dir());
        Self {
            cache,
            backend,
            vmm: None,
            guest_init,
            userland: None,
            guest_packages: GuestPackages::default(),
            packages_layer: None,
            modules: GuestModules::default(),
            carry: None,
            host_modules: None,
        }
    }

    /// Host files every guest of this lab carries ([`Carry`]: `--carry`, `--with-lab`).
    pub fn set_carry(&mut self, carry: Carry) {
        self.carry = (!carry.is_empty()).then_some((carry, None));
    }

    /// The modules guests of this lab load at boot.
    pub fn boot_modules(&self) -> &[String] {
        &self.modules.boot
    }

    /// Modules every guest of this lab loads at boot (`--module`, by name or alias, with
    /// their dependencies), in order.
    pub fn set_boot_modules<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.modules.boot = names.into_iter().map(Into::into).collect();
    }

    /// Makes every guest of this lab able to run KVM itself: it carries the kernel's kvm
    /// modules (and loads the one its CPU calls for when booted with nested virtualization).
    pub fn set_nested(&mut self, nested: bool) {
        self.modules.carry = if nested {
            guest::NESTED_MODULES
                .iter()
                .map(|m| m.to_string())
                .collect()
        } else {
            Vec::new()
        };
    }

    /// Debian packages (with their dependencies) every guest of this lab gets, as a layer over
    /// the base image (see [`lab_kernel::guest_packages`]).
    pub fn set_guest_packages<I, S>(&mut self, names: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.guest_packages = GuestPackages::new(names);
        self.packages_layer = None;
    }

    /// The guest packages asked for.
    pub fn guest_packages(&self) -> &GuestPackages {
        &self.guest_packages
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The backend (QEMU).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Lets this lab run VMs in the lab's own VMM (`BackendKind::Vmm`): KVM probes use it,
    /// so a kernel it can boot runs there and others fall back to QEMU.
    pub fn set_vmm(&mut self, vmm: Box<dyn Backend>) {
        self.vmm = Some(vmm);
    }

    /// Whether the lab's own VMM is available.
    pub fn has_vmm(&self) -> bool {
        self.vmm.is_some()
    }

    /// The backend that runs VMs booted with `opts` (QEMU when the VMM is not available).
    pub fn backend_for(&self, opts: &BootOptions) -> &dyn Backend {
        match (opts.backend, &self.vmm) {
            (crate::vm::BackendKind::Vmm, Some(vmm)) => vmm.as_ref(),
            _ => self.backend.as_ref(),
        }
    }

    /// Resolves `-k`: fetches or builds on first use.
    pub fn kernel(&self, arg: &str, progress: Progress<'_>) -> Result<Kernel, LabError> {
        Ok(catalog::resolve(&self.cache, arg, progress)?)
    }

    /// The user space every guest carries (busybox), fetched on first use.
    fn userland(&mut self, progress: Progress<'_>) -> Result<Userland, LabError> {
        if let Some(u) = &self.userland {
            return Ok(u.clone());
        }
        let busybox = packages::busybox(&self.cache, progress).map_err(LabError::Userland)?;
        let u = Userland {
            busybox: Some(busybox),
        };
        self.userland = Some(u.clone());
        Ok(u)
    }

    /// The module tree kernels given by path use (`--modules DIR`).
    pub fn set_host_modules(&mut self, dir: Option<PathBuf>) {
        self.host_modules = dir;
    }

    /// Resolves the kernel and builds its base image with `extras`.
    pub fn prepare(
        &mut self,
        kernel_arg: &str,
        extras: &[ExtraFile],
        progress: Progress<'_>,
    ) -> Result<Prepared, LabError> {
        let mut kernel = self.kernel(kernel_arg, progress)?;
        catalog::ensure_module_tree(&self.cache, &kernel, progress)?;
        catalog::attach_host_modules(
            &self.cache,
            &mut kernel,
            self.host_modules.as_deref(),
            progress,
        )?;
        let userland = self.userland(progress)?;
        let base_image = guest::base_image(
            &self.cache,
            &kernel,
            self.guest_init,
            &userland,
            extras,
            &self.modules,
        )?;
        let mut layers = Vec::new();
        let packages = match self.packages_layer(progress)? {
            Some(layer) => {
                layers.push(layer.path);
                layer.packages
            }
            None => Vec::new(),
        };
        if let Some(layer) = self.carry_layer(progress)? {
            layers.push(layer);
        }
        let initrd = guest::stacked_image(&self.cache, &base_image, &layers)?;
        let modules = kernel.module_source();
        Ok(Prepared {
            kernel,
            base_image,
            initrd,
            packages,
            modules,
        })
    }

    /// The layer of the guest packages, built on first use; `None` without packages.
    fn packages_layer(&mut self, progress: Progress<'_>) -> Result<Option<Layer>, LabError> {
        if self.guest_packages.is_empty() {
            return Ok(None);
        }
        if self.packages_layer.is_none() {
            self.packages_layer = Some(self.guest_packages.layer(&self.cache, progress)?);
        }
        Ok(self.packages_layer.clone())
    }

    /// The layer of the carried files, built on first use; `None` without any.
    fn carry_layer(&mut self, progress: Progress<'_>) -> Result<Option<PathBuf>, LabError> {
        let Some((carry, layer)) = &mut self.carry else {
            return Ok(None);
        };
        if layer.is_none() {
            progress(&format!(
                "writing the layer of carried files ({} MiB)",
                carry.bytes() >> 20
            ));
            *layer = Some(carry.layer(&self.cache)?);
        }
        Ok(layer.clone())
    }

    /// Boots `prepared` and runs `job` in it with `opts.run_timeout`, then powers off.
    pub fn run(
        &self,
        prepared: &Prepared,
        job: &Job,
        opts: &BootOptions,
        cancel: &Cancel,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<JobReport, SessionError> {
        let image = prepared.kernel.image_path();
        session::run(&self.request(prepared, &image, opts, cancel), job, observer)
    }

    /// Boots `prepared` and returns the running VM, its agent ready for requests.
    pub fn boot(
        &self,
        prepared: &Prepared,
        opts: &BootOptions,
        cancel: &Cancel,
        observer: &mut dyn FnMut(SessionEvent<'_>),
    ) -> Result<Vm, SessionError> {
        let image = prepared.kernel.image_path();
        Vm::boot(&self.request(prepared, &image, opts, cancel), observer)
    }

    fn request<'a>(
        &'a self,
        prepared: &'a Prepared,
        image: &'a std::path::Path,
        opts: &'a BootOptions,
        cancel: &'a Cancel,
    ) -> BootRequest<'a> {
        BootRequest {
            backend: self.backend_for(opts),
            name: &prepared.kernel.info.name,
            kernel: image,
            initrd: &prepared.initrd,
            opts,
            cancel,
            modules: prepared.modules.as_ref(),
        }
    }

    /// Chooses the accelerator for `prepared`, probing KVM with a real boot (within `policy`'s
    /// deadline) when no cached verdict still holds.
    pub fn choose_accel(
        &self,
        prepared: &Prepared,
        request: AccelRequest,
        policy: ProbePolicy,
        progress: Progress<'_>,
    ) -> Result<AccelChoice, LabError> {
        let path = self.cache.state_dir()?.join("kvm-verdicts.json");
        let access = KvmAccess::probe();
        // Concurrent lab processes probe a kernel once: the second waits for the first's verdict.
        let _lock = match (request, &access) {
            (AccelRequest::Auto, KvmAccess::Usable) => Some(self.cache.lock("kvm-verdicts")?),
            _ => None,
        };
        let mut verdicts = Verdicts::load(&path);
        // Verdicts of the lab's own VMM and of QEMU are kept apart.
        let mut key = accel::verdict_key(&prepared.kernel.info.id);
        if self.vmm.is_some() {
            key.push_str("+vmm");
        }
        let mut probe = || {
            progress(&format!(
                "probing whether KVM boots {} within {}s (once per kernel and host)",
                prepared.kernel.info.name,
                policy.deadline.as_secs()
            ));
            self.probe_kvm(prepared, policy.deadline)
        };
        let input = ChoiceInput {
            request,
            access: &access,
            pvm: accel::kvm_is_pvm(),
            kernel_name: &prepared.kernel.info.name,
            cached: verdicts.entries.get(&key),
            policy,
            now_unix: catalog::now_unix(),
        };
        let (choice, fresh) = accel::choose(input, &mut probe);
        if let Some(v) = fresh {
            verdicts.entries.insert(key, v);
            // Only a cache: failing to save costs a probe next time, nothing else.
            let _ = verdicts.save(&path);
        }
        Ok(choice)
    }

    /// Forgets cached KVM verdicts (all, or one kernel's).
    pub fn forget_verdicts(&self, kernel_id: Option<&str>) -> Result<(), LabError> {
        let path = self.cache.state_dir()?.join("kvm-verdicts.json");
        let mut verdicts = Verdicts::load(&path);
        match kernel_id {
            Some(id) => verdicts
                .entries
                .retain(|k, _| !k.starts_with(&format!("{id}|"))),
            None => verdicts.entries.clear(),
        }
        let _ = verdicts.save(&path);
        Ok(())
    }

    /// Boots `prepared` under KVM running `true`, the agent due within `deadline`.
    fn probe_kvm(&self, prepared: &Prepared, deadline: Duration) -> Verdict {
        let opts = BootOptions {
            accel: Accel::Kvm,
            // The lab's own VMM when there is one: what `auto` will run the kernel in.
            backend: if self.vmm.is_some() {
                crate::vm::BackendKind::Vmm
            } else {
                crate::vm::BackendKind::Qemu
            },
            boot_timeout: deadline,
            run_timeout: Some(Duration::from_secs(20)),
            boot_attempts: 1,
            ..BootOptions::default()
        };
        let job = Job::new(["/bin/true"]);
        let started = std::time::Instant::now();
        let result = self.run(prepared, &job, &opts, &Cancel::new(), &mut |_| {});
        let (kvm_boots, detail) = match result {
            Ok(report) => (
                true,
                format!("agent ready in {:.2}s", report.boot_time.as_secs_f64()),
            ),
            Err(e) => (
                false,
                format!("{e} after {:.1}s", started.elapsed().as_secs_f64()),
            ),
        };
        Verdict {
            kvm_boots,
            detail,
            probed_unix: catalog::now_unix(),
            deadline_secs: deadline.as_secs(),
        }
    }
}
