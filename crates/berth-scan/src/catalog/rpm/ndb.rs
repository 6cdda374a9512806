//! rpm's own "ndb" package database, `Packages.db` (SUSE since SLE 15 SP3 and openSUSE): a
//! 32-byte file header (`RpmP`, version 0, generation, number of slot pages, next package index),
//! slot pages of 16-byte slots (`Slot`, package index, block offset, block count), and blobs in
//! 16-byte blocks after them, each framed by a 16-byte head (`BlbS`, package index, generation,
//! length) and a 12-byte tail (checksum, length, `BlbE`). All integers are little-endian.
//!
//! A slot whose blob is out of the file, overlaps another blob, or is not framed as its slot
//! says, is left out. Blobs compressed with rpm's optional LZO support are not read (they do
//! not parse as headers and are left out too).

const FILE_MAGIC: &[u8; 4] = b"RpmP";
const SLOT_MAGIC: &[u8; 4] = b"Slot";
const BLOB_MAGIC: &[u8; 4] = b"BlbS";
const PAGE_SIZE: usize = 4096;
const SLOT_SIZE: usize = 16;
const BLOCK_SIZE: usize = 16;
const BLOB_HEAD_LEN: usize = 16;
const BLOB_TAIL_LEN: usize = 12;
/// The file header takes the place of the first two slots.
const FIRST_SLOT: usize = 2;

/// Whether the file starts with the ndb package database magic.
pub fn is_ndb(data: &[u8]) -> bool {
    data.starts_with(FILE_MAGIC)
}

/// The header blobs of the database, with their package index, in package index order (the
/// order `rpm -qa` lists them in).
pub fn blobs(data: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    if !is_ndb(data) {
        return Err("not an rpm ndb package database".into());
    }
    let version = le_u32(data, 4).ok_or("truncated ndb header")?;
    if version != 0 {
        return Err(format!("unsupported ndb version {version}"));
    }
    let slot_pages = le_u32(data, 12).ok_or("truncated ndb header")? as usize;
    let slot_area_len = slot_pages
        .checked_mul(PAGE_SIZE)
        .filter(|&n| n > 0 && n <= data.len())
        .ok_or_else(|| format!("{slot_pages} slot pages do not fit in the file"))?;

    // (package index, first byte, block range end) of every used slot.
    let mut slots = Vec::new();
    for slot in data[..slot_area_len]
        .chunks_exact(SLOT_SIZE)
        .skip(FIRST_SLOT)
    {
        let field = |i: usize| le_u32(slot, i * 4).expect("slots are 16 bytes");
        let (pkgidx, blkoff, blkcnt) = (field(1), field(2) as usize, field(3) as usize);
        if &slot[..4] != SLOT_MAGIC || pkgidx == 0 {
            continue;
        }
        let Some(start) = blkoff.checked_mul(BLOCK_SIZE) else {
            continue;
        };
        let Some(end) = blkcnt
            .checked_mul(BLOCK_SIZE)
            .and_then(|len| start.checked_add(len))
        else {
            continue;
        };
        if start < slot_area_len || end > data.len() {
            continue;
        }
        slots.push((pkgidx, start, end));
    }

    // Blobs must not overlap: besides being a sign of damage, overlapping slots would let a
    // small file stand for many copies of one large blob.
    slots.sort_by_key(|&(_, start, _)| start);
    let mut blobs = Vec::new();
    let mut free_from = slot_area_len;
    for (pkgidx, start, end) in slots {
        if start < free_from {
            continue;
        }
        if let Some(blob) = framed_blob(&data[start..end], pkgidx) {
            blobs.push((pkgidx, blob));
            free_from = end;
        }
    }
    blobs.sort_by_key(|&(pkgidx, _)| pkgidx);
    Ok(blobs)
}

