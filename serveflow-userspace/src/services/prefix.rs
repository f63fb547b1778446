//! Longest-prefix match over IPv4 and IPv6 prefixes: one hash map per prefix length, probed
//! from the longest length present down. At most 33 (IPv4) or 129 (IPv6) probes, usually a
//! handful, with no tree to walk.

use std::{collections::HashMap, net::IpAddr};

/// The table.
#[derive(Debug, Default)]
pub struct PrefixTable {
    /// (prefix length, masked address as u128 with IPv4 mapped) -> service, longest first.
    by_len: Vec<(u8, HashMap<u128, usize>)>,
}

fn to_u128(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) | (0xffff << 32), 96),
        IpAddr::V6(v6) => (u128::from(v6), 0),
    }
}

fn mask(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    }
}

impl PrefixTable {
    /// Adds `a.b.c.d/len` or `x::/len` for `service`.
    pub fn insert(&mut self, prefix: &str, service: usize) -> Result<(), String> {
        let (addr, len) = prefix
            .split_once('/')
            .ok_or_else(|| "expected ADDRESS/LENGTH".to_owned())?;
        let addr: IpAddr = addr.trim().parse().map_err(|e| format!("{e}"))?;
        let len: u8 = len.trim().parse().map_err(|e| format!("length: {e}"))?;
        let (value, offset) = to_u128(addr);
        let max = 128 - offset;
        if len > max {
            return Err(format!(
                "length {len} is longer than the address ({max} bits)"
            ));
        }
        let bits = offset + len;
        let key = value & mask(bits);
        match self.by_len.iter_mut().find(|(l, _)| *l == bits) {
            Some((_, map)) => {
                map.insert(key, service);
            }
            None => {
                self.by_len.push((bits, HashMap::from([(key, service)])));
                self.by_len.sort_by_key(|(l, _)| std::cmp::Reverse(*l));
            }
        }
        Ok(())
    }

    /// The service of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<usize> {
        let (value, _) = to_u128(addr);
        self.by_len
            .iter()
            .find_map(|(bits, map)| map.get(&(value & mask(*bits))).copied())
    }
}
