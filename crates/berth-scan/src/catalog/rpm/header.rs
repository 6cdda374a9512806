//! The RPM header blob as the package databases store it: no lead and no 8-byte header magic,
//! just `il` (index entry count) and `dl` (data length) as big-endian `u32`, `il` index entries
//! of 16 bytes (tag, type, offset into the data store, count), then the `dl`-byte data store.
//!
//! Only the tags a package inventory needs are read. Every offset and count is checked against
//! the blob before it is used; a tag whose value does not fit or has an unexpected type is
//! treated as absent, since one bad tag must not hide the package it describes.

const TAG_SIGMD5: u32 = 261;
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_SUMMARY: u32 = 1004;
const TAG_SIZE: u32 = 1009;
const TAG_VENDOR: u32 = 1011;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TAG_LONGSIZE: u32 = 5009;

const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_BIN: u32 = 7;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

const INDEX_ENTRY_LEN: usize = 16;

/// The fields of one installed package's header that the inventory uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: Option<String>,
    pub epoch: Option<u32>,
    pub version: Option<String>,
    pub release: Option<String>,
    pub arch: Option<String>,
    /// The source RPM's file name, e.g. `util-linux-2.32.1-42.el8_8.src.rpm`.
    pub source_rpm: Option<String>,
    pub license: Option<String>,
    pub vendor: Option<String>,
    /// The first (untranslated) summary.
    pub summary: Option<String>,
    /// Installed size in bytes (`LONGSIZE` when the header has it, else `SIZE`).
    pub size: Option<u64>,
    /// The MD5 digest of header and payload, lower-case hex.
    pub sigmd5: Option<String>,
}

/// Reads the inventory's tags from one header blob.
pub fn parse_header(blob: &[u8]) -> Result<RpmHeader, String> {
    let il = be_u32(blob, 0).ok_or("header shorter than 8 bytes")? as usize;
    let dl = be_u32(blob, 4).ok_or("header shorter than 8 bytes")? as usize;
    let store_start = il
        .checked_mul(INDEX_ENTRY_LEN)
        .and_then(|n| n.checked_add(8))
        .filter(|&n| n <= blob.len())
        .ok_or_else(|| format!("header index of {il} entries overruns the blob"))?;
    let store = store_start
        .checked_add(dl)
        .and_then(|end| blob.get(store_start..end))
        .ok_or_else(|| format!("header data store of {dl} bytes overruns the blob"))?;

    let mut header = RpmHeader::default();
    let mut size = None;
    let mut long_size = None;
    for entry in blob[8..store_start].chunks_exact(INDEX_ENTRY_LEN) {
        let field = |i: usize| be_u32(entry, i * 4).expect("index entries are 16 bytes");
        let (tag, ty, offset, count) = (field(0), field(1), field(2) as usize, field(3));
        // The first entry of a stored header is its region tag (HEADERIMMUTABLE), whose value
        // is a trailer this reader does not need; only the tags below are looked at.
        let value = Value {
            store,
            ty,
            offset,
            count,
        };
        match tag {
            TAG_NAME => header.name = header.name.or_else(|| value.string()),
            TAG_VERSION => header.version = header.version.or_else(|| value.string()),
            TAG_RELEASE => header.release = header.release.or_else(|| value.string()),
            TAG_EPOCH => header.epoch = header.epoch.or_else(|| value.int32()),
            TAG_ARCH => header.arch = header.arch.or_else(|| value.string()),
            TAG_SOURCERPM => header.source_rpm = header.source_rpm.or_else(|| value.string()),
            TAG_LICENSE => header.license = header.license.or_else(|| value.string()),
            TAG_VENDOR => header.vendor = header.vendor.or_else(|| value.string()),
            TAG_SUMMARY => header.summary = header.summary.or_else(|| value.string()),
            TAG_SIZE => size = size.or_else(|| value.int32().map(u64::from)),
            TAG_LONGSIZE => long_size = long_size.or_else(|| value.int64()),
            TAG_SIGMD5 => header.sigmd5 = header.sigmd5.or_else(|| value.hex()),
            _ => {}
        }
    }
    header.size = long_size.or(size);
    Ok(header)
}

/// One index entry's value, read lazily from the data store.
struct Value<'a> {
    store: &'a [u8],
    ty: u32,
    offset: usize,
    count: u32,
}

