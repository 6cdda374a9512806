//! Go modules compiled into a binary, from the build information the Go linker embeds in every
//! executable (what `go version -m` prints). The walker hands binaries to
//! [`super::binary::parse_binary`], which calls [`from_binary`]; [`parse`] does the same for
//! one file on its own.
//!
//! Where it is: the section `.go.buildinfo` (ELF) or `__go_buildinfo` (Mach-O); failing that,
//! any data section (PE has no dedicated one); and, if the file is not a well-formed executable,
//! the whole file. It starts with the 14-byte magic `\xff Go buildinf:` at a 16-byte aligned
//! offset, then the pointer size and a flags byte. Since Go 1.18 (flag `0x2`) the Go version and
//! the module information follow as two length-prefixed (unsigned varint) strings; before, two
//! pointers follow, each to a Go string header (data pointer, length) to be looked up by virtual
//! address in the executable's sections, in the byte order flag `0x1` gives.
//!
//! What is reported, from the module information's tab-separated lines:
//! - `stdlib`, at the toolchain's version (`go1.22.3 X:boringcrypto` becomes `1.22.3`), which
//!   Go's own advisories are keyed by; omitted for development toolchains (`devel …`).
//! - the main module (`mod`). Built from a checkout it has version `(devel)`; it is then given
//!   the version set with `-ldflags "-X <pkg>.version=1.2.3"` (or `.Version`, `.ver`) when
//!   exactly one such value looks like a version (with a `v` prepended if missing, as module
//!   versions have; Syft does the same), and is otherwise left out: it is the application
//!   itself, with no version an advisory could name.
//! - every `dep`. A dependency replaced by a `=>` line is reported under the replacement's path
//!   and version, since that is the code compiled in (Trivy and Syft do the same); one replaced
//!   by a local directory has no version and is left out, as is a `dep` without a version (old
//!   toolchains listed the main module so, as `(devel)`).
//!
//! The architecture is the `GOARCH` build setting (Go 1.18+).

use object::read::{File, Object, ObjectSection};

use crate::{Ecosystem, Package, ParseError};

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// The header: the magic, pointer size, flags, and then (pre-1.18) two pointers or padding.
const HEADER_LEN: usize = 32;
const ALIGN: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_INLINE_STRINGS: u8 = 0x2;

/// The build information of one Go binary, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// As `runtime.Version()` returns it, e.g. `go1.22.3`.
    pub go_version: String,
    /// The module information text (`path`, `mod`, `dep`, `=>`, `build` lines).
    pub modinfo: String,
}

/// The Go modules in one binary file; nothing if it is not a Go binary.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    from_binary(path, File::parse(data).ok().as_ref(), data)
}

/// The Go modules in a binary whose container format the caller has already parsed (`None` if
/// it could not be).
pub fn from_binary(
    path: &str,
    file: Option<&File>,
    data: &[u8],
) -> Result<Vec<Package>, ParseError> {
    match read_build_info(file, data) {
        None => Ok(Vec::new()),
        Some(Err(reason)) => Err(ParseError::new(path, format!("Go build info: {reason}"))),
        Some(Ok(info)) => Ok(packages(path, &info)),
    }
}

/// The build information, `None` if there is none, or why it could not be read.
pub fn read_build_info(file: Option<&File>, data: &[u8]) -> Option<Result<BuildInfo, String>> {
    let Some(file) = file else {
        return find_magic(data).map(|blob| decode(None, blob));
    };
    let named = file
        .section_by_name(".go.buildinfo")
        .or_else(|| file.section_by_name("__go_buildinfo"));
    if let Some(section) = named {
        let data = section.data().ok()?;
        return find_magic(data).map(|blob| decode(Some(file), blob));
    }
    // Older linkers and PE put the blob at the start of the writable data.
    file.sections()
        .filter(|s| s.kind() == object::SectionKind::Data)
        .filter_map(|s| s.data().ok())
        .find_map(find_magic)
        .map(|blob| decode(Some(file), blob))
}

/// The data from the first 16-byte aligned occurrence of the magic on.
fn find_magic(data: &[u8]) -> Option<&[u8]> {
    (0..data.len())
        .step_by(ALIGN)
        .find(|&i| data[i..].starts_with(MAGIC))
        .map(|i| &data[i..])
}

