//! Executables (ELF, PE, Mach-O), which record what they were built from: Go binaries their
//! module list ([`super::golang`]), Rust binaries built with `cargo auditable` their crate list
//! ([`super::rust`]). Binaries can be anywhere in an image, so the walker chooses them by their
//! first bytes ([`is_candidate`]), reads each one whole once, and hands it to [`parse_binary`],
//! which parses the container format once for both languages.

use object::read::File;

use crate::{Package, ParseError};

/// How many leading bytes of a file [`is_candidate`] looks at.
pub const HEAD_LEN: usize = 20;

/// Whether a file whose first bytes are `head` (up to [`HEAD_LEN`]) is an executable or shared
/// library worth reading whole.
///
/// ELF relocatable objects (`.o`, kernel modules) and core dumps are not: they hold no build
/// information. Nor are detached debug files under `usr/lib/debug/`, which keep the sections'
/// headers but not their contents. Universal (fat) Mach-O files are not read: their magic is a
/// Java class file's, and Linux images hardly ever hold them.
pub fn is_candidate(path: &str, head: &[u8]) -> bool {
    if path.starts_with("usr/lib/debug/") {
        return false;
    }
    if let Some(ident) = head.strip_prefix(b"\x7fELF") {
        // e_type sits at offset 16, in the byte order e_ident[EI_DATA] (offset 5) gives.
        let e_type = match (ident.get(1), ident.get(12..14)) {
            (Some(1), Some(&[lo, hi])) => u16::from_le_bytes([lo, hi]),
            (Some(2), Some(&[hi, lo])) => u16::from_be_bytes([hi, lo]),
            _ => return false,
        };
        const ET_EXEC: u16 = 2;
        const ET_DYN: u16 = 3;
        return matches!(e_type, ET_EXEC | ET_DYN);
    }
    head.starts_with(b"MZ")
        || [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
        ]
        .iter()
        .any(|magic| head.starts_with(magic))
}

/// The Go modules and Rust crates an executable records; nothing for other executables.
///
/// A file that is not a well-formed executable is still searched for Go build information, which
/// does not need the container format in its 1.18+ form. If the build information of one language
/// is malformed and the other yields packages, the packages are returned and the error dropped;
/// a binary holding both kinds is rare, and its packages matter more than the diagnosis.
pub fn parse_binary(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let file = File::parse(data).ok();
    let mut packages = Vec::new();
    let mut first_error = None;
    match super::golang::from_binary(path, file.as_ref(), data) {
        Ok(found) => packages.extend(found),
        Err(e) => first_error = Some(e),
    }
    if let Some(file) = &file {
        match super::rust::from_binary(path, file) {
            Ok(found) => packages.extend(found),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) if packages.is_empty() => Err(e),
        _ => Ok(packages),
    }
}

