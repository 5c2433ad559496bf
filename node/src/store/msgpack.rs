//! Walking MessagePack without decoding it: where each value of a map
//! starts and ends, so a snapshot's schedules can be cut into parts and the
//! parts decoded on several threads (`snapshot::decode`).
//!
//! Every read is bounds-checked and answers `None` on bytes that are not
//! MessagePack: the caller then decodes the whole in one piece, which
//! reports the error.

use rmp::Marker;

/// A position in a MessagePack buffer.
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes from `start` (a [`Self::pos`]) to here.
    pub fn slice_from(&self, start: usize) -> &'a [u8] {
        &self.buf[start..self.pos]
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A big-endian length of `n` bytes.
    fn len(&mut self, n: usize) -> Option<usize> {
        let b = self.take(n)?;
        Some(b.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    }

    /// The number of pairs of the map that starts here.
    pub fn map_len(&mut self) -> Option<usize> {
        match Marker::from_u8(self.byte()?) {
            Marker::FixMap(n) => Some(usize::from(n)),
            Marker::Map16 => self.len(2),
            Marker::Map32 => self.len(4),
            _ => None,
        }
    }

    /// The string that starts here.
    pub fn str(&mut self) -> Option<&'a str> {
        let n = match Marker::from_u8(self.byte()?) {
            Marker::FixStr(n) => usize::from(n),
            Marker::Str8 => self.len(1)?,
            Marker::Str16 => self.len(2)?,
            Marker::Str32 => self.len(4)?,
            _ => return None,
        };
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// The bytes of the value that starts here, moving past it.
    pub fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        self.skip()?;
        Some(&self.buf[start..self.pos])
    }

    /// Moves past one value, however deeply nested (counted, not
    /// recursed: a crafted file cannot overflow the stack).
    pub fn skip(&mut self) -> Option<()> {
        let mut values: usize = 1;
        while values > 0 {
            values -= 1;
            let (bytes, inner) = match Marker::from_u8(self.byte()?) {
                Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null => (0, 0),
                Marker::True | Marker::False => (0, 0),
                Marker::U8 | Marker::I8 => (1, 0),
                Marker::U16 | Marker::I16 => (2, 0),
                Marker::U32 | Marker::I32 | Marker::F32 => (4, 0),
                Marker::U64 | Marker::I64 | Marker::F64 => (8, 0),
                Marker::FixStr(n) => (usize::from(n), 0),
                Marker::Str8 | Marker::Bin8 => (self.len(1)?, 0),
                Marker::Str16 | Marker::Bin16 => (self.len(2)?, 0),
                Marker::Str32 | Marker::Bin32 => (self.len(4)?, 0),
                Marker::FixArray(n) => (0, usize::from(n)),
                Marker::Array16 => (0, self.len(2)?),
                Marker::Array32 => (0, self.len(4)?),
                Marker::FixMap(n) => (0, 2 * usize::from(n)),
                Marker::Map16 => (0, 2 * self.len(2)?),
                Marker::Map32 => (0, 2 * self.len(4)?),
                // An extension: its type byte, then its data.
                Marker::FixExt1 => (2, 0),
                Marker::FixExt2 => (3, 0),
                Marker::FixExt4 => (5, 0),
                Marker::FixExt8 => (9, 0),
                Marker::FixExt16 => (17, 0),
                Marker::Ext8 => (self.len(1)? + 1, 0),
                Marker::Ext16 => (self.len(2)? + 1, 0),
                Marker::Ext32 => (self.len(4)? + 1, 0),
                Marker::Reserved => return None,
            };
            self.take(bytes)?;
            values = values.checked_add(inner)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_every_kind_of_value_and_refuses_what_is_cut_short() {
        #[derive(serde::Serialize)]
        struct All {
            small: u8,
            big: u64,
            neg: i64,
            float: f64,
            text: String,
            long_text: String,
            bytes: serde_bytes_like::Bytes,
            list: Vec<Option<u32>>,
            map: std::collections::BTreeMap<String, Vec<i16>>,
            unit: (),
        }
        mod serde_bytes_like {
            pub struct Bytes(pub Vec<u8>);
            impl serde::Serialize for Bytes {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.serialize_bytes(&self.0)
                }
            }
        }
        let all = All {
            small: 7,
            big: u64::MAX,
            neg: -70_000,
            float: 1.5,
            text: "short".into(),
            long_text: "x".repeat(70_000),
            bytes: serde_bytes_like::Bytes(vec![1; 300]),
            list: vec![Some(1), None, Some(100_000)],
            map: (0..20).map(|i| (format!("k{i}"), vec![i, -i])).collect(),
            unit: (),
        };
        let one = rmp_serde::to_vec_named(&all).unwrap();
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let mut c = Cursor::new(&two);
        assert_eq!(c.value(), Some(&one[..]));
        assert_eq!(c.value(), Some(&one[..]));
        assert_eq!(c.pos(), two.len());
        assert_eq!(c.value(), None, "nothing is left");
        for cut in [1, one.len() / 2, one.len() - 1] {
            assert_eq!(Cursor::new(&one[..cut]).value(), None, "cut at {cut}");
        }
        let mut c = Cursor::new(&one);
        assert_eq!(c.map_len(), Some(10));
        assert_eq!(c.str(), Some("small"));
        // A map claiming more pairs than the bytes hold is refused, not
        // trusted for an allocation.
        assert_eq!(Cursor::new(&[0xdf, 0xff, 0xff, 0xff, 0xff]).value(), None);
    }
}