fn decode(file: Option<&File>, blob: &[u8]) -> Result<BuildInfo, String> {
    let header = blob.get(..HEADER_LEN).ok_or("truncated header")?;
    let ptr_size = usize::from(header[14]);
    let flags = header[15];
    let (go_version, modinfo) = if flags & FLAG_INLINE_STRINGS != 0 {
        let rest = &blob[HEADER_LEN..];
        let (go_version, rest) = read_varint_string(rest).ok_or("bad Go version string")?;
        let (modinfo, _) = read_varint_string(rest).ok_or("bad module info string")?;
        (go_version, modinfo)
    } else {
        let file = file.ok_or("pointer-format build info outside an executable")?;
        if ptr_size != 4 && ptr_size != 8 {
            return Err(format!("pointer size {ptr_size}"));
        }
        let reader = PointerReader {
            file,
            ptr_size,
            big_endian: flags & FLAG_BIG_ENDIAN != 0,
        };
        let version_ptr = reader.decode(&blob[16..16 + ptr_size]);
        let modinfo_ptr = reader.decode(&blob[16 + ptr_size..16 + 2 * ptr_size]);
        let go_version = reader.string(version_ptr).ok_or("Go version not mapped")?;
        // Binaries built outside module mode have no module information.
        let modinfo = reader.string(modinfo_ptr).unwrap_or(&[]);
        (go_version, modinfo)
    };
    Ok(BuildInfo {
        go_version: String::from_utf8_lossy(go_version).into_owned(),
        modinfo: String::from_utf8_lossy(strip_sentinels(modinfo)).into_owned(),
    })
}

/// The linker wraps the module information in 16 arbitrary bytes at each end (so that it can be
/// found in memory); they are there when the text is long enough and ends with a newline before
/// the trailing 16.
fn strip_sentinels(modinfo: &[u8]) -> &[u8] {
    let n = modinfo.len();
    if n >= 33 && modinfo[n - 17] == b'\n' {
        &modinfo[16..n - 16]
    } else {
        modinfo
    }
}

fn read_varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let rest = &data[i + 1..];
            let len = usize::try_from(len).ok()?;
            return (len <= rest.len()).then(|| rest.split_at(len));
        }
    }
    None
}

/// Reads Go strings by virtual address, for the pre-1.18 format.
struct PointerReader<'f, 'data> {
    file: &'f File<'data>,
    ptr_size: usize,
    big_endian: bool,
}

impl<'data> PointerReader<'_, 'data> {
    fn decode(&self, bytes: &[u8]) -> u64 {
        let mut buf = [0u8; 8];
        if self.big_endian {
            buf[8 - bytes.len()..].copy_from_slice(bytes);
            u64::from_be_bytes(buf)
        } else {
            buf[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(buf)
        }
    }

    fn read(&self, address: u64, size: u64) -> Option<&'data [u8]> {
        self.file
            .sections()
            .find_map(|s| s.data_range(address, size).ok().flatten())
    }

    /// The Go string whose header (data pointer, length) is at `address`.
    fn string(&self, address: u64) -> Option<&'data [u8]> {
        let width = self.ptr_size as u64;
        let header = self.read(address, 2 * width)?;
        let data = self.decode(&header[..self.ptr_size]);
        let len = self.decode(&header[self.ptr_size..2 * self.ptr_size]);
        // data_range checks `len` against the section, so no size from the file is allocated.
        self.read(data, len)
    }
}

