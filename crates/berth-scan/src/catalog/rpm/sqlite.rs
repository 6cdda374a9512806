//! A read-only reader of just enough of the SQLite file format to list one rowid table:
//! the 100-byte file header, table b-tree pages (interior and leaf), overflow chains, and the
//! record format. rpm 4.16+ keeps its package headers in such a table
//! (`Packages(hnum INTEGER PRIMARY KEY, blob BLOB)`).
//!
//! It reads the main database file only: changes still in a write-ahead log (`-wal` file) are
//! not seen, as rpm checkpoints the log when it closes the database. Every page is read at most
//! once (a page linked twice is damage), which bounds the work and memory by the file's size.

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const FILE_HEADER_LEN: usize = 100;

const INTERIOR_TABLE: u8 = 5;
const LEAF_TABLE: u8 = 13;

/// Whether the file starts with the SQLite 3 magic.
pub fn is_sqlite(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

/// The values of column `column` of table `table` that are blobs, with their rowids, in rowid
/// order. A row whose payload cannot be read (a broken overflow chain) is left out; a broken
/// tree is an error, since a whole subtree of rows would be lost without notice.
pub fn table_blobs(data: &[u8], table: &str, column: usize) -> Result<Vec<(i64, Vec<u8>)>, String> {
    let mut db = Db::open(data)?;
    let mut root = None;
    db.walk_table(1, |_, payload| {
        let text = |i| match record_column(payload, i) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        };
        if root.is_none()
            && text(0) == Some(b"table".as_slice())
            && text(1).is_some_and(|name| name.eq_ignore_ascii_case(table.as_bytes()))
            && let Some(Value::Int(page)) = record_column(payload, 3)
        {
            root = Some(page);
        }
    })?;
    let root = root.ok_or_else(|| format!("no table {table}"))?;
    let root = u32::try_from(root).map_err(|_| format!("table {table} has root page {root}"))?;
    let mut rows = Vec::new();
    db.walk_table(root, |rowid, payload| {
        if let Some(Value::Blob(blob)) = record_column(payload, column) {
            rows.push((rowid, blob.to_vec()));
        }
    })?;
    Ok(rows)
}

struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    /// The page size less the bytes reserved at the end of each page (for extensions).
    usable: usize,
    page_count: usize,
    visited: Vec<bool>,
    /// Payload bytes still allowed: real cells never hold more than the file, so cells that
    /// overlap (a crafted file) cannot multiply the memory used; cells past it are left out.
    budget: usize,
}

