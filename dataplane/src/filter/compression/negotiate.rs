//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3): q-values, `*`, case-insensitive
//! tokens. Parsed in place over the header bytes: no allocation.

use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

use super::Coding;

/// A q-value in thousandths: `q=0.5` is 500, no `q` is 1000. Zero means "not acceptable".
type Quality = u16;

/// What the client said about the codings weir can produce. The first listing of a token
/// counts; later repeats are ignored.
#[derive(Debug, Default)]
struct Accepted {
    gzip: Option<Quality>,
    br: Option<Quality>,
    zstd: Option<Quality>,
    /// `*`: every coding not listed by name.
    any: Option<Quality>,
}

impl Accepted {
    fn parse(headers: &HeaderMap) -> Self {
        let mut accepted = Accepted::default();
        for value in headers.get_all(ACCEPT_ENCODING) {
            for element in value.as_bytes().split(|&b| b == b',') {
                let Some((token, quality)) = parse_element(element) else { continue };
                let slot = if token.eq_ignore_ascii_case(b"gzip")
                    || token.eq_ignore_ascii_case(b"x-gzip")
                {
                    &mut accepted.gzip
                } else if token.eq_ignore_ascii_case(b"br") {
                    &mut accepted.br
                } else if token.eq_ignore_ascii_case(b"zstd") {
                    &mut accepted.zstd
                } else if token == b"*" {
                    &mut accepted.any
                } else {
                    // `identity`, `deflate`, `compress`, unknown codings: nothing weir offers.
                    continue;
                };
                slot.get_or_insert(quality);
            }
        }
        accepted
    }

    /// The client's q-value for `coding`: its own listing, else `*`'s, else 0.
    fn quality(&self, coding: Coding) -> Quality {
        let named = match coding {
            Coding::Gzip => self.gzip,
            Coding::Brotli => self.br,
            Coding::Zstd => self.zstd,
        };
        named.or(self.any).unwrap_or(0)
    }
}

/// The coding of `offered` (in preference order) that the request's `Accept-Encoding`
/// rates highest, ties going to the earlier one; `None` when the header is missing or
/// empty, or accepts none of them.
pub(super) fn choose(headers: &HeaderMap, offered: &[Coding]) -> Option<Coding> {
    if !headers.contains_key(ACCEPT_ENCODING) {
        return None;
    }
    let accepted = Accepted::parse(headers);
    let mut best: Option<(Coding, Quality)> = None;
    for &coding in offered {
        let quality = accepted.quality(coding);
        if quality > 0 && best.is_none_or(|(_, q)| quality > q) {
            best = Some((coding, quality));
        }
    }
    best.map(|(coding, _)| coding)
}

