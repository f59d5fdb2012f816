//! The seccomp filter: [`SECCOMP_DENIED`] fail with `EPERM`, everything else is allowed.
//!
//! The filter is a short classic-BPF program written here rather than compiled by a
//! general rule engine: the kernel runs the filter once per system-call number when it is
//! installed (to cache the calls it always allows) and JIT-compiles it, so its length is
//! paid at every sandboxed spawn. This one is a straight list of comparisons, about 30
//! instructions (a general compiler's was 125, and took 100 µs to install).

use runtime_vars::sandbox::SECCOMP_DENIED;

use crate::sys;

/// `offsetof(struct seccomp_data, nr)` and `.arch`.
const NR: u32 = 0;
const ARCH: u32 = 4;

/// `AUDIT_ARCH_*` of this build's architecture (`None`: one this filter does not know).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// On x86_64, numbers from here on are the x32 ABI's: the same calls under other numbers.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);
#[cfg(not(target_arch = "x86_64"))]
const X32_SYSCALL_BIT: Option<u32> = None;

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;

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

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter: a call from another architecture (a 32-bit call on x86_64, an x32 call)
/// fails with `EPERM`, so no other numbering reaches a denied call; each denied number
/// fails with `EPERM`; the rest is allowed.
pub(crate) fn program() -> Result<Vec<libc::sock_filter>, String> {
    let arch =
        AUDIT_ARCH.ok_or_else(|| format!("no seccomp filter for {}", std::env::consts::ARCH))?;
    let mut numbers = Vec::with_capacity(SECCOMP_DENIED.len());
    for name in SECCOMP_DENIED {
        let nr = number(name).ok_or_else(|| format!("no number for {name}"))?;
        numbers.push(u32::try_from(nr).map_err(|_| format!("{name}: number {nr}"))?);
    }
    numbers.sort_unstable();
    numbers.dedup();
    let mut p = vec![
        op(LD_W_ABS, 0, 0, ARCH),
        // Our architecture: skip the next instruction.
        op(JEQ_K, 1, 0, arch),
        op(RET_K, 0, 0, RET_EPERM),
        op(LD_W_ABS, 0, 0, NR),
    ];
    if let Some(bit) = X32_SYSCALL_BIT {
        p.push(op(JGE_K, 0, 1, bit));
        p.push(op(RET_K, 0, 0, RET_EPERM));
    }
    // Each comparison jumps over the ones after it and the allow, to the deny at the end.
    for (i, nr) in numbers.iter().enumerate() {
        let to_deny = numbers.len() - i;
        let jt = u8::try_from(to_deny).map_err(|_| "too many denied calls".to_owned())?;
        p.push(op(JEQ_K, jt, 0, *nr));
    }
    p.push(op(RET_K, 0, 0, RET_ALLOW));
    p.push(op(RET_K, 0, 0, RET_EPERM));
    Ok(p)
}

/// Install the filter on this thread (the process has one, before the actor starts; the
/// filter is inherited by every thread and process it makes). `no_new_privs` must be set.
pub(crate) fn install() -> Result<String, String> {
    let program = program()?;
    sys::install_seccomp(&program).map_err(|e| format!("installing the filter: {e}"))?;
    Ok(format!(
        "{} system calls denied with EPERM ({} instructions)",
        SECCOMP_DENIED.len(),
        program.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denied_call_has_a_number_and_the_program_is_short() {
        for name in SECCOMP_DENIED {
            assert!(number(name).is_some(), "{name}");
        }
        let p = program().unwrap();
        assert!(
            p.len() <= SECCOMP_DENIED.len() + 8,
            "{} instructions",
            p.len()
        );
    }

    /// In a forked child: after the filter, a denied call fails with EPERM and the rest
    /// works (exit code 0), or the child says which check failed.
    #[test]
    fn the_filter_denies_the_list_and_allows_the_rest() {
        // Built before the fork: the child of a threaded process must not allocate.
        let program = program().unwrap();
        match sys::fork_single_threaded().unwrap() {
            sys::Forked::Child => {
                let code = (|| {
                    if sys::set_no_new_privs().is_err() || sys::install_seccomp(&program).is_err() {
                        return 1;
                    }
                    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 0)
                    // and getppid take integers only.
                    let (keyctl, ppid) =
                        unsafe { (libc::syscall(libc::SYS_keyctl, 0, -2, 0), libc::getppid()) };
                    if keyctl != -1
                        || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
                    {
                        return 2;
                    }
                    if ppid <= 0 {
                        return 3;
                    }
                    0
                })();
                sys::exit_now(code)
            }
            sys::Forked::Parent(pid) => {
                let status =
                    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
                assert!(
                    matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                    "{status:?}"
                );
            }
        }
    }
}