/// The packages the build information records (see the module documentation).
pub fn packages(path: &str, info: &BuildInfo) -> Vec<Package> {
    let mut main: Option<Module> = None;
    let mut deps: Vec<Module> = Vec::new();
    let mut settings: Vec<(&str, String)> = Vec::new();
    // The module the next `=>` line replaces: the main module, or a dependency by index.
    let mut replaceable: Option<Option<usize>> = None;
    for line in info.modinfo.lines() {
        let mut fields = line.split('\t');
        let kind = fields.next().unwrap_or("");
        let module_path = fields.next().unwrap_or("");
        let version = fields.next().unwrap_or("");
        match kind {
            "mod" => {
                main = Some(Module::new(module_path, version));
                replaceable = Some(None);
            }
            "dep" => {
                deps.push(Module::new(module_path, version));
                replaceable = Some(Some(deps.len() - 1));
            }
            "=>" => {
                let module = match replaceable.take() {
                    Some(None) => main.as_mut(),
                    Some(Some(i)) => deps.get_mut(i),
                    None => None,
                };
                if let Some(module) = module {
                    module.path = module_path.to_owned();
                    module.version = version.to_owned();
                }
            }
            "build" => {
                replaceable = None;
                if let Some((key, value)) = module_path.split_once('=') {
                    settings.push((key, unquote(value)));
                }
            }
            _ => replaceable = None,
        }
    }

    let arch = settings
        .iter()
        .find(|(k, _)| *k == "GOARCH")
        .map(|(_, v)| v.clone());
    let package = |name: &str, version: &str| {
        let mut p = Package::new(Ecosystem::Golang, name, version, path);
        p.arch = arch.clone();
        p
    };

    let mut out = Vec::with_capacity(deps.len() + 2);
    if let Some(version) = stdlib_version(&info.go_version) {
        out.push(package("stdlib", version));
    }
    if let Some(main) = main.filter(|m| !m.path.is_empty()) {
        let version = if main.version == "(devel)" || main.version.is_empty() {
            settings
                .iter()
                .find(|(k, _)| *k == "-ldflags")
                .and_then(|(_, flags)| ldflags_version(flags))
        } else {
            Some(main.version)
        };
        if let Some(version) = version {
            out.push(package(&main.path, &version));
        }
    }
    for dep in deps {
        if !dep.path.is_empty() && !dep.version.is_empty() && dep.version != "(devel)" {
            out.push(package(&dep.path, &dep.version));
        }
    }
    out
}

struct Module {
    path: String,
    version: String,
}

impl Module {
    fn new(path: &str, version: &str) -> Module {
        Module {
            path: path.to_owned(),
            version: version.to_owned(),
        }
    }
}

/// `go1.22.3 X:boringcrypto` → `1.22.3`; `None` for a development toolchain.
fn stdlib_version(go_version: &str) -> Option<&str> {
    let version = go_version.split_whitespace().next()?.strip_prefix("go")?;
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

/// Build setting values with spaces, quotes or `=` are written as Go quoted strings.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            // `\\`, `\"`, and escapes this reader has no use for are kept as the character.
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The version stamped by `-X <import path>.version=<v>` in the linker flags, if exactly one
/// distinct value looks like a version.
fn ldflags_version(ldflags: &str) -> Option<String> {
    let words = shell_words(ldflags);
    let mut assignments = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let assignment = match word.as_str() {
            "-X" | "--X" => words.next().map(String::as_str),
            w => w.strip_prefix("-X=").or_else(|| w.strip_prefix("--X=")),
        };
        if let Some(assignment) = assignment {
            assignments.push(assignment);
        }
    }
    let mut found: Vec<String> = Vec::new();
    for assignment in assignments {
        let Some((symbol, value)) = assignment.split_once('=') else {
            continue;
        };
        let field = symbol.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        if field != "version" && field != "ver" {
            continue;
        }
        let digits = value.strip_prefix('v').unwrap_or(value);
        let looks_like_version = digits.split('.').count() >= 2
            && digits.split(['.', '-', '+']).next().is_some_and(|major| {
                !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())
            });
        if looks_like_version {
            let version = format!("v{digits}");
            if !found.contains(&version) {
                found.push(version);
            }
        }
    }
    (found.len() == 1).then(|| found.remove(0))
}

