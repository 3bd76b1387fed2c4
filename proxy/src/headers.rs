//! Header rewriting between client and upstream.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection and are
//! removed in both directions, together with every header the `Connection`
//! header names. Upgrades keep `Connection: upgrade` and `Upgrade`. Towards
//! the upstream the proxy adds `X-Forwarded-For`, `-Proto`, `-Host`, `Via`
//! and optionally RFC 7239 `Forwarded`, replacing what an untrusted client
//! sent in their place, and keeps `Host` as the client sent it.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether a request asks for a protocol upgrade (e.g. WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Keeps only the offered protocols of `Upgrade` whose name (before any
/// `/version`) is in `allowed` (lower case); returns whether one is left.
/// With none left, `Upgrade` is removed and the request is an ordinary one.
pub fn keep_upgrades(headers: &mut HeaderMap, allowed: &[String]) -> bool {
    let kept: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| {
            let name = p.split('/').next().unwrap_or_default();
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    let value = (!kept.is_empty())
        .then(|| HeaderValue::from_str(&kept.join(", ")).ok())
        .flatten();
    match value {
        Some(v) => {
            headers.insert(header::UPGRADE, v);
            true
        }
        None => {
            headers.remove(header::UPGRADE);
            false
        }
    }
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers. With `upgrade`, keeps the `Connection:
/// upgrade` / `Upgrade` pair that the upgrade needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names finds which hop-by-hop headers are there
    // (most messages carry none, or only `Connection`): removing an absent
    // name still costs a hash lookup each.
    let mut present = [false; 8];
    let mut has_upgrade = false;
    for k in headers.keys() {
        if k == header::UPGRADE {
            has_upgrade = true;
        } else if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present[i] = true;
        }
    }
    if !has_upgrade && !present.contains(&true) {
        return;
    }
    // Headers named by Connection are hop-by-hop too. The usual tokens
    // (`keep-alive`, `upgrade`) name headers the fixed set already decides:
    // they are skipped before a name is built (a name outside the standard
    // table costs an allocation).
    let mut named: Vec<HeaderName> = Vec::new();
    let tokens = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for t in tokens {
        let known = t.eq_ignore_ascii_case(header::UPGRADE.as_str())
            || HOP_BY_HOP
                .iter()
                .any(|h| t.eq_ignore_ascii_case(h.as_str()));
        if known {
            continue;
        }
        // `Connection: host` must not take the request's Host away.
        if let Ok(n) = HeaderName::from_bytes(t.as_bytes())
            && n != header::HOST
        {
            named.push(n);
        }
    }
    for n in named {
        headers.remove(n);
    }
    for (h, there) in HOP_BY_HOP.iter().zip(present) {
        if there {
            headers.remove(h);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if has_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Whether every `Transfer-Encoding` coding is `chunked` (the only one the
/// proxy re-frames; any other would be lost when the header is stripped).
pub fn only_chunked(headers: &HeaderMap) -> bool {
    headers.get_all(header::TRANSFER_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|c| c.is_empty() || c.eq_ignore_ascii_case("chunked"))
        })
    })
}

/// Joins several `cookie` fields into one, with `; ` (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut all = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (all.next(), all.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Valid field values joined by "; " stay valid.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The address of the client a request comes from: the peer itself, or,
/// from a trusted peer, the rightmost `X-Forwarded-For` entry that is not a
/// trusted peer too. `None` when a trusted peer's header names no usable
/// address.
pub fn client_address(
    headers: &HeaderMap,
    client: ClientInfo,
    forwarding: &crate::config::ForwardingConfig,
) -> Option<IpAddr> {
    if !client.trusted {
        return Some(client.ip);
    }
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut last = None;
    for entry in entries.iter().rev() {
        let ip: IpAddr = entry.parse().ok()?;
        if !forwarding.trusts(ip) {
            return Some(ip);
        }
        last = Some(ip);
    }
    // Every hop trusted: the leftmost is the client.
    last.or(Some(client.ip))
}

/// What the proxy knows about the client connection.
#[derive(Clone, Copy, Debug)]
pub struct ClientInfo {
    /// Peer IP.
    pub ip: IpAddr,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// Whether the peer is trusted (`forwarding.trusted_peers`): its
    /// forwarding headers are extended instead of replaced.
    pub trusted: bool,
}

/// `X-Forwarded-Port`, replaced like the others (it is dropped).
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
/// `X-Forwarded-Prefix`, replaced like the others (it is dropped).
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Every line of a header joined with `, ` (RFC 9110 §5.3), if any is text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let Ok(t) = v.to_str() else { continue };
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(t);
            }
            None => out = Some(t.to_owned()),
        }
    }
    out
}

