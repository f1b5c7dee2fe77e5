//! Bounds-checked Avro binary reading (canonical encodings only) and writing.
//!
//! Every read checks the remaining length first; nothing indexes past the end and nothing
//! allocates more than the bytes present. The checks and messages mirror
//! `consentgate/kernel/reference.py` exactly.

use std::collections::HashMap;

/// Why a record cannot be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub detail: String,
    pub position: usize,
}

impl Malformed {
    pub fn new(detail: impl Into<String>, position: usize) -> Self {
        Malformed { detail: detail.into(), position }
    }

    /// The message the Python reference gives the `UndecodableRecord`.
    pub fn message(&self) -> String {
        format!("cannot decode as ActivityEvent: {} at byte {}", self.detail, self.position)
    }
}

pub type Read<T> = Result<T, Malformed>;

pub struct Reader<'a> {
    data: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        Reader { data, pos }
    }

    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// A zigzag varint long of at most 10 bytes, without redundant high bytes.
    pub fn long(&mut self) -> Read<i64> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = *self.data.get(start + i).ok_or_else(|| Malformed::new("truncated varint", start))?;
            if i == 9 && byte > 1 {
                return Err(Malformed::new("varint longer than 64 bits", start));
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(Malformed::new("overlong varint", start));
                }
                self.pos = start + i + 1;
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        unreachable!("the tenth byte ends the varint or is rejected")
    }

    pub fn raw(&mut self) -> Read<&'a [u8]> {
        let start = self.pos;
        let n = self.long()?;
        if n < 0 {
            return Err(Malformed::new(format!("negative length {n}"), start));
        }
        if n as u64 > self.remaining() as u64 {
            return Err(Malformed::new(format!("length {n} past the end"), start));
        }
        let n = n as usize;
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn string(&mut self) -> Read<&'a str> {
        let start = self.pos;
        let raw = self.raw()?;
        std::str::from_utf8(raw).map_err(|_| Malformed::new("invalid UTF-8", start))
    }

    pub fn double(&mut self) -> Read<f64> {
        if self.remaining() < 8 {
            return Err(Malformed::new("truncated double", self.pos));
        }
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.data[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(f64::from_le_bytes(bytes))
    }

    /// A map of strings; a repeated key keeps its first position and its last value (a Python dict).
    pub fn string_map(&mut self) -> Read<Vec<(&'a str, &'a str)>> {
        let mut out: Vec<(&'a str, &'a str)> = Vec::new();
        let mut index: HashMap<&'a str, usize> = HashMap::new();
        loop {
            let start = self.pos;
            let count = self.long()?;
            if count == 0 {
                return Ok(out);
            }
            let mut block_end: Option<u64> = None;
            if count < 0 {
                // a negative count is followed by the block's size in bytes
                let size_at = self.pos;
                let size = self.long()?;
                if size < 0 {
                    return Err(Malformed::new("negative map block size", size_at));
                }
                block_end = Some(self.pos as u64 + size as u64);
            }
            let count = count.unsigned_abs();
            // Every entry holds at least two length bytes: refuse a count the bytes cannot hold
            // before looping over it.
            if u128::from(count) * 2 > self.remaining() as u128 {
                return Err(Malformed::new(format!("map block of {count} entries past the end"), start));
            }
            for _ in 0..count {
                let key = self.string()?;
                let value = self.string()?;
                match index.get(key) {
                    Some(&at) => out[at].1 = value,
                    None => {
                        index.insert(key, out.len());
                        out.push((key, value));
                    }
                }
            }
            if block_end.is_some_and(|end| end != self.pos as u64) {
                return Err(Malformed::new("map block size does not match its entries", start));
            }
        }
    }
}

pub fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7F {
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub fn put_double(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long_of(bytes: &[u8]) -> Read<i64> {
        Reader::new(bytes, 0).long()
    }

    #[test]
    fn canonical_longs_round_trip() {
        for n in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_long(&mut out, n);
            assert_eq!(long_of(&out), Ok(n));
        }
    }

    #[test]
    fn overlong_and_oversized_varints_are_refused() {
        assert_eq!(long_of(&[0x80, 0x00]).unwrap_err().detail, "overlong varint");
        assert_eq!(long_of(&[0xFF; 10]).unwrap_err().detail, "varint longer than 64 bits");
        let mut ten = vec![0xFF; 9];
        ten.push(0x02);
        assert_eq!(long_of(&ten).unwrap_err().detail, "varint longer than 64 bits");
        assert_eq!(long_of(&[0x80]).unwrap_err().detail, "truncated varint");
    }

    #[test]
    fn lengths_past_the_end_are_refused() {
        let err = Reader::new(&[0x06, b'a'], 0).string().unwrap_err();
        assert_eq!(err, Malformed::new("length 3 past the end", 0));
        let err = Reader::new(&[0x01], 0).string().unwrap_err();
        assert_eq!(err, Malformed::new("negative length -1", 0));
        let err = Reader::new(&[0x02, 0xFF], 0).string().unwrap_err();
        assert_eq!(err, Malformed::new("invalid UTF-8", 0));
    }
}