impl<'a> Db<'a> {
    fn open(data: &'a [u8]) -> Result<Db<'a>, String> {
        if !is_sqlite(data) || data.len() < FILE_HEADER_LEN {
            return Err("not an SQLite 3 database".into());
        }
        let page_size = match u16::from_be_bytes([data[16], data[17]]) {
            1 => 65536,
            n => usize::from(n),
        };
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("invalid page size {page_size}"));
        }
        let usable = page_size - usize::from(data[20]);
        // The format requires at least 480 usable bytes; the overflow arithmetic relies on it.
        if usable < 480 {
            return Err(format!(
                "{usable} usable bytes per page is below the minimum"
            ));
        }
        let page_count = data.len() / page_size;
        Ok(Db {
            data,
            page_size,
            usable,
            page_count,
            visited: vec![false; page_count + 1],
            budget: data.len(),
        })
    }

    /// Page `pgno` (numbered from 1), marking it read; `None` if outside the file or read before.
    fn take_page(&mut self, pgno: u32) -> Option<&'a [u8]> {
        let pgno = pgno as usize;
        if pgno == 0 || pgno > self.page_count || std::mem::replace(&mut self.visited[pgno], true) {
            return None;
        }
        let start = (pgno - 1) * self.page_size;
        self.data.get(start..start + self.page_size)
    }

    /// Calls `row` with the rowid and payload of every cell of a table b-tree, in rowid order.
    fn walk_table(&mut self, root: u32, mut row: impl FnMut(i64, &[u8])) -> Result<(), String> {
        let mut stack = vec![root];
        while let Some(pgno) = stack.pop() {
            let page = self
                .take_page(pgno)
                .ok_or_else(|| format!("page {pgno} is outside the file or linked twice"))?;
            // Page 1 holds the file header before its b-tree header.
            let header = if pgno == 1 { FILE_HEADER_LEN } else { 0 };
            let kind = page[header];
            let cells = usize::from(be_u16(page, header + 3).ok_or("truncated page")?);
            match kind {
                LEAF_TABLE => {
                    for i in 0..cells {
                        let cell = usize::from(
                            be_u16(page, header + 8 + i * 2).ok_or("truncated cell index")?,
                        );
                        if let Some((rowid, payload)) = self.leaf_cell(page, cell) {
                            row(rowid, &payload);
                        }
                    }
                }
                INTERIOR_TABLE => {
                    // Children are visited left to right: the right-most pointer is pushed
                    // first so that it is popped last.
                    stack.push(be_u32(page, header + 8).ok_or("truncated page")?);
                    for i in (0..cells).rev() {
                        let cell = usize::from(
                            be_u16(page, header + 12 + i * 2).ok_or("truncated cell index")?,
                        );
                        stack.push(be_u32(page, cell).ok_or("cell outside its page")?);
                    }
                }
                other => return Err(format!("page {pgno} has type {other}, not a table page")),
            }
        }
        Ok(())
    }

    /// A table leaf cell's rowid and whole payload, gathered from its overflow pages if needed.
    fn leaf_cell(&mut self, page: &[u8], cell: usize) -> Option<(i64, Vec<u8>)> {
        let (payload_len, n) = varint(page, cell)?;
        let (rowid, m) = varint(page, cell + n)?;
        let start = cell + n + m;
        let total = usize::try_from(payload_len).ok()?;
        if total > self.budget {
            return None;
        }
        let local = self.local_payload_len(total);
        let mut payload = Vec::with_capacity(total);
        payload.extend_from_slice(page.get(start..start.checked_add(local)?)?);
        let mut next = be_u32(page, start + local);
        while payload.len() < total {
            let overflow = self.take_page(next?)?;
            // Each overflow page: the next page's number, then usable-4 bytes of payload.
            let chunk = (total - payload.len()).min(self.usable - 4);
            payload.extend_from_slice(overflow.get(4..4 + chunk)?);
            next = be_u32(overflow, 0);
        }
        self.budget -= total;
        // The rowid is a signed 64-bit integer stored as its two's complement.
        Some((rowid as i64, payload))
    }

    /// How many payload bytes a table leaf cell keeps on its own page (the rest overflows).
    fn local_payload_len(&self, total: usize) -> usize {
        let max_local = self.usable - 35;
        if total <= max_local {
            return total;
        }
        let min_local = (self.usable - 12) * 32 / 255 - 23;
        let local = min_local + (total - min_local) % (self.usable - 4);
        if local <= max_local { local } else { min_local }
    }
}

/// One column value of a record, as far as this reader needs to tell them apart.
#[derive(Debug, PartialEq, Eq)]
enum Value<'a> {
    Null,
    Int(i64),
    Float,
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Column `column` of a record: a header (its own length, then one serial type per column) and
/// the values in column order. A column past the record's end is NULL, as in SQLite.
fn record_column(payload: &[u8], column: usize) -> Option<Value<'_>> {
    let (header_len, n) = varint(payload, 0)?;
    let header_len = usize::try_from(header_len).ok()?;
    if header_len > payload.len() {
        return None;
    }
    let mut pos = n;
    let mut body = header_len;
    for i in 0..=column {
        if pos >= header_len {
            return Some(Value::Null);
        }
        let (serial, n) = varint(&payload[..header_len], pos)?;
        pos += n;
        let len = serial_len(serial)?;
        let bytes = payload.get(body..body.checked_add(len)?)?;
        body += len;
        if i == column {
            return Some(match serial {
                0 => Value::Null,
                1..=6 => Value::Int(be_int(bytes)),
                7 => Value::Float,
                8 => Value::Int(0),
                9 => Value::Int(1),
                s if s % 2 == 0 => Value::Blob(bytes),
                _ => Value::Text(bytes),
            });
        }
    }
    None
}

