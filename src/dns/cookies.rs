//! DNS cookies (RFC 7873), with server cookies made as RFC 9018 says, so that any client and
//! any tool that knows the format reads them alike. A query that carries a client cookie gets
//! a server cookie back in its response, over UDP and TCP; a query that carries a server cookie
//! sextant made for its address in the last hour has shown that its source is real (the cookie
//! came to that address), which the reflection guard takes as it takes a TCP connection. Cookies
//! are never required: a query without one, or with a stale or foreign one, is answered as any
//! other, with a fresh cookie.
//!
//! A server cookie is 16 bytes: version 1, three reserved bytes, a timestamp (Unix seconds,
//! compared in serial arithmetic), and SipHash-2-4 of client cookie | version | reserved |
//! timestamp | client address under a secret drawn at start. A restart changes the secret,
//! which costs each client one query without a proof. Servers that share one anycast address
//! would have to share it; sextant servers each answer at their own address.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher24;
use subtle::ConstantTimeEq;

/// Bytes an answer's COOKIE option takes: its code and length, the client cookie and ours.
pub const COOKIE_OPTION_LEN: usize = 4 + CLIENT_LEN + SERVER_LEN;
/// A server cookie older than this proves nothing (RFC 9018 §4.3).
const LIFETIME: u32 = 3600;
/// A server cookie older than this is answered with a fresh one (RFC 9018 §4.3).
const RENEW_AFTER: u32 = 1800;
/// How far ahead of our clock a server cookie may be (RFC 9018 §4.3: another server's clock).
const CLOCK_SKEW: u32 = 300;
const CLIENT_LEN: usize = 8;
const SERVER_LEN: usize = 16;
const VERSION: u8 = 1;

/// The data of a query's COOKIE option: a client cookie, and a server cookie when the client
/// has one from an earlier response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCookie {
    bytes: [u8; 40],
    len: u8,
}

/// A COOKIE option of a length RFC 7873 §5.2.2 answers with FORMERR.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl ClientCookie {
    /// Reads an option's data: 8 bytes (a client cookie alone) or 16 to 40 (with a server
    /// cookie of 8 to 32).
    pub fn parse(data: &[u8]) -> Result<Self, Malformed> {
        if data.len() != CLIENT_LEN && !(16..=40).contains(&data.len()) {
            return Err(Malformed);
        }
        let mut bytes = [0; 40];
        bytes[..data.len()].copy_from_slice(data);
        Ok(Self {
            bytes,
            len: data.len() as u8,
        })
    }

    fn client(&self) -> &[u8; CLIENT_LEN] {
        self.bytes[..CLIENT_LEN].try_into().expect("eight bytes")
    }

    fn server(&self) -> &[u8] {
        &self.bytes[CLIENT_LEN..self.len as usize]
    }
}

pub struct Cookies {
    secret: [u8; 16],
}

impl Default for Cookies {
    fn default() -> Self {
        Self::with_secret(rand::random())
    }
}

impl Cookies {
    pub fn with_secret(secret: [u8; 16]) -> Self {
        Self { secret }
    }

