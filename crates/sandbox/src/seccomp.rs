//! The seccomp filter: [`SECCOMP_DENIED`] fail with `EPERM`, everything else is allowed.

use std::collections::BTreeMap;

use runtime_vars::sandbox::SECCOMP_DENIED;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The number of a system call of [`SECCOMP_DENIED`] on this architecture.
fn number(name: &str) -> Option<libc::c_long> {
    Some(match name {
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "bpf" => libc::SYS_bpf,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_settime" => libc::SYS_clock_settime,
        "delete_module" => libc::SYS_delete_module,
        "finit_module" => libc::SYS_finit_module,
        "init_module" => libc::SYS_init_module,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "perf_event_open" => libc::SYS_perf_event_open,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "ptrace" => libc::SYS_ptrace,
        "quotactl" => libc::SYS_quotactl,
        "reboot" => libc::SYS_reboot,
        "request_key" => libc::SYS_request_key,
        "settimeofday" => libc::SYS_settimeofday,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "syslog" => libc::SYS_syslog,
        "userfaultfd" => libc::SYS_userfaultfd,
        _ => return None,
    })
}

/// Compile the filter for this architecture.
pub(crate) fn program() -> Result<BpfProgram, String> {
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("no seccomp support for {}: {e:?}", std::env::consts::ARCH))?;
    let mut rules = BTreeMap::new();
    for name in SECCOMP_DENIED {
        let nr = number(name).ok_or_else(|| format!("no number for {name}"))?;
        // No condition: the call is denied whatever its arguments.
        rules.insert(nr, Vec::new());
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building the filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("compiling the filter: {e}"))
}

/// Install the filter on every thread of this process (there is one, before the actor
/// starts; it is inherited by every thread and process it makes).
pub(crate) fn install() -> Result<String, String> {
    let program = program()?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| format!("installing the filter: {e}"))?;
    Ok(format!(
        "{} system calls denied with EPERM",
        SECCOMP_DENIED.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_has_a_number_and_the_filter_compiles() {
        for name in SECCOMP_DENIED {
            assert!(number(name).is_some(), "{name}");
        }
        assert!(!program().unwrap().is_empty());
    }
}