/// The blob inside a slot's blocks, if its head names the same package and its length fits.
fn framed_blob(blocks: &[u8], pkgidx: u32) -> Option<&[u8]> {
    if !blocks.starts_with(BLOB_MAGIC) || le_u32(blocks, 4)? != pkgidx {
        return None;
    }
    let len = le_u32(blocks, 12)? as usize;
    let end = BLOB_HEAD_LEN.checked_add(len)?;
    if end.checked_add(BLOB_TAIL_LEN)? > blocks.len() {
        return None;
    }
    Some(&blocks[BLOB_HEAD_LEN..end])
}

fn le_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A database of one slot page and the given (package index, blob) pairs, one block run each.
    fn sample(blobs: &[(u32, &[u8])]) -> Vec<u8> {
        let mut data = vec![0u8; PAGE_SIZE];
        data[..4].copy_from_slice(FILE_MAGIC);
        data[12..16].copy_from_slice(&1u32.to_le_bytes());
        for (i, (pkgidx, blob)) in blobs.iter().enumerate() {
            let start = data.len();
            data.extend_from_slice(BLOB_MAGIC);
            data.extend_from_slice(&pkgidx.to_le_bytes());
            data.extend_from_slice(&1u32.to_le_bytes());
            data.extend_from_slice(&(blob.len() as u32).to_le_bytes());
            data.extend_from_slice(blob);
            data.extend_from_slice(&[0; 4]);
            data.extend_from_slice(&(blob.len() as u32).to_le_bytes());
            data.extend_from_slice(b"BlbE");
            data.resize(data.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
            let slot = (FIRST_SLOT + i) * SLOT_SIZE;
            data[slot..slot + 4].copy_from_slice(SLOT_MAGIC);
            data[slot + 4..slot + 8].copy_from_slice(&pkgidx.to_le_bytes());
            data[slot + 8..slot + 12].copy_from_slice(&((start / BLOCK_SIZE) as u32).to_le_bytes());
            let blocks = (data.len() - start) / BLOCK_SIZE;
            data[slot + 12..slot + 16].copy_from_slice(&(blocks as u32).to_le_bytes());
        }
        data
    }

    #[test]
    fn reads_blobs_in_package_index_order() {
        let data = sample(&[(7, b"seven"), (3, b"three")]);
        assert_eq!(
            blobs(&data).unwrap(),
            [(3, &b"three"[..]), (7, &b"seven"[..])]
        );
    }

    #[test]
    fn leaves_out_bad_slots() {
        let mut data = sample(&[(1, b"one"), (2, b"two")]);
        // Second slot now points at the first blob: overlapping, and the head's index differs.
        let (first, second) = (FIRST_SLOT * SLOT_SIZE, (FIRST_SLOT + 1) * SLOT_SIZE);
        let first_slot = data[first + 8..first + 16].to_vec();
        data[second + 8..second + 16].copy_from_slice(&first_slot);
        assert_eq!(blobs(&data).unwrap(), [(1, &b"one"[..])]);
        // Block offset inside the slot pages.
        data[first + 8..first + 12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(blobs(&data).unwrap(), []);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(blobs(b"").is_err());
        assert!(blobs(b"RpmP").is_err());
        let mut data = sample(&[]);
        data[12..16].copy_from_slice(&2u32.to_le_bytes());
        assert!(blobs(&data).is_err());
        data[4] = 1;
        assert!(blobs(&data).unwrap_err().contains("version"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            mut data in proptest::collection::vec(any::<u8>(), 0..8192),
            with_magic in any::<bool>(),
        ) {
            if with_magic && data.len() >= 16 {
                data[..4].copy_from_slice(FILE_MAGIC);
                data[4..8].fill(0);
                data[12..16].copy_from_slice(&1u32.to_le_bytes());
            }
            let _ = blobs(&data);
        }

        #[test]
        fn corrupted_databases_never_panic(
            flips in proptest::collection::vec(
                (prop_oneof![0usize..64, PAGE_SIZE..PAGE_SIZE + 128], any::<u8>()),
                1..16,
            ),
        ) {
            let mut data = sample(&[(1, b"one"), (2, &[0x55; 40])]);
            for (at, byte) in flips {
                if let Some(b) = data.get_mut(at) {
                    *b = byte;
                }
            }
            let _ = blobs(&data);
        }
    }
}
