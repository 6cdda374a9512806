//! Ruby gems installed by RubyGems (or Bundler), from the specification written for each
//! installed gem: `<gem home>/specifications/<name>-<version>[-<platform>].gemspec`, and the
//! default gems that ship with Ruby, `<gem home>/specifications/default/*.gemspec`. A gem's
//! own `*.gemspec` inside its source tree (`gems/<name>-<version>/`) is not read: it is not a
//! record of an installation and would list the gem twice.
//!
//! An installed gemspec is Ruby source that `Gem::Specification#to_ruby` wrote. It is read as
//! text, never evaluated:
//! - `<var>.name = …` and `<var>.version = …`, the first of each whose value is a string literal
//!   (`"x"`, `'x'`, `%q{x}`, with or without `.freeze`) or `Gem::Version.new(<literal>)`;
//! - `<var>.licenses = [<literals>]` or `<var>.license = <literal>`;
//! - `<var>.platform = <literal>` as the package's arch, unless it is `ruby` (pure Ruby).
//!
//! When the name or the version is not a literal (a hand-written gemspec computing them), the
//! `# stub: <name> <version> <platform> <require paths>` line RubyGems writes first gives them.

use crate::{Ecosystem, Package, ParseError};

/// Whether `path` is a gemspec in a `specifications/` (or `specifications/default/`)
/// directory.
pub fn wants(path: &str) -> bool {
    let mut parts = path.rsplit('/');
    let (Some(file), Some(parent)) = (parts.next(), parts.next()) else {
        return false;
    };
    let in_specifications = parent == "specifications"
        || (parent == "default" && parts.next() == Some("specifications"));
    in_specifications && file.len() > ".gemspec".len() && file.ends_with(".gemspec")
}

/// The gem an installed gemspec describes.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let text = String::from_utf8_lossy(data);
    let mut name = None;
    let mut version = None;
    let mut licenses: Option<Vec<String>> = None;
    let mut platform = None;
    let mut stub = None;

    for line in text.lines() {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix('#') {
            if stub.is_none()
                && let Some(fields) = comment.trim_start().strip_prefix("stub:")
            {
                stub = Some(
                    fields
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
            }
            continue;
        }
        let Some((attribute, value)) = assignment(line) else {
            continue;
        };
        match attribute {
            "name" if name.is_none() => name = string_value(value),
            "version" if version.is_none() => version = version_value(value),
            "licenses" | "license" if licenses.is_none() => licenses = license_values(value),
            "platform" if platform.is_none() => platform = string_value(value),
            _ => {}
        }
    }

    let stub = stub.unwrap_or_default();
    let name = name
        .or_else(|| stub.first().cloned())
        .filter(|n| !n.is_empty());
    let version = version
        .or_else(|| stub.get(1).cloned())
        .filter(|v| !v.is_empty());
    let (Some(name), Some(version)) = (name, version) else {
        return Err(ParseError::new(
            path,
            "no literal gem name and version, and no `# stub:` line",
        ));
    };
    let mut package = Package::new(Ecosystem::Gem, &name, &version, path);
    package.licenses = licenses.unwrap_or_default();
    package.arch = platform
        .or_else(|| stub.get(2).cloned())
        .filter(|p| !p.is_empty() && p != "ruby");
    Ok(vec![package])
}

