//! Berkeley DB hash databases, as rpm up to 4.15 keeps `Packages` (RHEL/CentOS 7 and 8,
//! Amazon Linux 2, older Fedora and SUSE): a metadata page, then pages of key/value pairs, each
//! value either on the page (`H_KEYDATA`) or in a chain of overflow pages (`H_OFFPAGE`).
//!
//! Every hash page of the file is read, instead of walking the buckets from the metadata,
//! because a page that is no longer in use is retyped as free by Berkeley DB, so the scan finds
//! the same pairs; it also survives damaged bucket metadata. The file is in the byte order of
//! the host that wrote it, which the metadata magic shows. Encrypted databases are refused.

/// Magic of a hash database's metadata page.
const HASH_MAGIC: u32 = 0x0006_1561;
/// Magic of a btree database (an rpm index such as `Name`, not `Packages`).
const BTREE_MAGIC: u32 = 0x0005_3162;

const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASH: u8 = 13;

const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;

/// Size of the generic page header; the item index follows it.
const PAGE_HEADER_LEN: usize = 26;
/// With `DBMETA_CHKSUM` pages carry 2 alignment bytes and a 4-byte checksum after the header.
const CHKSUM_EXTRA: usize = 6;
const DBMETA_CHKSUM: u8 = 0x01;

/// Whether the file starts with a Berkeley DB metadata page (hash or btree, either byte order).
pub fn is_bdb(data: &[u8]) -> bool {
    [HASH_MAGIC, BTREE_MAGIC]
        .iter()
        .any(|&m| magic(data) == Some(m) || magic(data) == Some(m.swap_bytes()))
}

fn magic(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(12..16)?.try_into().ok()?))
}

/// One record of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    /// The key read as a `u32` in the file's byte order, when it is 4 bytes long (rpm's keys
    /// are header instance numbers, written in the byte order of the host).
    pub key_number: Option<u32>,
    pub value: Vec<u8>,
}

/// Reads every key/value pair of a hash database. A pair whose value cannot be followed (a
/// broken overflow chain) is left out; an unreadable metadata page is an error.
pub fn records(data: &[u8]) -> Result<Vec<Record>, String> {
    let db = Db::open(data)?;
    // An overflow page belongs to one chain only; refusing to read it twice keeps a crafted
    // file from making many items share one long chain and so multiplying the memory used.
    let mut used = vec![false; db.page_count];
    // Real items never add up to more than the file; item offsets crafted to overlap would.
    let mut budget = data.len();
    let mut out = Vec::new();
    for pgno in 1..db.page_count {
        let Some(page) = db.page(pgno) else { break };
        if page[25] != P_HASH && page[25] != P_HASH_UNSORTED {
            continue;
        }
        let entries = db.u16_at(page, 20).unwrap_or(0) as usize;
        // Items come in pairs: key at even index, value at odd.
        for pair in 0..entries / 2 {
            let key = db.item(page, pair * 2);
            let value = db.item(page, pair * 2 + 1);
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            let key = db.resolve(key, &mut used);
            let value = db.resolve(value, &mut used);
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            budget = budget
                .checked_sub(key.len() + value.len())
                .ok_or("hash items overlap")?;
            let key_number = db.u32_at(&key, 0).filter(|_| key.len() == 4);
            out.push(Record {
                key,
                key_number,
                value,
            });
        }
    }
    Ok(out)
}

struct Db<'a> {
    data: &'a [u8],
    big_endian: bool,
    page_size: usize,
    /// Pages wholly inside the file (a truncated last page is not read).
    page_count: usize,
    /// Offset of the item index (and of the data on overflow pages).
    overhead: usize,
}

