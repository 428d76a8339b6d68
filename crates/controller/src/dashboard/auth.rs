//! The dashboard's access rules: a token (as Jupyter's) in the URL's `?token=` or in the
//! cookie the page sets, compared in constant time; and the parsing of the bits of a
//! request those rules need.

use subtle::ConstantTimeEq;

/// The cookie the page sets so later requests (the WebSocket) carry the token. Cookies
/// are not kept apart by port, so each dashboard's name has its port: two controllers on
/// one host do not overwrite each other's.
pub(crate) fn cookie_name(port: u16) -> String {
    format!("corral_dashboard_token_{port}")
}

/// A fresh random token: 24 bytes as hex, like Jupyter's.
pub(crate) fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True when the request presents `token`, in its query or its cookie.
pub(crate) fn authorized(
    token: &str,
    cookie_name: &str,
    query: &str,
    cookie_header: Option<&str>,
) -> bool {
    let given = query_param(query, "token")
        .into_iter()
        .chain(cookie_header.and_then(|c| cookie(c, cookie_name)));
    let mut ok = false;
    for candidate in given {
        ok |= bool::from(candidate.as_bytes().ct_eq(token.as_bytes()));
    }
    ok
}

/// Splits a request target into its path and query (without the `?`).
pub(crate) fn split_url(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// The first value of `name` in a query string, percent-decoded.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

/// The value of cookie `name` in a `Cookie:` header.
fn cookie(header: &str, name: &str) -> Option<String> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when a browser's `Origin` (if it sent one) is this server's own `Host`: a page
/// on another site cannot open the WebSocket with the cookie.
pub(crate) fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    match (origin, host) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_accepted_from_the_query_or_the_cookie_only() {
        let t = "abc123";
        assert!(authorized(
            t,
            "corral_dashboard_token",
            "token=abc123",
            None
        ));
        assert!(authorized(
            t,
            "corral_dashboard_token",
            "watch=x&token=abc123",
            None
        ));
        assert!(authorized(
            t,
            "corral_dashboard_token",
            "",
            Some("a=b; corral_dashboard_token=abc123")
        ));
        assert!(!authorized(t, "corral_dashboard_token", "", None));
        assert!(!authorized(
            t,
            "corral_dashboard_token",
            "token=abc12",
            None
        ));
        assert!(!authorized(
            t,
            "corral_dashboard_token",
            "token=abc1234",
            None
        ));
        assert!(!authorized(
            t,
            "corral_dashboard_token",
            "token=",
            Some("other=abc123")
        ));
        assert!(authorized(
            t,
            "corral_dashboard_token",
            "token=wrong",
            Some("corral_dashboard_token=abc123")
        ));
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(split_url("/ws?watch=a%2Db&x"), ("/ws", "watch=a%2Db&x"));
        assert_eq!(
            query_param("watch=a%2Db&x", "watch").as_deref(),
            Some("a-b")
        );
        assert_eq!(query_param("x", "x").as_deref(), Some(""));
        assert_eq!(query_param("a=%zz%", "a").as_deref(), Some("%zz%"));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn only_same_origin_browsers_are_served() {
        assert!(same_origin(None, Some("127.0.0.1:5")));
        assert!(same_origin(Some("http://127.0.0.1:5"), Some("127.0.0.1:5")));
        assert!(!same_origin(
            Some("http://evil.example"),
            Some("127.0.0.1:5")
        ));
        assert!(!same_origin(Some("http://127.0.0.1:5"), None));
    }
}