/// One list element: `token *( OWS ";" OWS name "=" value )`. The weight is `q`; other
/// parameters are ignored. A malformed element (no token, a parameter without `=`, a bad
/// q-value) is skipped whole.
fn parse_element(element: &[u8]) -> Option<(&[u8], Quality)> {
    let mut parts = element.split(|&b| b == b';');
    let token = parts.next()?.trim_ascii();
    if token.is_empty() {
        return None;
    }
    let mut quality = 1000;
    for param in parts {
        let eq = param.iter().position(|&b| b == b'=')?;
        let (name, value) = (param[..eq].trim_ascii(), param[eq + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"q") {
            quality = parse_quality(value)?;
        }
    }
    Some((token, quality))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_quality(value: &[u8]) -> Option<Quality> {
    let (&int, rest) = value.split_first()?;
    let fraction = match rest {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 3 && digits.iter().all(u8::is_ascii_digit) => digits,
        _ => return None,
    };
    let mut thousandths: Quality = 0;
    for i in 0..3 {
        let digit = fraction.get(i).map_or(0, |d| Quality::from(d - b'0'));
        thousandths = thousandths * 10 + digit;
    }
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use Coding::{Brotli, Gzip, Zstd};

    const ALL: &[Coding] = &[Zstd, Brotli, Gzip];

    fn pick(offered: &[Coding], values: &[&str]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, v.parse().unwrap());
        }
        choose(&headers, offered)
    }

    #[test]
    fn negotiation_table() {
        let cases: &[(&[Coding], &[&str], Option<Coding>)] = &[
            // Missing or empty header: no compression.
            (ALL, &[], None),
            (ALL, &[""], None),
            (ALL, &["  "], None),
            // Plain lists: the configured preference decides among equals.
            (ALL, &["gzip"], Some(Gzip)),
            (ALL, &["gzip, deflate, br"], Some(Brotli)),
            (ALL, &["gzip, deflate, br, zstd"], Some(Zstd)),
            (&[Gzip, Brotli], &["br, gzip"], Some(Gzip)),
            (&[Brotli, Gzip], &["gzip, br"], Some(Brotli)),
            // Ties at q=1 go to the configured order.
            (&[Gzip, Brotli], &["br;q=1, gzip;q=1"], Some(Gzip)),
            (&[Brotli, Gzip], &["br;q=1, gzip;q=1"], Some(Brotli)),
            (ALL, &["br;q=1.0, gzip;q=1.000"], Some(Brotli)),
            // A higher q wins over the configured order.
            (ALL, &["zstd;q=0.5, gzip;q=0.8"], Some(Gzip)),
            (ALL, &["zstd;q=0.001, br;q=0.002"], Some(Brotli)),
            // q=0 means not acceptable.
            (ALL, &["gzip;q=0"], None),
            (ALL, &["gzip;q=0.000, br"], Some(Brotli)),
            (&[Gzip], &["gzip;q=0, br"], None),
            // `*` covers codings not listed, never those listed.
            (ALL, &["*"], Some(Zstd)),
            (ALL, &["*;q=0.5"], Some(Zstd)),
            (ALL, &["*;q=0.5, gzip"], Some(Gzip)),
            (ALL, &["*;q=0.5, zstd;q=0.4"], Some(Brotli)),
            (ALL, &["*;q=0, gzip;q=0.1"], Some(Gzip)),
            (ALL, &["*;q=0"], None),
            (&[Gzip], &["gzip;q=0, *"], None),
            // identity: not something weir produces.
            (ALL, &["identity;q=0"], None),
            (ALL, &["identity"], None),
            (ALL, &["identity;q=0, gzip"], Some(Gzip)),
            // Tokens and parameter names are case-insensitive; whitespace is optional.
            (ALL, &["GZIP"], Some(Gzip)),
            (ALL, &["Br ; Q=0.9 , GZip;q=0.8"], Some(Brotli)),
            (ALL, &["ZSTD"], Some(Zstd)),
            (ALL, &["x-gzip"], Some(Gzip)),
            // Several header lines are one list.
            (ALL, &["gzip;q=0.5", "br"], Some(Brotli)),
            // The first listing of a token counts.
            (ALL, &["gzip;q=0, gzip"], None),
            // Codings not offered are never chosen.
            (&[Gzip], &["br, zstd"], None),
            (&[], &["gzip"], None),
            // Garbage: malformed elements are skipped, the rest still counts.
            (ALL, &["gzip;q=2"], None),
            (ALL, &["gzip;q=1.5"], None),
            (ALL, &["gzip;q=0.1234"], None),
            (ALL, &["gzip;q=-1"], None),
            (ALL, &["gzip;q="], None),
            (ALL, &["gzip;q"], None),
            (ALL, &["gzip;q=abc, br"], Some(Brotli)),
            (ALL, &[",,, ;q=1, gzip"], Some(Gzip)),
            (ALL, &["gzipbr"], None),
            (ALL, &["gzip br"], None),
            (ALL, &["gzip;level=9"], Some(Gzip)),
            (ALL, &["\t;;=;"], None),
        ];
        for (offered, values, want) in cases {
            assert_eq!(pick(offered, values), *want, "{values:?} with {offered:?}");
        }
    }

    #[test]
    fn non_utf8_header_is_parsed_as_bytes() {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, http::HeaderValue::from_bytes(b"\xff\xfe, br").unwrap());
        assert_eq!(choose(&headers, ALL), Some(Brotli));
    }

    #[test]
    fn quality_grammar() {
        for (text, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.005", Some(5)),
            ("0.999", Some(999)),
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("2", None),
            (".5", None),
            ("0.5.", None),
            ("", None),
        ] {
            assert_eq!(parse_quality(text.as_bytes()), want, "{text:?}");
        }
    }
}
