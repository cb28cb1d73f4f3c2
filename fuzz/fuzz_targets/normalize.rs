//! Request normalization: `remove_dot_segments` on any path.
//!
//! Invariants: the result (or the path itself when nothing changes) of a path starting with
//! `/` starts with `/` and has no `.` or `..` segment (also as `%2e`), and normalising it
//! again changes nothing; a path without a leading `/` is never rewritten.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_dataplane::proxy::normalize::remove_dot_segments;

/// Whether a segment is `.` or `..`, either dot possibly written `%2e` / `%2E`.
fn is_dot_segment(seg: &str) -> bool {
    let mut rest = seg.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(b".") {
            rest = r;
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

fuzz_target!(|path: &str| {
    let out = remove_dot_segments(path);
    if !path.starts_with('/') {
        assert_eq!(out, None, "rewrote a path without a leading '/': {path:?}");
        return;
    }
    let normal = out.as_deref().unwrap_or(path);
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}: no leading '/'");
    assert!(
        !normal[1..].split('/').any(is_dot_segment),
        "{path:?} -> {normal:?}: a dot segment is left"
    );
    assert_eq!(remove_dot_segments(normal), None, "{path:?} -> {normal:?}: not idempotent");
    if let Some(n) = &out {
        assert!(n.len() <= path.len() + 1, "{path:?} -> {n:?}: grew");
    }
});