/// Sets `name` to `prev, ours` (every previous line joined), or `ours`.
fn extend(headers: &mut HeaderMap, name: HeaderName, ours: &str) {
    let value = match joined(headers, &name) {
        Some(prev) => format!("{prev}, {ours}"),
        None => ours.to_owned(),
    };
    // Text that was valid, joined with text that is valid, stays valid.
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

/// This hop's RFC 7239 `Forwarded` element.
fn forwarded_element(client: ClientInfo, proto: &str, host: Option<&HeaderValue>) -> String {
    let mut el = match client.ip {
        IpAddr::V4(ip) => format!("for={ip}"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
    };
    el.push_str(";proto=");
    el.push_str(proto);
    if let Some(h) = host.and_then(|h| h.to_str().ok())
        && !h.contains(['"', '\\'])
    {
        el.push_str(";host=\"");
        el.push_str(h);
        el.push('"');
    }
    el
}

/// Adds the forwarding headers. From a trusted peer the client's
/// `X-Forwarded-For`, `Forwarded` and `Via` are extended and its
/// `X-Forwarded-Proto`/`-Host` kept; from any other peer every client-sent
/// `X-Forwarded-*` and `Forwarded` is replaced by what this proxy saw.
/// Repeated lines are joined, never cut. With `emit`, an RFC 7239
/// `Forwarded` element is added too.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: ClientInfo,
    host: Option<&HeaderValue>,
    via: &'static str,
    emit: bool,
) {
    let proto = if client.tls { "https" } else { "http" };
    let proto_value = HeaderValue::from_static(proto);
    if client.trusted {
        extend(headers, X_FORWARDED_FOR, &client.ip.to_string());
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, proto_value);
        }
        if let Some(h) = host
            && !headers.contains_key(&X_FORWARDED_HOST)
        {
            headers.insert(X_FORWARDED_HOST, h.clone());
        }
        if emit {
            extend(
                headers,
                header::FORWARDED,
                &forwarded_element(client, proto, host),
            );
        }
    } else {
        // Which of the replaced headers the client sent, in one pass over
        // the names: removing an absent name still costs a lookup each.
        let mut sent = [false; 5];
        for k in headers.keys() {
            if let Some(i) = REPLACED.iter().position(|r| r == k) {
                sent[i] = true;
            }
        }
        let [sent_host, sent_port, sent_prefix, sent_forwarded, sent_via] = sent;
        // insert replaces every line a client sent.
        if let Some(v) = ip_value(client.ip) {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_FORWARDED_PROTO, proto_value);
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None if sent_host => {
                headers.remove(&X_FORWARDED_HOST);
            }
            None => {}
        }
        if sent_port {
            headers.remove(&X_FORWARDED_PORT);
        }
        if sent_prefix {
            headers.remove(&X_FORWARDED_PREFIX);
        }
        if emit {
            if let Ok(v) = HeaderValue::from_str(&forwarded_element(client, proto, host)) {
                headers.insert(header::FORWARDED, v);
            }
        } else if sent_forwarded {
            headers.remove(header::FORWARDED);
        }
        if !sent_via {
            headers.insert(header::VIA, HeaderValue::from_static(via));
            return;
        }
    }
    if headers.contains_key(header::VIA) {
        extend(headers, header::VIA, via);
    } else {
        headers.insert(header::VIA, HeaderValue::from_static(via));
    }
}

/// The headers an untrusted client's values are dropped from (or, for
/// `Via`, extended), in the order `add_forwarded` reads its scan.
const REPLACED: [HeaderName; 5] = [
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_FORWARDED_PREFIX,
    header::FORWARDED,
    header::VIA,
];

/// The client address as a header value. IPv4, the common case, is
/// written by hand: the formatting machinery costs more than the rest of
/// the forwarding headers together.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                let digits = [octet / 100, octet / 10 % 10, octet % 10];
                let skip = if octet >= 100 {
                    0
                } else if octet >= 10 {
                    1
                } else {
                    2
                };
                for d in &digits[skip..] {
                    buf[n] = b'0' + d;
                    n += 1;
                }
            }
            HeaderValue::from_bytes(&buf[..n]).ok()
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()).ok(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        let cases = [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.255",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "99.100.101.10",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.1.2.3",
        ];
        for c in cases {
            let ip: IpAddr = c.parse().unwrap();
            assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str(), "{c}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upgrade_keeps_its_pair() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        h.insert(header::VIA, "1.1 edge".parse().unwrap());
        let host = HeaderValue::from_static("example.com");
        h.append(X_FORWARDED_FOR, "10.0.0.2".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "http".parse().unwrap());
        let client = ClientInfo {
            ip: "127.0.0.1".parse().unwrap(),
            tls: true,
            trusted: true,
        };
        let mut untrusted = h.clone();
        add_forwarded(&mut h, client, Some(&host), "1.1 switchyard", true);
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(
            h[&X_FORWARDED_PROTO], "http",
            "a trusted peer's proto is kept"
        );
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.1;proto=https;host=\"example.com\""
        );
        add_forwarded(
            &mut untrusted,
            ClientInfo {
                trusted: false,
                ..client
            },
            Some(&host),
            "1.1 switchyard",
            false,
        );
        assert_eq!(untrusted[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(untrusted.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(untrusted[&X_FORWARDED_PROTO], "https");
        assert!(!untrusted.contains_key(header::FORWARDED));
        let h = {
            let mut h = HeaderMap::new();
            h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
            h.insert(header::VIA, "1.1 edge".parse().unwrap());
            add_forwarded(&mut h, client, Some(&host), "1.1 switchyard", false);
            h
        };
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        assert_eq!(h[header::VIA], "1.1 edge, 1.1 switchyard");
    }
}