/// Splits a command line the way a POSIX shell would for plain words and quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::binary::test_elf::{self, Section};
    use proptest::prelude::*;

    const MODINFO: &str = "path\texample.com/app/cmd/app\n\
mod\texample.com/app\t(devel)\t\n\
dep\tgithub.com/a/b\tv1.2.3\th1:abc=\n\
dep\tgolang.org/x/net\tv0.1.0\th1:def=\n\
=>\tgithub.com/fork/net\tv0.1.1-fix\th1:ghi=\n\
dep\texample.com/local\tv0.0.0-00010101000000-000000000000\n\
=>\t../local\t\t\n\
build\t-buildmode=exe\n\
build\t-ldflags=\"-s -w -X main.version=2.5.0 -X 'main.commit=abc def'\"\n\
build\tGOARCH=arm64\n";

    /// The linker's wrapping, as in real binaries.
    fn wrapped(modinfo: &str) -> Vec<u8> {
        let mut v = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        v.extend_from_slice(modinfo.as_bytes());
        v.extend_from_slice(b"\xf92C1\x86\x18 r\0\x82B\x10A\x16\xd8\xf2");
        v
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// A Go 1.18+ blob: header then two varint-prefixed strings.
    fn inline_blob(go_version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        blob.resize(HEADER_LEN, 0);
        varint(go_version.len(), &mut blob);
        blob.extend_from_slice(go_version.as_bytes());
        varint(modinfo.len(), &mut blob);
        blob.extend_from_slice(modinfo);
        blob
    }

    fn names(packages: &[Package]) -> Vec<(String, String)> {
        packages
            .iter()
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect()
    }

    fn expected() -> Vec<(String, String)> {
        [
            ("stdlib", "1.22.3"),
            ("example.com/app", "v2.5.0"),
            ("github.com/a/b", "v1.2.3"),
            ("github.com/fork/net", "v0.1.1-fix"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn inline_format_in_go_buildinfo_section() {
        let blob = inline_blob("go1.22.3 X:boringcrypto", &wrapped(MODINFO));
        let elf = test_elf::build(&[Section {
            name: ".go.buildinfo",
            address: 0x40_0000,
            data: &blob,
        }]);
        let packages = parse("usr/bin/app", &elf).unwrap();
        assert_eq!(names(&packages), expected());
        for p in &packages {
            assert_eq!(p.ecosystem, Ecosystem::Golang);
            assert_eq!(p.path, "usr/bin/app");
            assert_eq!(p.arch.as_deref(), Some("arm64"));
            assert_eq!(p.layer, None);
        }
    }

    #[test]
    fn inline_format_without_a_container_is_found_by_scanning() {
        let mut data = vec![0u8; 48];
        // An unaligned copy of the magic (a string literal in rodata) must not be taken.
        data[5..5 + MAGIC.len()].copy_from_slice(MAGIC);
        data.extend(inline_blob("go1.21.0", &wrapped(MODINFO)));
        let packages = parse("x", &data).unwrap();
        assert_eq!(names(&packages)[0], ("stdlib".into(), "1.21.0".into()));
        assert_eq!(packages.len(), 4);
    }

    #[test]
    fn pointer_format_little_and_big_endian() {
        for (ptr_size, big_endian) in [(8usize, false), (4, false), (8, true), (4, true)] {
            let put = |v: u64, out: &mut Vec<u8>| {
                let bytes = if big_endian {
                    v.to_be_bytes()[8 - ptr_size..].to_vec()
                } else {
                    v.to_le_bytes()[..ptr_size].to_vec()
                };
                out.extend(bytes);
            };
            // A data section at 0x50_0000 holding: two string headers, then the two strings.
            let base = 0x50_0000u64;
            let version = b"go1.16.15";
            let modinfo = wrapped(MODINFO);
            let headers_len = 4 * ptr_size as u64;
            let mut rodata = Vec::new();
            put(base + headers_len, &mut rodata);
            put(version.len() as u64, &mut rodata);
            put(base + headers_len + version.len() as u64, &mut rodata);
            put(modinfo.len() as u64, &mut rodata);
            rodata.extend_from_slice(version);
            rodata.extend_from_slice(&modinfo);

            let mut blob = MAGIC.to_vec();
            blob.push(ptr_size as u8);
            blob.push(if big_endian { FLAG_BIG_ENDIAN } else { 0 });
            put(base, &mut blob);
            put(base + 2 * ptr_size as u64, &mut blob);
            blob.resize(HEADER_LEN, 0);

            let elf = test_elf::build(&[
                Section {
                    name: ".go.buildinfo",
                    address: 0x40_0000,
                    data: &blob,
                },
                Section {
                    name: ".rodata",
                    address: base,
                    data: &rodata,
                },
            ]);
            let packages = parse("x", &elf).unwrap();
            let mut want = expected();
            want[0].1 = "1.16.15".into();
            assert_eq!(names(&packages), want, "{ptr_size} {big_endian}");
        }
    }

    #[test]
    fn pointer_format_with_dangling_pointers_is_an_error() {
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&[8, 0]);
        blob.extend_from_slice(&0xdead_beefu64.to_le_bytes());
        blob.extend_from_slice(&0xdead_beefu64.to_le_bytes());
        let elf = test_elf::build(&[Section {
            name: ".go.buildinfo",
            address: 0x40_0000,
            data: &blob,
        }]);
        assert!(parse("x", &elf).is_err());
    }

    #[test]
    fn truncated_or_oversized_strings_are_errors() {
        let mut blob = inline_blob("go1.22.0", b"x");
        blob.truncate(blob.len() - 1);
        assert!(parse("x", &blob).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[8, FLAG_INLINE_STRINGS]);
        huge.resize(HEADER_LEN, 0);
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(parse("x", &huge).is_err());
        assert!(parse("x", MAGIC).is_err());
    }

    #[test]
    fn not_a_go_binary_yields_nothing() {
        assert_eq!(parse("x", b"\x7fELF not really").unwrap(), Vec::new());
        let elf = test_elf::build(&[Section {
            name: ".data",
            address: 0x1000,
            data: &[0; 64],
        }]);
        assert_eq!(parse("x", &elf).unwrap(), Vec::new());
    }

    #[test]
    fn blob_in_a_plain_data_section_is_found() {
        let blob = inline_blob("go1.20.1", &wrapped(MODINFO));
        let elf = test_elf::build(&[Section {
            name: ".data",
            address: 0x1000,
            data: &blob,
        }]);
        assert_eq!(names(&parse("x", &elf).unwrap()).len(), 4);
    }

    #[test]
    fn main_module_versions() {
        let info = |modinfo: &str| BuildInfo {
            go_version: "devel go1.23-abcdef Tue Jan 1".into(),
            modinfo: modinfo.into(),
        };
        // A released main module keeps its version; a devel toolchain gives no stdlib.
        let p = packages("x", &info("mod\texample.com/app\tv1.0.0\th1:x\n"));
        assert_eq!(names(&p), [("example.com/app".into(), "v1.0.0".into())]);
        // (devel) without a stamped version: left out.
        let p = packages("x", &info("mod\texample.com/app\t(devel)\t\n"));
        assert_eq!(p, Vec::new());
        // Two different stamped versions: ambiguous, left out.
        let p = packages(
            "x",
            &info(
                "mod\tm\t(devel)\t\nbuild\t-ldflags=\"-X main.version=1.0.0 -X=pkg/v.Version=v2.0.0\"\n",
            ),
        );
        assert_eq!(p, Vec::new());
        // The same version twice, and a non-version value beside it.
        let p = packages(
            "x",
            &info(
                "mod\tm\t(devel)\t\nbuild\t-ldflags=\"-X main.version=1.0.0 -X a/b.Version=v1.0.0 -X c.version=dev\"\n",
            ),
        );
        assert_eq!(names(&p), [("m".into(), "v1.0.0".into())]);
    }

    #[test]
    fn go_versions() {
        assert_eq!(stdlib_version("go1.22.3"), Some("1.22.3"));
        assert_eq!(stdlib_version("go1.22.3 X:boringcrypto"), Some("1.22.3"));
        assert_eq!(stdlib_version("go1.21rc2"), Some("1.21rc2"));
        assert_eq!(stdlib_version("devel go1.23-abc"), None);
        assert_eq!(stdlib_version(""), None);
        assert_eq!(stdlib_version("go"), None);
    }

    #[test]
    fn shell_words_and_unquote() {
        assert_eq!(
            shell_words(r#"-w -s -extldflags '-static' -X "a=b c" x\ y"#),
            ["-w", "-s", "-extldflags", "-static", "-X", "a=b c", "x y"]
        );
        assert_eq!(unquote(r#""a \"b\" \\ c""#), r#"a "b" \ c"#);
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(unquote("\""), "\"");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse("x", &data);
        }

        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut blob = MAGIC.to_vec();
            blob.extend_from_slice(&tail);
            let _ = parse("x", &blob);
            let elf = test_elf::build(&[Section { name: ".go.buildinfo", address: 0x1000, data: &blob }]);
            let _ = parse("x", &elf);
        }

        #[test]
        fn arbitrary_module_info_never_panics(modinfo in ".{0,400}", version in ".{0,20}") {
            let _ = packages("x", &BuildInfo { go_version: version, modinfo });
        }
    }
}
