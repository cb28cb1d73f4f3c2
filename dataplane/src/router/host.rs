//! Host normalisation for lookups: strip the port, lower-case without allocating.

/// Longest host name normalised on the stack; longer ones (invalid as DNS names anyway)
/// are lower-cased into a heap string.
const STACK_HOST: usize = 256;

/// Strips a `:port` suffix (also from a bracketed IPv6 literal) and one trailing dot.
pub(crate) fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.find(':') {
            // Exactly one colon followed by digits: a port. Anything else is left alone.
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Calls `f` with the normalised host: port stripped and ASCII lower-cased. Allocates only
/// when the host has upper-case letters and is longer than 256 bytes.
#[inline]
pub(crate) fn with_normalized<R>(host: &str, f: impl FnOnce(&str) -> R) -> R {
    let host = strip_port(host);
    if !host.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(host);
    }
    if host.len() <= STACK_HOST {
        let mut buf = [0u8; STACK_HOST];
        let out = &mut buf[..host.len()];
        out.copy_from_slice(host.as_bytes());
        out.make_ascii_lowercase();
        // ASCII lower-casing keeps UTF-8 valid, so this never fails.
        match std::str::from_utf8(out) {
            Ok(lower) => f(lower),
            Err(_) => f(host),
        }
    } else {
        f(&host.to_ascii_lowercase())
    }
}

/// The wildcard suffixes (`.b.example.com`, `.example.com`, `.com`) a host could match,
/// longest first. Each leaves at least one character of label in front, so `*.example.com`
/// matches `a.example.com` and `a.b.example.com` but never `example.com` itself.
#[inline]
pub(crate) fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.bytes().enumerate().filter(|&(i, b)| b == b'.' && i > 0).map(move |(i, _)| &host[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports_and_trailing_dot() {
        assert_eq!(strip_port("a.example.com:8080"), "a.example.com");
        assert_eq!(strip_port("a.example.com"), "a.example.com");
        assert_eq!(strip_port("a.example.com."), "a.example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a:b"), "a:b");
    }

    #[test]
    fn lower_cases_only_when_needed() {
        assert_eq!(with_normalized("API.Example.COM:443", |h| h.to_owned()), "api.example.com");
        assert_eq!(with_normalized("api.example.com", |h| h.to_owned()), "api.example.com");
        let long = format!("{}.COM", "A".repeat(300));
        assert_eq!(with_normalized(&long, |h| h.to_owned()), long.to_ascii_lowercase());
    }

    #[test]
    fn wildcard_suffixes_longest_first() {
        let s: Vec<&str> = wildcard_suffixes("a.b.example.com").collect();
        assert_eq!(s, [".b.example.com", ".example.com", ".com"]);
        assert_eq!(wildcard_suffixes(".com").count(), 0);
    }
}