/// Builds minimal ELF64 files for tests, so that the binary parsers are tested on real
/// section tables without checking binaries in.
#[cfg(test)]
pub(crate) mod test_elf {
    /// One section: name, virtual address, contents.
    pub struct Section<'a> {
        pub name: &'a str,
        pub address: u64,
        pub data: &'a [u8],
    }

    /// A little-endian x86-64 ELF executable (`ET_EXEC`) with these `SHT_PROGBITS` sections,
    /// writable and allocated, and no program headers.
    pub fn build(sections: &[Section]) -> Vec<u8> {
        const EHDR: usize = 64;
        const SHDR: usize = 64;
        let mut shstrtab = vec![0u8];
        let mut name_offsets = Vec::new();
        for s in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
            name_offsets.push(u32::try_from(shstrtab.len()).unwrap());
            shstrtab.extend_from_slice(s.as_bytes());
            shstrtab.push(0);
        }
        let mut out = vec![0u8; EHDR];
        let mut placed = Vec::new();
        for s in sections {
            while !out.len().is_multiple_of(16) {
                out.push(0);
            }
            placed.push((out.len(), s.data.len()));
            out.extend_from_slice(s.data);
        }
        let shstrtab_offset = out.len();
        out.extend_from_slice(&shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len();
        out.extend_from_slice(&[0u8; SHDR]);
        let shdr = |name: u32, kind: u32, flags: u64, addr: u64, off: usize, size: usize| {
            let mut h = Vec::with_capacity(SHDR);
            h.extend_from_slice(&name.to_le_bytes());
            h.extend_from_slice(&kind.to_le_bytes());
            h.extend_from_slice(&flags.to_le_bytes());
            h.extend_from_slice(&addr.to_le_bytes());
            h.extend_from_slice(&(off as u64).to_le_bytes());
            h.extend_from_slice(&(size as u64).to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes()); // sh_link
            h.extend_from_slice(&0u32.to_le_bytes()); // sh_info
            h.extend_from_slice(&16u64.to_le_bytes()); // sh_addralign
            h.extend_from_slice(&0u64.to_le_bytes()); // sh_entsize
            h
        };
        const SHT_PROGBITS: u32 = 1;
        const SHT_STRTAB: u32 = 3;
        const SHF_WRITE_ALLOC: u64 = 0x3;
        for (i, s) in sections.iter().enumerate() {
            let (off, size) = placed[i];
            out.extend(shdr(
                name_offsets[i],
                SHT_PROGBITS,
                SHF_WRITE_ALLOC,
                s.address,
                off,
                size,
            ));
        }
        out.extend(shdr(
            name_offsets[sections.len()],
            SHT_STRTAB,
            0,
            0,
            shstrtab_offset,
            shstrtab.len(),
        ));
        let shnum = u16::try_from(sections.len() + 2).unwrap();
        let mut h = Vec::with_capacity(EHDR);
        h.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // e_entry
        h.extend_from_slice(&0u64.to_le_bytes()); // e_phoff
        h.extend_from_slice(&(shoff as u64).to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        h.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        h.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        h.extend_from_slice(&0u16.to_le_bytes()); // e_phnum
        h.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        h.extend_from_slice(&shnum.to_le_bytes());
        h.extend_from_slice(&(shnum - 1).to_le_bytes()); // e_shstrndx
        out[..EHDR].copy_from_slice(&h);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn candidates_by_magic() {
        let mut elf_exec = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf_exec.extend_from_slice(&[2, 0]);
        let mut elf_dyn_be = b"\x7fELF\x02\x02\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf_dyn_be.extend_from_slice(&[0, 3]);
        let mut elf_rel = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        elf_rel.extend_from_slice(&[1, 0]);
        assert!(is_candidate("usr/bin/x", &elf_exec));
        assert!(is_candidate("usr/lib/x.so", &elf_dyn_be));
        assert!(!is_candidate("lib/modules/x.ko", &elf_rel));
        assert!(!is_candidate(
            "usr/lib/debug/.build-id/ab/cd.debug",
            &elf_exec
        ));
        assert!(!is_candidate("usr/bin/x", b"\x7fELF\x02\x01"));
        assert!(is_candidate("x.exe", b"MZ\x90\0"));
        assert!(is_candidate("x", &[0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1]));
        assert!(is_candidate("x", &[0xfe, 0xed, 0xfa, 0xce]));
        assert!(!is_candidate(
            "x.class",
            &[0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 52]
        ));
        assert!(!is_candidate("x.sh", b"#!/bin/sh\n"));
        assert!(!is_candidate("x", b""));
    }

    #[test]
    fn plain_elf_yields_nothing() {
        let elf = test_elf::build(&[test_elf::Section {
            name: ".data",
            address: 0x1000,
            data: b"just data",
        }]);
        assert!(is_candidate("x", &elf[..HEAD_LEN]));
        assert_eq!(parse_binary("x", &elf).unwrap(), Vec::new());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = is_candidate("x", &data);
            let _ = parse_binary("x", &data);
        }

        #[test]
        fn arbitrary_bytes_after_an_elf_magic_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..4096)
        ) {
            let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
            elf.extend_from_slice(&data);
            let _ = parse_binary("x", &elf);
        }
    }
}