    /// The clock server cookies are stamped and checked with: Unix seconds, modulo 2^32.
    pub fn now() -> u32 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as u32)
    }

    /// The hash of a server cookie whose first 8 bytes are `head` (version, reserved, timestamp).
    fn hash(&self, client: &[u8; CLIENT_LEN], head: &[u8], ip: IpAddr) -> [u8; 8] {
        let mut hasher = SipHasher24::new_with_key(&self.secret);
        std::hash::Hasher::write(&mut hasher, client);
        std::hash::Hasher::write(&mut hasher, head);
        match ip.to_canonical() {
            IpAddr::V4(v4) => std::hash::Hasher::write(&mut hasher, &v4.octets()),
            IpAddr::V6(v6) => std::hash::Hasher::write(&mut hasher, &v6.octets()),
        }
        // SipHash's 64-bit result as the reference implementation writes it out: little-endian.
        std::hash::Hasher::finish(&hasher).to_le_bytes()
    }

    /// A fresh server cookie for `client` at `ip`, stamped `now`.
    fn server_cookie(&self, client: &[u8; CLIENT_LEN], ip: IpAddr, now: u32) -> [u8; SERVER_LEN] {
        let mut cookie = [0; SERVER_LEN];
        cookie[0] = VERSION;
        cookie[4..8].copy_from_slice(&now.to_be_bytes());
        let hash = self.hash(client, &cookie[..8], ip);
        cookie[8..].copy_from_slice(&hash);
        cookie
    }

    /// How old the server cookie `cookie` carries is, if it is one we made for `ip` and may
    /// still be taken at `now` (up to [`CLOCK_SKEW`] ahead counts as new).
    fn age(&self, cookie: &ClientCookie, ip: IpAddr, now: u32) -> Option<u32> {
        let server = cookie.server();
        if server.len() != SERVER_LEN || server[0] != VERSION {
            return None;
        }
        let stamped = u32::from_be_bytes(server[4..8].try_into().expect("four bytes"));
        // Serial arithmetic: a stamp a little ahead of our clock is a negative age.
        let age = now.wrapping_sub(stamped) as i32;
        if age > LIFETIME as i32 || age < -(CLOCK_SKEW as i32) {
            return None;
        }
        // The reserved bytes are hashed as they came (RFC 9018 §4.2): never rewritten.
        let hash = self.hash(cookie.client(), &server[..8], ip);
        bool::from(hash.ct_eq(&server[8..])).then_some(age.max(0) as u32)
    }

    /// Whether the query's cookie shows that it came from `ip`: a server cookie we made for
    /// that address, no more than an hour ago.
    pub fn proves(&self, cookie: &ClientCookie, ip: IpAddr, now: u32) -> bool {
        self.age(cookie, ip, now).is_some()
    }

    /// The COOKIE option data that answers `cookie` from `ip`: the client cookie, and the server
    /// cookie it came with while that is valid and less than half an hour old, else a fresh one.
    pub fn answer(&self, cookie: &ClientCookie, ip: IpAddr, now: u32) -> [u8; CLIENT_LEN + SERVER_LEN] {
        let mut data = [0; CLIENT_LEN + SERVER_LEN];
        data[..CLIENT_LEN].copy_from_slice(cookie.client());
        match self.age(cookie, ip, now) {
            Some(age) if age < RENEW_AFTER => data[CLIENT_LEN..].copy_from_slice(cookie.server()),
            _ => data[CLIENT_LEN..].copy_from_slice(&self.server_cookie(cookie.client(), ip, now)),
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn cookies(secret: &str) -> Cookies {
        Cookies::with_secret(hex(secret).try_into().unwrap())
    }

    fn cookie(s: &str) -> ClientCookie {
        ClientCookie::parse(&hex(s)).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// RFC 9018, Appendix A: the published exchanges, byte for byte.
    #[test]
    fn the_rfc_9018_test_vectors() {
        let first = cookies("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = ip("198.51.100.100");
        // A.1: a client cookie alone gets a server cookie.
        let asked = cookie("2464c4abcf10c957");
        assert!(!first.proves(&asked, client, 1559731985));
        let answer = first.answer(&asked, client, 1559731985);
        assert_eq!(answer[..], hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480"));
        // A.2: 40 minutes later it proves the client, and is renewed.
        let back = cookie("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        assert!(first.proves(&back, client, 1559734385));
        let renewed = first.answer(&back, client, 1559734385);
        assert_eq!(renewed[..], hex("2464c4abcf10c957010000005cf7a871d4a564a1442aca77"));
        // A.3: another client's cookie with reserved bytes set (hashed as they came), stamped
        // 1559727985: it proves the client within the hour; at 1559734700, past it, it is
        // replaced.
        let other = cookie("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
        assert!(first.proves(&other, ip("203.0.113.203"), 1559727985 + 60));
        assert!(
            !first.proves(&other, ip("203.0.113.204"), 1559727985 + 60),
            "another address"
        );
        assert!(!first.proves(&other, ip("203.0.113.203"), 1559734700), "expired");
        let renewed = first.answer(&other, ip("203.0.113.203"), 1559734700);
        assert_eq!(renewed[..], hex("fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e"));
        // A.4: an IPv6 client's cookie made under the old secret; the new one does not take it.
        let old = cookies("dd3bdf9344b678b185a6f5cb60fca715");
        let new = cookies("445536bcd2513298075a5d379663c962");
        let v6 = cookie("22681ab97d52c298010000005cf7c57926556bd0934c72f8");
        let client = ip("2001:db8:220:1:59de:d0f4:8769:82b8");
        assert!(old.proves(&v6, client, 0x5cf7c579));
        assert!(!new.proves(&v6, client, 0x5cf7c579));
    }

    #[test]
    fn a_server_cookie_proves_for_an_hour_and_is_renewed_after_half_of_it() {
        let cookies = Cookies::default();
        let client = ip("192.0.2.1");
        let now = 4_294_967_000; // near the wrap of the 32-bit clock
        let fresh = cookies.answer(&cookie("0102030405060708"), client, now);
        let back = ClientCookie::parse(&fresh).unwrap();
        for (at, proves) in [(now - 300, true), (now - 301, false), (now.wrapping_add(3600), true)] {
            assert_eq!(cookies.proves(&back, client, at), proves, "at {at}");
        }
        assert!(!cookies.proves(&back, client, now.wrapping_add(3601)));
        // Kept while young; renewed (a new stamp) once half an hour old.
        assert_eq!(cookies.answer(&back, client, now.wrapping_add(1799)), fresh);
        let renewed = cookies.answer(&back, client, now.wrapping_add(1800));
        assert_eq!(renewed[12..16], now.wrapping_add(1800).to_be_bytes());
        // Tampered with, or from another address: no proof, and a fresh cookie.
        let mut tampered = fresh;
        tampered[23] ^= 1;
        assert!(!cookies.proves(&ClientCookie::parse(&tampered).unwrap(), client, now));
        assert!(!cookies.proves(&back, ip("192.0.2.2"), now));
        // An IPv4 client on a dual-stack socket is the same client.
        assert!(cookies.proves(&back, ip("::ffff:192.0.2.1"), now));
    }

    #[test]
    fn lengths_other_than_rfc_7873_allows_are_malformed() {
        for len in 0..48 {
            let valid = len == 8 || (16..=40).contains(&len);
            assert_eq!(ClientCookie::parse(&vec![7; len]).is_ok(), valid, "{len} bytes");
        }
        // A server cookie of another length or version is no proof, and is answered afresh.
        let cookies = Cookies::default();
        let client = ip("192.0.2.1");
        for odd in [vec![1; 16], vec![2; 40]] {
            let odd = ClientCookie::parse(&odd).unwrap();
            assert!(!cookies.proves(&odd, client, 1000));
            assert_eq!(cookies.answer(&odd, client, 1000)[8], VERSION);
        }
    }
}