/// `(attribute, value)` of a `<receiver>.<attribute> = <value>` line, the receiver a plain
/// local variable (so `s.metadata["name"] = …` and comparisons are not taken).
fn assignment(line: &str) -> Option<(&str, &str)> {
    let (receiver, rest) = line.split_once('.')?;
    if receiver.is_empty() || !receiver.bytes().all(is_identifier_byte) {
        return None;
    }
    let end = rest
        .bytes()
        .position(|b| !is_identifier_byte(b))
        .unwrap_or(rest.len());
    let (attribute, rest) = rest.split_at(end);
    let value = rest.trim_start().strip_prefix('=')?;
    if value.starts_with(['=', '~']) {
        return None;
    }
    Some((attribute, value.trim_start()))
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn string_value(value: &str) -> Option<String> {
    string_literal(value).map(|(text, _)| text)
}

/// RubyGems writes `"1.2.3".freeze`; older versions wrote `Gem::Version.new("1.2.3")`.
fn version_value(value: &str) -> Option<String> {
    match value.strip_prefix("Gem::Version.new") {
        Some(call) => {
            let inner = call.trim_start().strip_prefix('(')?;
            let (text, rest) = string_literal(inner.trim_start())?;
            rest.trim_start().starts_with(')').then_some(text)
        }
        None => string_value(value),
    }
}

/// `["MIT".freeze, "Ruby".freeze]`, or a single literal.
fn license_values(value: &str) -> Option<Vec<String>> {
    let Some(mut rest) = value.strip_prefix('[') else {
        return string_value(value).map(|license| vec![license]);
    };
    let mut licenses = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.starts_with(']') {
            return Some(licenses);
        }
        let (license, after) = string_literal(rest)?;
        licenses.push(license);
        rest = after.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A Ruby string literal at the start of `source`, and the source after it (and after a
/// `.freeze`).
fn string_literal(source: &str) -> Option<(String, &str)> {
    let mut chars = source.char_indices();
    let (text, end) = match chars.next()? {
        (_, '"') => quoted(source, 1, '"', true)?,
        (_, '\'') => quoted(source, 1, '\'', false)?,
        (_, '%') => {
            let (kind_or_open, rest) = source[1..].split_at_checked(1)?;
            let (interpolating, open, start) = match kind_or_open {
                "q" => (false, rest.chars().next()?, 3),
                "Q" => (true, rest.chars().next()?, 3),
                _ => (true, kind_or_open.chars().next()?, 2),
            };
            if open.is_alphanumeric() || open.is_whitespace() {
                return None;
            }
            percent_literal(source, start, open, interpolating)?
        }
        _ => return None,
    };
    let rest = &source[end..];
    let rest = rest.strip_prefix(".freeze").unwrap_or(rest);
    Some((text, rest))
}

/// A `"…"` or `'…'` literal whose body starts at `start`; returns the text and the index after
/// the closing quote.
fn quoted(source: &str, start: usize, close: char, double: bool) -> Option<(String, usize)> {
    let mut text = String::new();
    let mut chars = source.get(start..)?.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == close {
            return Some((text, start + at + c.len_utf8()));
        }
        if c != '\\' {
            text.push(c);
            continue;
        }
        let (_, escaped) = chars.next()?;
        match escaped {
            'n' if double => text.push('\n'),
            't' if double => text.push('\t'),
            c if double || c == '\\' || c == close => text.push(c),
            c => {
                // In single quotes a backslash before anything else stays.
                text.push('\\');
                text.push(c);
            }
        }
    }
    None
}

/// A `%q{…}`-style literal: brackets nest, other delimiters close at their next occurrence.
fn percent_literal(
    source: &str,
    start: usize,
    open: char,
    interpolating: bool,
) -> Option<(String, usize)> {
    let close = match open {
        '(' => ')',
        '[' => ']',
        '{' => '}',
        '<' => '>',
        other => other,
    };
    let mut depth = 0usize;
    let mut text = String::new();
    let mut chars = source.get(start..)?.char_indices();
    while let Some((at, c)) = chars.next() {
        if c == '\\' {
            let (_, escaped) = chars.next()?;
            if escaped == open || escaped == close || escaped == '\\' || interpolating {
                text.push(escaped);
            } else {
                text.push('\\');
                text.push(escaped);
            }
            continue;
        }
        if c == close && depth == 0 {
            return Some((text, start + at + c.len_utf8()));
        }
        if open != close {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
            }
        }
        text.push(c);
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// As `gem install` (RubyGems 3.4) writes it.
    const CURRENT: &str = r#"# -*- encoding: utf-8 -*-
# stub: nokogiri 1.15.4 x86_64-linux lib

Gem::Specification.new do |s|
  s.name = "nokogiri".freeze
  s.version = "1.15.4".freeze
  s.platform = "x86_64-linux".freeze

  s.required_rubygems_version = Gem::Requirement.new(">= 3.3.22".freeze) if s.respond_to? :required_rubygems_version=
  s.metadata = { "bug_tracker_uri" => "https://example.org/issues", "rubygems_mfa_required" => "true" } if s.respond_to? :metadata=
  s.require_paths = ["lib".freeze]
  s.authors = ["A. Author".freeze, "B. Author".freeze]
  s.date = "2023-08-11"
  s.description = "Parses \"HTML\" and XML.\n".freeze
  s.email = ["maintainers@example.org".freeze]
  s.homepage = "https://example.org/nokogiri".freeze
  s.licenses = ["MIT".freeze]
  s.required_ruby_version = Gem::Requirement.new([">= 2.7".freeze, "< 3.3.dev".freeze])
  s.rubygems_version = "3.4.19".freeze
  s.summary = "An HTML, XML, SAX, and Reader parser.".freeze

  s.installed_by_version = "3.4.19" if s.respond_to? :installed_by_version

  s.specification_version = 4

  s.add_runtime_dependency(%q<racc>.freeze, ["~> 1.4"])
end
"#;

    /// As RubyGems 1.8 wrote it.
    const OLD: &str = r#"# -*- encoding: utf-8 -*-

Gem::Specification.new do |s|
  s.name = %q{json_pure}
  s.version = Gem::Version.new("1.5.5")

  s.required_rubygems_version = Gem::Requirement.new(">= 0") if s.respond_to? :required_rubygems_version=
  s.authors = [%q{Florian Frank}]
  s.date = %q{2013-02-11}
  s.license = %q{Ruby}
  s.require_paths = [%q{lib}]
  s.rubygems_version = %q{1.8.23}
  s.summary = %q{JSON Implementation for Ruby}

  if s.respond_to? :specification_version then
    s.specification_version = 3
  end
end
"#;

    #[test]
    fn current_rubygems() {
        let path = "usr/local/bundle/specifications/nokogiri-1.15.4-x86_64-linux.gemspec";
        let packages = parse(path, CURRENT.as_bytes()).expect("valid gemspec");
        let mut expected = Package::new(Ecosystem::Gem, "nokogiri", "1.15.4", path);
        expected.licenses = vec!["MIT".to_owned()];
        expected.arch = Some("x86_64-linux".to_owned());
        assert_eq!(packages, vec![expected]);
    }

    #[test]
    fn old_rubygems() {
        let path = "var/lib/gems/1.9.1/specifications/json_pure-1.5.5.gemspec";
        let packages = parse(path, OLD.as_bytes()).expect("valid gemspec");
        let mut expected = Package::new(Ecosystem::Gem, "json_pure", "1.5.5", path);
        expected.licenses = vec!["Ruby".to_owned()];
        assert_eq!(packages, vec![expected]);
    }

    #[test]
    fn default_gem_with_single_quotes_and_several_licences() {
        let text = "# stub: json 2.6.3 ruby lib\nGem::Specification.new do |spec|\n  spec.name = 'json'\n  spec.version = '2.6.3'\n  spec.licenses = ['Ruby', \"BSD-2-Clause\".freeze]\n  spec.platform = \"ruby\".freeze\nend\n";
        let path = "usr/lib/ruby/gems/3.2.0/specifications/default/json-2.6.3.gemspec";
        assert!(wants(path));
        let packages = parse(path, text.as_bytes()).expect("valid gemspec");
        assert_eq!(packages[0].name, "json");
        assert_eq!(packages[0].version, "2.6.3");
        assert_eq!(packages[0].licenses, ["Ruby", "BSD-2-Clause"]);
        assert_eq!(packages[0].arch, None);
    }

    #[test]
    fn computed_version_falls_back_to_the_stub_line() {
        let text = "# stub: rack 3.0.8 ruby lib\nGem::Specification.new do |s|\n  s.name = \"rack\"\n  s.version = Rack::RELEASE\nend\n";
        let packages = parse("g/specifications/rack-3.0.8.gemspec", text.as_bytes()).expect("stub");
        assert_eq!(packages[0].version, "3.0.8");
        assert_eq!(packages[0].arch, None);

        let error = parse(
            "g/specifications/x.gemspec",
            b"Gem::Specification.new do |s|\n  s.name = NAME\nend\n",
        )
        .expect_err("nothing literal");
        assert_eq!(error.path, "g/specifications/x.gemspec");
    }

    #[test]
    fn literals() {
        assert_eq!(
            string_literal(r#""a\"b\\c".freeze rest"#),
            Some(("a\"b\\c".to_owned(), " rest"))
        );
        assert_eq!(
            string_literal(r"'it\'s \n'"),
            Some(("it's \\n".to_owned(), ""))
        );
        assert_eq!(string_literal("%q<a<b>c>"), Some(("a<b>c".to_owned(), "")));
        assert_eq!(string_literal("%(x)"), Some(("x".to_owned(), "")));
        assert_eq!(string_literal("%q|x|.freeze"), Some(("x".to_owned(), "")));
        assert_eq!(string_literal("\"unterminated"), None);
        assert_eq!(string_literal("%"), None);
        assert_eq!(string_literal("%qé"), None);
        assert_eq!(assignment("s.name == \"x\""), None);
        assert_eq!(assignment("s.metadata[\"name\"] = \"x\""), None);
        assert_eq!(assignment("Gem::Specification.new do |s|"), None);
    }

    #[test]
    fn wanted_paths() {
        assert!(wants("usr/local/bundle/specifications/rake-13.0.6.gemspec"));
        assert!(wants("specifications/rake-13.0.6.gemspec"));
        assert!(!wants("usr/local/bundle/gems/rake-13.0.6/rake.gemspec"));
        assert!(!wants("usr/local/bundle/specifications/.gemspec"));
        assert!(!wants("a/default/x.gemspec"));
        assert!(!wants("rake.gemspec"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse("specifications/x.gemspec", &data);
        }

        #[test]
        fn arbitrary_lines_never_panic(line in "[ -~]{0,60}") {
            let text = format!("  s.name = {line}\n  s.version = {line}\n  s.licenses = {line}\n");
            let _ = parse("specifications/x.gemspec", text.as_bytes());
            let _ = string_literal(&line);
        }
    }
}
