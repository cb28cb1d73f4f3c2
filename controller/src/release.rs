//! Giving memory freed by a reload back to the operating system.
//!
//! A compile allocates its scratch (parsed objects, maps it rebuilds) and frees it, and a
//! publish frees the previous compile. The allocator keeps the emptied pages for reuse and
//! returns them only on later allocator activity, which a configuration thread that goes idle
//! never has: 10k Routes kept ~1 KiB per Route of freed memory resident (Pss 3.1 KiB per
//! Route instead of 2.1, docs/performance.md). The binary installs a hook here that asks its
//! allocator to return what is free (`mi_collect` for mimalloc); the library calls it on the
//! threads that just freed a reload's memory. Without a hook (tests, other allocators) it does
//! nothing.

use std::sync::OnceLock;

static HOOK: OnceLock<fn()> = OnceLock::new();

/// Installs `hook`, called after a reload freed memory on the calling thread (once per
/// process; a second call is ignored).
pub fn install(hook: fn()) {
    let _ = HOOK.set(hook);
}

/// Asks the allocator to return free memory to the OS (the hook, if one is installed).
pub fn freed() {
    if let Some(hook) = HOOK.get() {
        hook();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn the_installed_hook_runs_on_every_release_and_a_second_install_is_ignored() {
        super::freed(); // no hook yet in this test binary: nothing happens
        super::install(|| {
            CALLS.fetch_add(1, Ordering::Relaxed);
        });
        super::install(|| panic!("a second hook must not replace the first"));
        let before = CALLS.load(Ordering::Relaxed);
        super::freed();
        super::freed();
        // Other tests of this binary may publish (and so release) meanwhile.
        assert!(CALLS.load(Ordering::Relaxed) >= before + 2);
    }
}
