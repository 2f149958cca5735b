//! CIDR blocks (`10.0.0.0/8`, `::1/128`), for `tls.client_cert_header_peers`: the peers whose
//! client-certificate header is believed.

use std::net::IpAddr;

use serde::Deserialize;

/// One address block; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The block's first address (host bits cleared when parsed).
    net: IpAddr,
    /// Leading bits that must match.
    bits: u8,
}

impl Cidr {
    /// Whether `ip` lies in this block. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, what a
    /// dual-stack socket reports) is matched as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), self.bits, 32) == masked(u32::from(a).into(), self.bits, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), self.bits, 128) == masked(u128::from(a), self.bits, 128)
            }
            _ => false,
        }
    }
}

/// `addr` with all but its first `bits` of `width` cleared.
fn masked(addr: u128, bits: u8, width: u8) -> u128 {
    if bits == 0 {
        return 0;
    }
    let host = u32::from(width - bits);
    addr >> host << host
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address block like \"10.0.0.0/8\" or \"::1/128\"");
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => b.parse().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
        };
        if bits > width {
            return Err(bad());
        }
        let net = match net {
            IpAddr::V4(a) => IpAddr::V4((masked(u32::from(a).into(), bits, 32) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6(masked(u128::from(a), bits, 128).into()),
        };
        Ok(Cidr { net, bits })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1/32").contains(ip("127.0.0.2")));
        assert!(c("10.1.2.3/8").contains(ip("10.9.9.9")), "host bits are cleared");
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")));
        assert!(c("::1/128").contains(ip("::1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")), "IPv4-mapped peers match as IPv4");
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for bad in ["", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/+8", "host/8", "10.0.0/8", "10.0.0.0/8/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
