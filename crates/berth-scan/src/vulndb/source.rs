//! Reading vulnerability data from files: which format a file is, and its entries.
//!
//! - a zip archive: osv.dev's export (`<Ecosystem>/all.zip` or the whole `all.zip`), one OSV
//!   record per `*.json` member;
//! - a JSON file: one OSV record, an Alpine secdb file, or the Debian tracker's JSON (told
//!   apart by their shape; a file larger than [`Limits::max_record_bytes`] can only be the
//!   tracker's, which is read as a stream);
//! - a directory: every `*.json` and `*.zip` below it, in path order.
//!
//! Nothing here writes: a source that fails to read (a truncated zip, broken JSON in the
//! tracker file) is an error before the database is touched. A single OSV record that does not
//! parse is counted as rejected, with its name and reason, and the rest is read.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use super::{Entry, alpine, debian, osv};

/// Bounds on what a source may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single OSV record or secdb file (and zip member, uncompressed).
    pub max_record_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 32 << 20,
        }
    }
}

/// What reading a source found, beside the entries handed out.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadReport {
    pub entries: u64,
    /// OSV records marked withdrawn (left out, so the import removes them).
    pub withdrawn: u64,
    /// OSV records naming no package this database can match (only `GIT` ranges).
    pub without_packages: u64,
    /// Records that did not parse: how many, and the first few with the reason.
    pub rejected: u64,
    pub rejections: Vec<String>,
}

const REJECTIONS_KEPT: usize = 20;

impl ReadReport {
    fn reject(&mut self, what: &str, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < REJECTIONS_KEPT {
            self.rejections.push(format!("{what}: {reason}"));
        }
    }
}

/// Reads every entry of the file or directory at `path`, handing each to `each` (an error
/// from `each` stops the read and is returned).
pub fn read_path(
    path: &Path,
    limits: Limits,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<ReadReport, String> {
    let mut report = ReadReport::default();
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        collect(path, &mut files)?;
        for file in files {
            read_file(&file, true, limits, &mut report, each)?;
        }
    } else {
        read_file(path, false, limits, &mut report, each)?;
    }
    Ok(report)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut children = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    children.sort();
    for child in children {
        let file_type = std::fs::symlink_metadata(&child)
            .map_err(|e| format!("{}: {e}", child.display()))?
            .file_type();
        if file_type.is_dir() {
            collect(&child, out)?;
        } else if file_type.is_file()
            && child
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json") || x.eq_ignore_ascii_case("zip"))
        {
            out.push(child);
        }
    }
    Ok(())
}

/// One file; `in_dir`: found in a directory, where a JSON file of no known format (an index,
/// a README turned JSON) is counted as rejected rather than failing the import.
fn read_file(
    path: &Path,
    in_dir: bool,
    limits: Limits,
    report: &mut ReadReport,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), String> {
    let shown = path.display().to_string();
    let mut file = File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut file, &mut magic).map_err(|e| format!("{shown}: {e}"))?;
    file.rewind().map_err(|e| format!("{shown}: {e}"))?;
    if n == 4 && magic == *b"PK\x03\x04" {
        return read_zip(file, &shown, limits, report, each);
    }
    let size = file.metadata().map_err(|e| format!("{shown}: {e}"))?.len();
    if size > limits.max_record_bytes {
        // Too large for one record: only the tracker's file is this large.
        return read_tracker(file, shown, report, each);
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("{shown}: {e}"))?;
    read_json(&bytes, &shown, in_dir, report, each)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// One JSON document: an OSV record, a secdb file or the tracker's JSON.
fn read_json(
    bytes: &[u8],
    shown: &str,
    in_dir: bool,
    report: &mut ReadReport,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), String> {
    let unknown = |report: &mut ReadReport, reason: String| {
        if in_dir {
            report.reject(shown, reason);
            Ok(())
        } else {
            Err(format!("{shown}: {reason}"))
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return unknown(report, format!("not JSON: {e}")),
    };
    if value.get("id").is_some_and(|id| id.is_string()) {
        return osv_record(bytes, shown, report, each);
    }
    if alpine::looks_like(&value) {
        for entry in alpine::parse(bytes).map_err(|e| format!("{shown}: {e}"))? {
            report.entries += 1;
            each(entry)?;
        }
        return Ok(());
    }
    if value
        .as_object()
        .is_some_and(|m| m.values().all(|v| v.is_object()))
    {
        return read_tracker(bytes, shown.to_owned(), report, each);
    }
    unknown(
        report,
        "neither an OSV record, an Alpine secdb file nor the Debian tracker's JSON".into(),
    )
}

fn read_tracker(
    reader: impl Read,
    shown: String,
    report: &mut ReadReport,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), String> {
    let mut rejected = ReadReport::default();
    debian::read(
        reader,
        &mut |e| {
            report.entries += 1;
            each(e)
        },
        &mut |reason| rejected.reject(&shown, reason),
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    report.rejected += rejected.rejected;
    for r in rejected.rejections {
        if report.rejections.len() < REJECTIONS_KEPT {
            report.rejections.push(r);
        }
    }
    Ok(())
}

fn osv_record(
    bytes: &[u8],
    shown: &str,
    report: &mut ReadReport,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), String> {
    match osv::parse(bytes) {
        Ok(osv::Parsed::Entry(entry)) => {
            report.entries += 1;
            each(*entry)
        }
        Ok(osv::Parsed::Withdrawn { .. }) => {
            report.withdrawn += 1;
            Ok(())
        }
        Ok(osv::Parsed::NoPackages { .. }) => {
            report.without_packages += 1;
            Ok(())
        }
        Err(reason) => {
            report.reject(shown, reason);
            Ok(())
        }
    }
}

fn read_zip(
    file: File,
    shown: &str,
    limits: Limits,
    report: &mut ReadReport,
    each: &mut dyn FnMut(Entry) -> Result<(), String>,
) -> Result<(), String> {
    // The central directory is at the end: a truncated download fails here, before any
    // record is handed out.
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("{shown}: not a complete zip archive: {e}"))?;
    let mut buf = Vec::new();
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| format!("{shown}: member {i}: {e}"))?;
        let name = String::from_utf8_lossy(member.name_raw()).into_owned();
        if member.is_dir() || !name.to_ascii_lowercase().ends_with(".json") {
            continue;
        }
        let what = format!("{shown}!{name}");
        if member.size() > limits.max_record_bytes {
            report.reject(
                &what,
                format!(
                    "{} bytes, over the limit of {}",
                    member.size(),
                    limits.max_record_bytes
                ),
            );
            continue;
        }
        buf.clear();
        // `size` is what the archive claims; the read is bounded whatever it claims.
        (&mut member)
            .take(limits.max_record_bytes + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{what}: {e}"))?;
        if buf.len() as u64 > limits.max_record_bytes {
            report.reject(&what, "larger than its size in the archive says".into());
            continue;
        }
        osv_record(&buf, &what, report, each)?;
    }
    Ok(())
}