impl<'a> Db<'a> {
    fn open(data: &'a [u8]) -> Result<Db<'a>, String> {
        let big_endian = match magic(data) {
            Some(HASH_MAGIC) => false,
            Some(m) if m == HASH_MAGIC.swap_bytes() => true,
            Some(BTREE_MAGIC) => return Err("Berkeley DB btree, not a hash database".into()),
            Some(m) if m == BTREE_MAGIC.swap_bytes() => {
                return Err("Berkeley DB btree, not a hash database".into());
            }
            _ => return Err("not a Berkeley DB hash database".into()),
        };
        let mut db = Db {
            data,
            big_endian,
            page_size: 0,
            page_count: 0,
            overhead: PAGE_HEADER_LEN,
        };
        let page_size = db.u32_at(data, 20).ok_or("truncated metadata page")? as usize;
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("invalid page size {page_size}"));
        }
        // encrypt_alg at 24, metaflags at 26.
        if data.get(24).copied().unwrap_or(0) != 0 {
            return Err("encrypted Berkeley DB database".into());
        }
        if data.get(26).copied().unwrap_or(0) & DBMETA_CHKSUM != 0 {
            db.overhead += CHKSUM_EXTRA;
        }
        db.page_size = page_size;
        db.page_count = data.len() / page_size;
        if db.page_count == 0 {
            return Err("truncated metadata page".into());
        }
        Ok(db)
    }

    fn page(&self, pgno: usize) -> Option<&'a [u8]> {
        if pgno >= self.page_count {
            return None;
        }
        let start = pgno * self.page_size;
        self.data.get(start..start + self.page_size)
    }

    fn u16_at(&self, data: &[u8], offset: usize) -> Option<u16> {
        let bytes: [u8; 2] = data.get(offset..offset + 2)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(bytes)
        } else {
            u16::from_le_bytes(bytes)
        })
    }

    fn u32_at(&self, data: &[u8], offset: usize) -> Option<u32> {
        let bytes: [u8; 4] = data.get(offset..offset + 4)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        })
    }

    /// The bytes of item `index` of a hash page: from its offset to the previous item's offset
    /// (items are packed from the page's end downwards), type byte included.
    fn item(&self, page: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let slot = |i: usize| self.u16_at(page, self.overhead + i * 2).map(usize::from);
        let start = slot(index)?;
        let end = if index == 0 {
            self.page_size
        } else {
            slot(index - 1)?
        };
        page.get(start..end).filter(|item| !item.is_empty())
    }

    /// The key or value an item stands for: its bytes after the type, or its overflow chain.
    fn resolve(&self, item: &[u8], used: &mut [bool]) -> Option<Vec<u8>> {
        match item[0] {
            H_KEYDATA => Some(item[1..].to_vec()),
            H_OFFPAGE => {
                let pgno = self.u32_at(item, 4)? as usize;
                let total = self.u32_at(item, 8)? as usize;
                self.overflow(pgno, total, used)
            }
            // Duplicates are not used by rpm's Packages database.
            _ => None,
        }
    }

    /// Follows an overflow chain, checking every page and that it ends where the item's length
    /// says; a page already read (a loop, or a chain shared with another item) breaks it.
    fn overflow(&self, mut pgno: usize, total: usize, used: &mut [bool]) -> Option<Vec<u8>> {
        if total > self.data.len() {
            return None;
        }
        let mut out = Vec::with_capacity(total);
        loop {
            let page = self.page(pgno)?;
            if page[25] != P_OVERFLOW || std::mem::replace(used.get_mut(pgno)?, true) {
                return None;
            }
            // On overflow pages the "high free offset" field holds the data length.
            let len = usize::from(self.u16_at(page, 22)?);
            let chunk = page.get(self.overhead..self.overhead.checked_add(len)?)?;
            if out.len() + chunk.len() > total {
                return None;
            }
            out.extend_from_slice(chunk);
            let next = self.u32_at(page, 16)? as usize;
            if next == 0 {
                return (out.len() == total).then_some(out);
            }
            pgno = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 512;

    /// A little- or big-endian hash database with one on-page pair and one overflow pair.
    fn sample(big_endian: bool) -> Vec<u8> {
        let u16b = |n: u16| {
            if big_endian {
                n.to_be_bytes()
            } else {
                n.to_le_bytes()
            }
        };
        let u32b = |n: u32| {
            if big_endian {
                n.to_be_bytes()
            } else {
                n.to_le_bytes()
            }
        };
        let mut data = vec![0u8; PAGE * 4];
        data[12..16].copy_from_slice(&u32b(HASH_MAGIC));
        data[20..24].copy_from_slice(&u32b(PAGE as u32));
        data[25] = 8;

        // Page 1: hash page with items packed from the end.
        let mut offpage = vec![H_OFFPAGE, 0, 0, 0];
        offpage.extend_from_slice(&u32b(2)); // first overflow page
        offpage.extend_from_slice(&u32b(600)); // total length
        let key = |n: u32| [[H_KEYDATA].as_slice(), &u32b(n)].concat();
        let items: [&[u8]; 4] = [&key(1), b"\x01on-page", &key(2), &offpage];
        let page = &mut data[PAGE..2 * PAGE];
        page[25] = P_HASH;
        page[20..22].copy_from_slice(&u16b(4));
        let mut end = PAGE;
        for (i, item) in items.iter().enumerate() {
            let start = end - item.len();
            page[start..end].copy_from_slice(item);
            let at = PAGE_HEADER_LEN + i * 2;
            page[at..at + 2].copy_from_slice(&u16b(start as u16));
            end = start;
        }

        // Pages 2 and 3: the overflow chain, 400 + 200 bytes of 0xAA.
        for (pgno, len, next) in [(2usize, 400u16, 3u32), (3, 200, 0)] {
            let page = &mut data[pgno * PAGE..(pgno + 1) * PAGE];
            page[25] = P_OVERFLOW;
            page[16..20].copy_from_slice(&u32b(next));
            page[22..24].copy_from_slice(&u16b(len));
            page[PAGE_HEADER_LEN..PAGE_HEADER_LEN + len as usize].fill(0xaa);
        }
        data
    }

    #[test]
    fn reads_on_page_and_overflow_values_in_both_byte_orders() {
        for big_endian in [false, true] {
            let records = records(&sample(big_endian)).unwrap();
            assert_eq!(records.len(), 2, "big endian: {big_endian}");
            assert_eq!(records[0].key_number, Some(1), "big endian: {big_endian}");
            assert_eq!(records[0].value, b"on-page");
            assert_eq!(records[1].value, vec![0xaa; 600]);
        }
    }

    #[test]
    fn overflow_chains_are_read_once() {
        let mut data = sample(false);
        // A second pair whose value is the same chain as the first overflow value.
        let page = &mut data[PAGE..2 * PAGE];
        page[20..22].copy_from_slice(&6u16.to_le_bytes());
        let end = u16::from_le_bytes([page[PAGE_HEADER_LEN + 6], page[PAGE_HEADER_LEN + 7]]);
        let key_at = usize::from(end) - 5;
        page[key_at..key_at + 5].copy_from_slice(&[H_KEYDATA, 3, 0, 0, 0]);
        let value_at = key_at - 12;
        let value = page[usize::from(end)..usize::from(end) + 12].to_vec();
        page[value_at..key_at].copy_from_slice(&value);
        page[PAGE_HEADER_LEN + 8..PAGE_HEADER_LEN + 10]
            .copy_from_slice(&(key_at as u16).to_le_bytes());
        page[PAGE_HEADER_LEN + 10..PAGE_HEADER_LEN + 12]
            .copy_from_slice(&(value_at as u16).to_le_bytes());
        assert_eq!(records(&data).unwrap().len(), 2);
    }

    #[test]
    fn broken_overflow_chains_drop_the_pair() {
        let mut data = sample(false);
        // Chain points back to itself.
        data[3 * PAGE + 16..3 * PAGE + 20].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(records(&data).unwrap().len(), 1);
        let mut data = sample(false);
        // Chain ends early.
        data[2 * PAGE + 16..2 * PAGE + 20].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(records(&data).unwrap().len(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(records(b"").is_err());
        let mut data = sample(false);
        data[12..16].copy_from_slice(&BTREE_MAGIC.to_le_bytes());
        assert!(records(&data).unwrap_err().contains("btree"));
        let mut data = sample(false);
        data[24] = 1;
        assert!(records(&data).unwrap_err().contains("encrypted"));
        let mut data = sample(false);
        data[20..24].copy_from_slice(&1000u32.to_le_bytes());
        assert!(records(&data).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = records(&data);
        }

        #[test]
        fn corrupted_databases_never_panic(
            big_endian in any::<bool>(),
            flips in proptest::collection::vec((0usize..PAGE * 4, any::<u8>()), 1..32),
        ) {
            let mut data = sample(big_endian);
            for (at, byte) in flips {
                data[at] = byte;
            }
            let _ = records(&data);
        }
    }
}
