//! CVSS vectors and the severities derived from them: parses v2.0, v3.0, v3.1 and v4.0 vector
//! strings, computes their scores and maps both scores and the severity words of distributions
//! and advisories onto one [`Severity`] scale that the vulnerability matcher sorts by.
//!
//! The equations, v4.0 lookup tables and rounding rules come from RustSec's `cvss` crate, which
//! tracks FIRST's reference calculators; this module adds the check that crate leaves out (a
//! v3 vector must carry all eight base metrics) and one error type. Parsing is as lenient as
//! the crate and the v3.1 specification ("programs reading vector strings must accept metrics
//! in any order"): metric order and letter case do not matter, but unknown metrics, unknown
//! values, duplicates and missing base metrics are errors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Qualitative severity of a vulnerability, from a CVSS score or a vendor's word.
///
/// Ordered from least to most severe, so `max()` over a record's ratings picks the worst one;
/// `Unknown` sorts lowest because it carries no information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Unknown,
    None,
    Negligible,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// The qualitative rating of a CVSS score.
    ///
    /// v3.x and v4.0 (their specifications' rating scale): 0.0 None, 0.1-3.9 Low,
    /// 4.0-6.9 Medium, 7.0-8.9 High, 9.0-10.0 Critical. v2.0 defines no scale; NVD's is used:
    /// 0.0-3.9 Low, 4.0-6.9 Medium, 7.0-10.0 High. A score outside 0.0..=10.0 (or NaN) is
    /// `Unknown`.
    pub fn from_score(version: CvssVersion, score: f64) -> Severity {
        if !(0.0..=10.0).contains(&score) {
            return Severity::Unknown;
        }
        match version {
            CvssVersion::V2 if score < 4.0 => Severity::Low,
            CvssVersion::V2 if score < 7.0 => Severity::Medium,
            CvssVersion::V2 => Severity::High,
            _ if score < 0.1 => Severity::None,
            _ if score < 4.0 => Severity::Low,
            _ if score < 7.0 => Severity::Medium,
            _ if score < 9.0 => Severity::High,
            _ => Severity::Critical,
        }
    }

    /// The severity named by a distribution's or an advisory database's word, case-insensitive.
    ///
    /// Covers GHSA and OSV ("critical", "high", "moderate", "low"), Red Hat ("important"),
    /// Ubuntu ("negligible", "untriaged") and the Debian security tracker, whose urgency may
    /// carry trailing asterisks ("low**") and whose "unimportant" is Low, as Trivy maps it;
    /// "not yet assigned" and "end-of-life" say nothing about severity and are `Unknown`.
    /// `None` for a word it does not know.
    pub fn from_word(word: &str) -> Option<Severity> {
        let word = word
            .trim()
            .trim_end_matches('*')
            .trim_end()
            .to_ascii_lowercase();
        let severity = match word.as_str() {
            "critical" => Severity::Critical,
            "high" | "important" => Severity::High,
            "medium" | "moderate" => Severity::Medium,
            "low" | "unimportant" => Severity::Low,
            "negligible" => Severity::Negligible,
            "none" => Severity::None,
            "unknown" | "not yet assigned" | "end-of-life" | "untriaged" => Severity::Unknown,
            _ => return None,
        };
        Some(severity)
    }

    /// The lowercase name, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::None => "none",
            Severity::Negligible => "negligible",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CVSS version a vector is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CvssVersion {
    V2,
    V3_0,
    V3_1,
    V4_0,
}

/// A parsed vector with its score and rating.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub version: CvssVersion,
    /// The vector as given, without surrounding whitespace and parentheses.
    pub vector: String,
    /// v2.0 and v3.x: the base score (temporal and environmental metrics in the vector do not
    /// change it). v4.0: the score of all metrics present (CVSS-B, -BT, -BE or -BTE), as
    /// FIRST's calculator shows it; v4.0 has no separate base score once threat or
    /// environmental metrics are given.
    pub base_score: f64,
    /// [`Severity::from_score`] of `base_score`.
    pub severity: Severity,
}

/// A string that is not a valid CVSS vector, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CVSS vector {vector:?}: {reason}")]
pub struct InvalidVector {
    pub vector: String,
    pub reason: String,
}

