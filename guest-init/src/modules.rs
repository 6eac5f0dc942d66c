//! Loads the kernel modules the initramfs carries, in the order of their `modules.dep`
//! (dependencies before dependants), before any job runs.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use crate::sys;

/// Loads every module listed in `/lib/modules/<release>/modules.dep`; returns one note per
/// module loaded or failed. A missing modules.dep means there is nothing to load.
pub fn load_all(release: &str) -> Vec<String> {
    let dir = format!("/lib/modules/{release}");
    let Ok(text) = std::fs::read_to_string(format!("{dir}/modules.dep")) else {
        return Vec::new();
    };
    let deps = parse(&text);
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for (module, _) in &deps.lines {
        visit(module, &deps.map, &mut seen, &mut order, 0);
    }
    let mut notes = Vec::new();
    for module in order {
        let path = format!("{dir}/{module}");
        let result = File::open(&path).and_then(|f| sys::finit_module(&f));
        match result {
            Ok(()) => notes.push(format!("loaded {module}")),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => notes.push(format!("failed to load {module}: {e}")),
        }
    }
    notes
}

struct Deps {
    lines: Vec<(String, Vec<String>)>,
    map: HashMap<String, Vec<String>>,
}

fn parse(text: &str) -> Deps {
    let mut lines = Vec::new();
    for line in text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let deps: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        lines.push((module.trim().to_string(), deps));
    }
    let map = lines.iter().cloned().collect();
    Deps { lines, map }
}

/// Depth-first: dependencies first. The depth bound stops a cyclic modules.dep.
fn visit(
    module: &str,
    map: &HashMap<String, Vec<String>>,
    seen: &mut HashSet<String>,
    order: &mut Vec<String>,
    depth: usize,
) {
    if depth > 64 || !seen.insert(module.to_string()) {
        return;
    }
    for dep in map.get(module).into_iter().flatten() {
        visit(dep, map, seen, order, depth + 1);
    }
    order.push(module.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(text: &str) -> Vec<String> {
        let deps = parse(text);
        let (mut seen, mut order) = (HashSet::new(), Vec::new());
        for (m, _) in &deps.lines {
            visit(m, &deps.map, &mut seen, &mut order, 0);
        }
        order
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let text = "vmw_vsock_virtio_transport.ko: vmw_vsock_virtio_transport_common.ko vsock.ko virtio.ko virtio_ring.ko\n\
                    vmw_vsock_virtio_transport_common.ko: vsock.ko\n\
                    vsock.ko:\n\
                    virtio_mmio.ko: virtio.ko virtio_ring.ko\n\
                    virtio.ko: virtio_ring.ko\n\
                    virtio_ring.ko:\n";
        assert_eq!(
            order(text),
            [
                "vsock.ko",
                "vmw_vsock_virtio_transport_common.ko",
                "virtio_ring.ko",
                "virtio.ko",
                "vmw_vsock_virtio_transport.ko",
                "virtio_mmio.ko"
            ]
        );
    }

    #[test]
    fn cycles_and_junk_do_not_hang() {
        assert_eq!(order("a.ko: b.ko\nb.ko: a.ko\njunk\n"), ["b.ko", "a.ko"]);
    }
}