impl Value<'_> {
    /// A string, or the first element of a string array or i18n string (the untranslated one).
    fn string(&self) -> Option<String> {
        if !matches!(self.ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) || self.count == 0
        {
            return None;
        }
        let rest = self.store.get(self.offset..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn int32(&self) -> Option<u32> {
        if self.ty != TYPE_INT32 || self.count == 0 {
            return None;
        }
        be_u32(self.store, self.offset)
    }

    fn int64(&self) -> Option<u64> {
        if self.ty != TYPE_INT64 || self.count == 0 {
            return None;
        }
        let bytes = self.store.get(self.offset..self.offset.checked_add(8)?)?;
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }

    fn hex(&self) -> Option<String> {
        if self.ty != TYPE_BIN || self.count == 0 {
            return None;
        }
        let end = self.offset.checked_add(self.count as usize)?;
        let bytes = self.store.get(self.offset..end)?;
        Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

fn be_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a header blob from (tag, type, count, value bytes) entries, as rpm stores it.
    pub(crate) fn build(entries: &[(u32, u32, u32, &[u8])]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store = Vec::new();
        for &(tag, ty, count, value) in entries {
            for n in [tag, ty, store.len() as u32, count] {
                index.extend_from_slice(&n.to_be_bytes());
            }
            store.extend_from_slice(value);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        blob.extend_from_slice(&(store.len() as u32).to_be_bytes());
        blob.extend_from_slice(&index);
        blob.extend_from_slice(&store);
        blob
    }

    #[test]
    fn reads_the_inventory_tags() {
        let blob = build(&[
            (TAG_NAME, TYPE_STRING, 1, b"hello\0"),
            (TAG_VERSION, TYPE_STRING, 1, b"0.0.1\0"),
            (TAG_RELEASE, TYPE_STRING, 1, b"rls\0"),
            (TAG_EPOCH, TYPE_INT32, 1, &1u32.to_be_bytes()),
            (TAG_SUMMARY, TYPE_I18NSTRING, 2, b"Hi\0Salut\0"),
            (TAG_SIZE, TYPE_INT32, 1, &42u32.to_be_bytes()),
            (TAG_SIGMD5, TYPE_BIN, 2, &[0xab, 0x01]),
        ]);
        let header = parse_header(&blob).unwrap();
        assert_eq!(header.name.as_deref(), Some("hello"));
        assert_eq!(header.version.as_deref(), Some("0.0.1"));
        assert_eq!(header.release.as_deref(), Some("rls"));
        assert_eq!(header.epoch, Some(1));
        assert_eq!(header.summary.as_deref(), Some("Hi"));
        assert_eq!(header.size, Some(42));
        assert_eq!(header.sigmd5.as_deref(), Some("ab01"));
        assert_eq!(header.arch, None);
    }

    #[test]
    fn long_size_wins_over_size() {
        let blob = build(&[
            (TAG_SIZE, TYPE_INT32, 1, &1u32.to_be_bytes()),
            (TAG_LONGSIZE, TYPE_INT64, 1, &(5u64 << 32).to_be_bytes()),
        ]);
        assert_eq!(parse_header(&blob).unwrap().size, Some(5 << 32));
    }

    #[test]
    fn values_out_of_bounds_or_of_the_wrong_type_are_absent() {
        let mut blob = build(&[
            (TAG_EPOCH, TYPE_STRING, 1, b"1\0"),
            (TAG_NAME, TYPE_STRING, 1, b"unterminated"),
        ]);
        let header = parse_header(&blob).unwrap();
        assert_eq!((header.name, header.epoch), (None, None));
        // The epoch's offset far past the data store, with the right type.
        blob[12..16].copy_from_slice(&TYPE_INT32.to_be_bytes());
        blob[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_header(&blob).unwrap().epoch, None);
    }

    #[test]
    fn counts_overrunning_the_blob_are_errors() {
        assert!(parse_header(&[0, 0, 0]).is_err());
        assert!(parse_header(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(parse_header(&[0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        assert_eq!(
            parse_header(&[0, 0, 0, 0, 0, 0, 0, 0]).unwrap(),
            RpmHeader::default()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_header(&data);
        }

        #[test]
        fn arbitrary_index_entries_never_panic(
            entries in proptest::collection::vec(
                (prop_oneof![Just(TAG_NAME), Just(TAG_EPOCH), Just(TAG_SIGMD5), Just(TAG_LONGSIZE)],
                 0u32..12, any::<u32>(), any::<u32>()),
                0..8),
            store in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut blob = Vec::new();
            blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            blob.extend_from_slice(&(store.len() as u32).to_be_bytes());
            for (tag, ty, offset, count) in &entries {
                for n in [*tag, *ty, offset % 80, *count] {
                    blob.extend_from_slice(&n.to_be_bytes());
                }
            }
            blob.extend_from_slice(&store);
            prop_assert!(parse_header(&blob).is_ok());
        }
    }
}