/// The length in bytes of a value of the given serial type; `None` for the reserved types.
fn serial_len(serial: u64) -> Option<usize> {
    Some(match serial {
        0 | 8 | 9 => 0,
        1..=4 => serial as usize,
        5 => 6,
        6 | 7 => 8,
        10 | 11 => return None,
        s => usize::try_from((s - 12) / 2).ok()?,
    })
}

/// A big-endian two's-complement integer of 1 to 8 bytes.
fn be_int(bytes: &[u8]) -> i64 {
    let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut full = [fill; 8];
    full[8 - bytes.len()..].copy_from_slice(bytes);
    i64::from_be_bytes(full)
}

/// SQLite's variable-length integer: up to 8 bytes of 7 bits (high bit set: more follows),
/// then a ninth byte of 8 bits. Returns the value and the bytes read.
fn varint(data: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *data.get(pos.checked_add(i)?)?;
        if i == 8 {
            return Some(((value << 8) | u64::from(byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn be_u16(data: &[u8], offset: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        data.get(offset..offset.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn be_u32(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        data.get(offset..offset.checked_add(4)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 512;

    fn put_varint(out: &mut Vec<u8>, mut n: u64) {
        assert!(n < 1 << 56, "test varints stay below 8 bytes");
        let mut bytes = vec![(n & 0x7f) as u8];
        n >>= 7;
        while n > 0 {
            bytes.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        bytes.reverse();
        out.extend_from_slice(&bytes);
    }

    /// A record of the given (serial type, bytes) columns.
    fn record(columns: &[(u64, &[u8])]) -> Vec<u8> {
        let mut types = Vec::new();
        for &(serial, _) in columns {
            put_varint(&mut types, serial);
        }
        // Header lengths below 127 take one byte.
        let mut out = vec![(types.len() + 1) as u8];
        out.extend_from_slice(&types);
        for (_, bytes) in columns {
            out.extend_from_slice(bytes);
        }
        out
    }

    fn text(s: &str) -> (u64, &[u8]) {
        (13 + 2 * s.len() as u64, s.as_bytes())
    }

    /// Writes a table leaf page holding the given (rowid, payload) cells, payloads local.
    fn leaf(page: &mut [u8], header: usize, cells: &[(u64, Vec<u8>)]) {
        page[header] = LEAF_TABLE;
        page[header + 3..header + 5].copy_from_slice(&(cells.len() as u16).to_be_bytes());
        let mut end = page.len();
        for (i, (rowid, payload)) in cells.iter().enumerate() {
            let mut cell = Vec::new();
            put_varint(&mut cell, payload.len() as u64);
            put_varint(&mut cell, *rowid);
            cell.extend_from_slice(payload);
            let start = end - cell.len();
            page[start..end].copy_from_slice(&cell);
            let at = header + 8 + i * 2;
            page[at..at + 2].copy_from_slice(&(start as u16).to_be_bytes());
            end = start;
        }
    }

    /// Page 1: schema naming `Packages` at root page 2, an interior page over leaves 3 and 4.
    /// Row 2's blob (700 bytes) overflows into page 5.
    fn sample() -> Vec<u8> {
        let mut data = vec![0u8; PAGE * 5];
        data[..16].copy_from_slice(MAGIC);
        data[16..18].copy_from_slice(&(PAGE as u16).to_be_bytes());
        let schema = record(&[
            text("table"),
            text("Packages"),
            text("Packages"),
            (1, &[2]),
            text("CREATE TABLE ..."),
        ]);
        leaf(&mut data[..PAGE], FILE_HEADER_LEN, &[(1, schema)]);

        let root = &mut data[PAGE..2 * PAGE];
        root[0] = INTERIOR_TABLE;
        root[3..5].copy_from_slice(&1u16.to_be_bytes());
        root[8..12].copy_from_slice(&4u32.to_be_bytes());
        root[12..14].copy_from_slice(&500u16.to_be_bytes());
        root[500..504].copy_from_slice(&3u32.to_be_bytes());
        root[504] = 1;

        leaf(
            &mut data[2 * PAGE..3 * PAGE],
            0,
            &[(1, record(&[(0, b""), (12 + 2 * 3, b"one")]))],
        );

        let big = vec![0xbb; 700];
        let mut payload = record(&[(0, b""), (12 + 2 * 700, &big)]);
        let total = payload.len();
        let local = Db::open(&data).unwrap().local_payload_len(total);
        let rest = payload.split_off(local);
        let page = &mut data[3 * PAGE..4 * PAGE];
        page[0] = LEAF_TABLE;
        page[3..5].copy_from_slice(&1u16.to_be_bytes());
        let mut cell = Vec::new();
        put_varint(&mut cell, total as u64);
        put_varint(&mut cell, 2);
        cell.extend_from_slice(&payload);
        cell.extend_from_slice(&5u32.to_be_bytes());
        let start = PAGE - cell.len();
        page[start..].copy_from_slice(&cell);
        page[8..10].copy_from_slice(&(start as u16).to_be_bytes());
        data[4 * PAGE + 4..4 * PAGE + 4 + rest.len()].copy_from_slice(&rest);
        data
    }

    #[test]
    fn reads_rows_across_interior_leaf_and_overflow_pages() {
        let rows = table_blobs(&sample(), "packages", 1).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (1, b"one".to_vec()));
        assert_eq!(rows[1], (2, vec![0xbb; 700]));
    }

    #[test]
    fn a_page_linked_twice_is_an_error() {
        let mut data = sample();
        // Interior page's right-most child becomes the same leaf as its left child.
        data[PAGE + 8..PAGE + 12].copy_from_slice(&3u32.to_be_bytes());
        assert!(
            table_blobs(&data, "Packages", 1)
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn a_broken_overflow_chain_drops_the_row() {
        let mut data = sample();
        data.truncate(4 * PAGE);
        assert_eq!(table_blobs(&data, "Packages", 1).unwrap().len(), 1);
    }

    #[test]
    fn missing_table_or_bad_header_is_an_error() {
        assert!(
            table_blobs(&sample(), "Other", 1)
                .unwrap_err()
                .contains("no table")
        );
        assert!(table_blobs(b"SQLite format 3\0", "Packages", 1).is_err());
        let mut data = sample();
        data[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert!(table_blobs(&data, "Packages", 1).is_err());
    }

    #[test]
    fn varints_and_integers() {
        assert_eq!(varint(&[0x7f], 0), Some((0x7f, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((0x80, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x80], 0), None);
        assert_eq!(be_int(&[0xff, 0xfe]), -2);
        assert_eq!(be_int(&[0x01, 0x00, 0x00]), 0x10000);
        assert_eq!(
            record_column(&record(&[(1, &[7])]), 3),
            Some(Value::Null),
            "columns past the record are NULL"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..4096),
            with_header in any::<bool>(),
        ) {
            if with_header && data.len() >= FILE_HEADER_LEN {
                data[..16].copy_from_slice(MAGIC);
                data[16..18].copy_from_slice(&(PAGE as u16).to_be_bytes());
                data[20] = 0;
            }
            let _ = table_blobs(&data, "Packages", 1);
        }

        #[test]
        fn corrupted_databases_never_panic(
            flips in proptest::collection::vec((0usize..PAGE * 5, any::<u8>()), 1..32),
        ) {
            let mut data = sample();
            for (at, byte) in flips {
                data[at] = byte;
            }
            let _ = table_blobs(&data, "Packages", 1);
        }

        #[test]
        fn arbitrary_records_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            column in 0usize..8,
        ) {
            let _ = record_column(&payload, column);
        }
    }
}