/// Parses a CVSS vector and computes its score.
///
/// Accepts `CVSS:3.0/...`, `CVSS:3.1/...`, `CVSS:4.0/...` and prefix-less v2.0 vectors such as
/// `AV:N/AC:L/Au:N/C:P/I:P/A:P`, each optionally in parentheses (as NVD wrote v2 vectors).
pub fn score(vector: &str) -> Result<Score, InvalidVector> {
    let invalid = |reason: String| InvalidVector {
        vector: vector.to_owned(),
        reason,
    };
    let text = unwrap_parentheses(vector.trim());
    let parsed: cvss::Cvss = text
        .parse()
        .map_err(|e: cvss::Error| invalid(e.to_string()))?;
    let (version, base_score) = match &parsed {
        cvss::Cvss::CvssV20(v) => (CvssVersion::V2, v.score().value()),
        cvss::Cvss::CvssV30(v) => {
            require_v3_base_metrics(v).map_err(invalid)?;
            (CvssVersion::V3_0, v.base_score().value())
        }
        cvss::Cvss::CvssV31(v) => {
            require_v3_base_metrics(v).map_err(invalid)?;
            (CvssVersion::V3_1, v.base_score().value())
        }
        cvss::Cvss::CvssV40(v) => (CvssVersion::V4_0, v.score().value()),
        // `Cvss` is non-exhaustive; a version this module does not know yet is not scored.
        _ => return Err(invalid("unsupported CVSS version".to_owned())),
    };
    Ok(Score {
        version,
        vector: text.to_owned(),
        base_score,
        severity: Severity::from_score(version, base_score),
    })
}

fn unwrap_parentheses(text: &str) -> &str {
    text.strip_prefix('(')
        .and_then(|inner| inner.strip_suffix(')'))
        .map_or(text, str::trim)
}

