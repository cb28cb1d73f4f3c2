//! Request-target checks before routing: dot-segment removal (RFC 3986 §5.2.4).
//!
//! `/public/../admin` must be routed — and forwarded — as `/admin`, otherwise a rule's
//! policy could be bypassed by an upstream that resolves dot segments itself. Percent-encoded
//! dots (`%2e`) count as dots, as upstreams commonly decode them. Empty segments (`//`) are
//! kept as sent.

/// The path with dot segments removed, or `None` when it has none (the common case: a
/// byte scan, no allocation).
pub fn remove_dot_segments(path: &str) -> Option<String> {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return None;
    }
    let rest = path.strip_prefix('/')?;
    if !rest.split('/').any(|seg| dots(seg) > 0) {
        return None;
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match dots(seg) {
            1 => trailing_slash = i == last,
            2 => {
                out.pop();
                trailing_slash = i == last;
            }
            _ => out.push(seg),
        }
    }
    let mut normal = String::with_capacity(path.len());
    for seg in &out {
        normal.push('/');
        normal.push_str(seg);
    }
    if trailing_slash || normal.is_empty() {
        normal.push('/');
    }
    Some(normal)
}

/// 1 for a `.` segment, 2 for `..` (either possibly as `%2e`), 0 otherwise.
fn dots(segment: &str) -> usize {
    let s = segment.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < s.len() {
        if s[i] == b'.' {
            i += 1;
        } else if s.len() - i >= 3 && s[i] == b'%' && s[i + 1] == b'2' && (s[i + 2] | 0x20) == b'e'
        {
            i += 3;
        } else {
            return 0;
        }
        n += 1;
        if n > 2 {
            return 0;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_dot_segments() {
        let n = |p| remove_dot_segments(p);
        assert_eq!(n("/api/orders/1"), None);
        assert_eq!(n("/a/b.json"), None);
        assert_eq!(n("/a/.../b"), None);
        assert_eq!(n("/public/../admin").as_deref(), Some("/admin"));
        assert_eq!(n("/public/%2e%2E/admin").as_deref(), Some("/admin"));
        assert_eq!(n("/a/./b").as_deref(), Some("/a/b"));
        assert_eq!(n("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(n("/a/.").as_deref(), Some("/a/"));
        assert_eq!(n("/..").as_deref(), Some("/"));
        assert_eq!(n("/../../x").as_deref(), Some("/x"));
        assert_eq!(n("/a//../b").as_deref(), Some("/a/b"));
    }
}