/// The crate scores a missing v3 base metric as 0 instead of rejecting the vector (its v2 and
/// v4 parsers do reject); the specification requires all eight.
fn require_v3_base_metrics(v: &cvss::v3::Vector) -> Result<(), String> {
    let present = [
        ("AV", v.av.is_some()),
        ("AC", v.ac.is_some()),
        ("PR", v.pr.is_some()),
        ("UI", v.ui.is_some()),
        ("S", v.s.is_some()),
        ("C", v.c.is_some()),
        ("I", v.i.is_some()),
        ("A", v.a.is_some()),
    ];
    let missing: Vec<&str> = present
        .iter()
        .filter(|(_, is_present)| !is_present)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing mandatory CVSSv3 base metric(s) {}",
            missing.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn v2_vectors_with_and_without_parentheses() {
        for text in [
            "AV:N/AC:L/Au:N/C:P/I:P/A:P",
            "(AV:N/AC:L/Au:N/C:P/I:P/A:P)",
            " (AV:N/AC:L/Au:N/C:P/I:P/A:P) ",
        ] {
            let s = score(text).expect(text);
            assert_eq!(s.version, CvssVersion::V2);
            assert_eq!(s.base_score, 7.5);
            assert_eq!(s.severity, Severity::High);
            assert_eq!(s.vector, "AV:N/AC:L/Au:N/C:P/I:P/A:P");
        }
        // NVD: CVE-2002-0392 and a local, low-impact vector.
        assert_eq!(score("AV:N/AC:L/Au:N/C:N/I:N/A:C").unwrap().base_score, 7.8);
        assert_eq!(score("AV:L/AC:H/Au:N/C:N/I:P/A:N").unwrap().base_score, 1.2);
        let none = score("AV:N/AC:L/Au:N/C:N/I:N/A:N").unwrap();
        assert_eq!((none.base_score, none.severity), (0.0, Severity::Low));
    }

    #[test]
    fn v3_0_and_v3_1_prefixes() {
        let v30 = score("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap();
        assert_eq!(v30.version, CvssVersion::V3_0);
        assert_eq!(v30.base_score, 9.8);
        let v31 = score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H").unwrap();
        assert_eq!(v31.version, CvssVersion::V3_1);
        assert_eq!(v31.severity, Severity::Critical);
    }

    #[test]
    fn metric_order_and_case_do_not_matter() {
        let canonical = score("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N").unwrap();
        let shuffled = score("CVSS:3.1/S:C/A:N/AV:N/I:L/AC:L/C:L/UI:R/PR:N").unwrap();
        let lower = score("CVSS:3.1/av:n/ac:l/pr:n/ui:r/s:c/c:l/i:l/a:n").unwrap();
        assert_eq!(canonical.base_score, 6.1);
        assert_eq!(shuffled.base_score, 6.1);
        assert_eq!(lower.base_score, 6.1);
    }

    #[test]
    fn v4_scores_all_metrics_present() {
        let base = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H";
        assert_eq!(score(base).unwrap().base_score, 10.0);
        let threat = score(&format!("{base}/E:U")).unwrap();
        assert_eq!(threat.base_score, 9.1);
        assert_eq!(threat.severity, Severity::Critical);
        // Supplemental metrics never change the score.
        let supplemental = score(&format!("{base}/S:P/AU:Y/R:I/V:C/RE:H/U:Red")).unwrap();
        assert_eq!(supplemental.base_score, 10.0);
    }

    #[test]
    fn rejects_malformed_vectors() {
        let cases = [
            ("", "empty"),
            ("CVSS:3.1", "no metrics"),
            ("CVSS:3.1/", "trailing slash only"),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
                "trailing slash",
            ),
            ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H", "missing A"),
            ("CVSS:3.1/AV:N", "only AV"),
            (
                "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                "duplicate",
            ),
            ("CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "bad value"),
            (
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:X",
                "unknown metric",
            ),
            (
                "CVSS:3.2/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                "unknown version",
            ),
            ("CVSS:2.0/AV:N/AC:L/Au:N/C:P/I:P/A:P", "v2 has no prefix"),
            (
                "AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
                "v3 metrics without prefix",
            ),
            ("AV:N/AC:L/Au:N/C:P/I:P", "v2 missing A"),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H",
                "v4 missing SA",
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:S/SI:H/SA:H",
                "SC:S",
            ),
            (
                "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:H/SI:H/SA:H/MSC:S",
                "MSC:S",
            ),
            ("(AV:N/AC:L/Au:N/C:P/I:P/A:P", "unbalanced parenthesis"),
        ];
        for (text, why) in cases {
            let err = score(text).expect_err(why);
            assert_eq!(err.vector, text, "{why}");
            assert!(!err.reason.is_empty(), "{why}");
        }
    }

    #[test]
    fn severity_from_score_bands() {
        use CvssVersion::*;
        let cases = [
            (V3_1, 0.0, Severity::None),
            (V3_1, 0.1, Severity::Low),
            (V3_1, 3.9, Severity::Low),
            (V3_1, 4.0, Severity::Medium),
            (V3_1, 6.9, Severity::Medium),
            (V3_1, 7.0, Severity::High),
            (V3_1, 8.9, Severity::High),
            (V3_1, 9.0, Severity::Critical),
            (V3_1, 10.0, Severity::Critical),
            (V3_0, 9.0, Severity::Critical),
            (V4_0, 0.0, Severity::None),
            (V4_0, 9.3, Severity::Critical),
            (V2, 0.0, Severity::Low),
            (V2, 3.9, Severity::Low),
            (V2, 4.0, Severity::Medium),
            (V2, 6.9, Severity::Medium),
            (V2, 7.0, Severity::High),
            (V2, 10.0, Severity::High),
            (V3_1, -0.1, Severity::Unknown),
            (V3_1, 10.1, Severity::Unknown),
            (V2, f64::NAN, Severity::Unknown),
            (V4_0, f64::INFINITY, Severity::Unknown),
        ];
        for (version, value, expected) in cases {
            assert_eq!(
                Severity::from_score(version, value),
                expected,
                "{version:?} {value}"
            );
        }
    }

    #[test]
    fn severity_from_word() {
        let cases = [
            ("critical", Some(Severity::Critical)),
            ("CRITICAL", Some(Severity::Critical)),
            ("High", Some(Severity::High)),
            ("important", Some(Severity::High)),
            ("moderate", Some(Severity::Medium)),
            ("MODERATE", Some(Severity::Medium)),
            ("medium", Some(Severity::Medium)),
            ("medium**", Some(Severity::Medium)),
            ("low", Some(Severity::Low)),
            ("low*", Some(Severity::Low)),
            ("unimportant", Some(Severity::Low)),
            ("negligible", Some(Severity::Negligible)),
            ("none", Some(Severity::None)),
            ("unknown", Some(Severity::Unknown)),
            ("not yet assigned", Some(Severity::Unknown)),
            ("Not Yet Assigned", Some(Severity::Unknown)),
            ("end-of-life", Some(Severity::Unknown)),
            ("untriaged", Some(Severity::Unknown)),
            (" high ", Some(Severity::High)),
            ("", None),
            ("severe", None),
            ("*", None),
        ];
        for (word, expected) in cases {
            assert_eq!(Severity::from_word(word), expected, "{word:?}");
        }
    }

    #[test]
    fn severity_names_round_trip_and_order() {
        let all = [
            Severity::Unknown,
            Severity::None,
            Severity::Negligible,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ];
        for pair in all.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for severity in all {
            assert_eq!(Severity::from_word(severity.as_str()), Some(severity));
            let json = serde_json::to_string(&severity).unwrap();
            assert_eq!(json, format!("\"{}\"", severity.as_str()));
            assert_eq!(serde_json::from_str::<Severity>(&json).unwrap(), severity);
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in any::<String>()) {
            let _ = score(&text);
        }

        #[test]
        fn never_panics_on_vector_shaped_text(
            prefix in prop::sample::select(vec!["", "CVSS:3.0/", "CVSS:3.1/", "CVSS:4.0/", "("]),
            parts in prop::collection::vec(("[A-Za-z]{1,3}", "[A-Za-z]{0,6}"), 0..40),
        ) {
            let body: Vec<String> = parts.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let _ = score(&format!("{prefix}{}", body.join("/")));
        }
    }
}
