//! The OpenAPI document served at `/api/v1/openapi.json` against the router: every
//! `/api/v1` route and `/auth/token` with each of its methods is documented, and the document
//! names no path or method the router lacks. The router is read from `src/lib.rs` as text, so
//! this needs no running server.

use std::collections::BTreeSet;

use serde_json::Value;

const DOC: &str = include_str!("../src/openapi.json");
const ROUTER: &str = include_str!("../src/lib.rs");

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The concrete forms the `/api/v1/repositories/{*path}` wildcard serves.
const REPOSITORY_FORMS: [&str; 8] = [
    "/api/v1/repositories/{repository}",
    "/api/v1/repositories/{repository}/tags",
    "/api/v1/repositories/{repository}/tags/{tag}",
    "/api/v1/repositories/{repository}/artifacts",
    "/api/v1/repositories/{repository}/artifacts/{digest}",
    "/api/v1/repositories/{repository}/artifacts/{digest}/inventory",
    "/api/v1/repositories/{repository}/artifacts/{digest}/sbom",
    "/api/v1/repositories/{repository}/artifacts/{digest}/vulnerabilities",
];

/// The one form of the wildcard that takes a POST.
const SBOM_FORM: &str = "/api/v1/repositories/{repository}/artifacts/{digest}/sbom";

fn doc() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is valid JSON")
}

/// `src` without `//` and `/* */` comments (string and char literals are left alone).
fn strip_comments(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '"' => {
                out.push('"');
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' {
                        out.push(c[i]);
                        i += 1;
                    }
                    out.push(c[i]);
                    i += 1;
                }
                out.push('"');
            }
            '\'' if c.get(i + 2) == Some(&'\'') => {
                out.extend(&c[i..i + 3]);
                i += 2;
            }
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < c.len() && !(c[i] == '*' && c[i + 1] == '/') {
                    i += 1;
                }
                i += 1;
                out.push(' ');
            }
            x => out.push(x),
        }
        i += 1;
    }
    out
}

/// The text of the arguments of the call whose `(` is at `open`, up to its matching `)`,
/// skipping string and char literals.
fn call_args(src: &str, open: usize) -> &str {
    let bytes = src.as_bytes();
    assert_eq!(bytes[open], b'(');
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return &src[open + 1..i];
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced parentheses after byte {open} of lib.rs");
}

/// The names of the calls at nesting depth 0 of `expr` (`get(h).patch(h2)` gives get, patch).
fn top_level_calls(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'(' {
            // The identifier right before this parenthesis, if any.
            let end = i;
            let mut start = end;
            while start > 0
                && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_')
            {
                start -= 1;
            }
            out.push(expr[start..end].to_owned());
            i += call_args(expr, i).len() + 2;
            continue;
        }
        if c == b'"' || c == b'[' || c == b'{' {
            panic!("unexpected literal or block in a method router: {expr:?}");
        }
        i += 1;
    }
    out
}

/// Every `(path, method)` the router serves under `/api/v1` and `/auth/token`, with the
/// repositories wildcard expanded to its concrete forms.
fn routed() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut seen_paths = 0;
    let src = strip_comments(ROUTER);
    for (at, _) in src.match_indices(".route(") {
        let args = call_args(&src, at + ".route".len());
        let args = args.trim_start();
        let rest = args
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("a .route( whose path is not a literal: {args:?}"));
        let close = rest.find('"').expect("closing quote of the route path");
        let path = &rest[..close];
        if !(path.starts_with("/api/v1") || path == "/auth/token") {
            continue;
        }
        seen_paths += 1;
        let handler = rest[close + 1..]
            .trim_start()
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("no method router for {path}"));
        let methods = top_level_calls(handler);
        assert!(!methods.is_empty(), "no methods found for {path}");
        for m in &methods {
            assert!(
                METHODS.contains(&m.as_str()),
                "{path}: `{m}(` is not a method this test understands; document the route and extend the test"
            );
        }
        let paths: Vec<String> = if path == "/api/v1/repositories/{*path}" {
            REPOSITORY_FORMS.iter().map(|p| p.to_string()).collect()
        } else {
            assert!(
                !path.contains("{*"),
                "{path}: a new wildcard route needs its concrete forms here"
            );
            vec![path.to_owned()]
        };
        for p in paths {
            for m in &methods {
                // The wildcard's POST serves one form only (pushing an SBOM); the others answer
                // 405 without being documented one by one.
                if path == "/api/v1/repositories/{*path}" && m == "post" && p != SBOM_FORM {
                    continue;
                }
                assert!(out.insert((p.clone(), m.clone())), "{p} {m} routed twice");
            }
        }
    }
    assert!(
        seen_paths >= 20,
        "only {seen_paths} admin routes found; is the parser broken?"
    );
    out
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths is an object") {
        for (k, _) in item.as_object().expect("a path item is an object") {
            if METHODS.contains(&k.as_str()) {
                out.insert((path.clone(), k.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` if `v` is one.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("local $ref"))
            .unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| collect_refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

#[test]
fn document_is_well_formed() {
    let d = doc();
    let version = d["openapi"].as_str().expect("openapi is a string");
    assert!(version.starts_with("3.1"), "openapi is {version}");
    assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
    assert!(d["paths"].as_object().is_some_and(|p| !p.is_empty()));
    for s in ["basicAuth", "bearerAuth"] {
        assert!(
            d["components"]["securitySchemes"][s].is_object(),
            "no security scheme {s}"
        );
    }
    for s in [
        "Project",
        "Member",
        "User",
        "Robot",
        "RobotCreated",
        "Tag",
        "Artifact",
        "AuditEvent",
        "AuditPage",
        "Job",
        "Error",
    ] {
        assert!(d["components"]["schemas"][s].is_object(), "no schema {s}");
    }
    let mut refs = Vec::new();
    collect_refs(&d, &mut refs);
    for r in &refs {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(d.pointer(ptr).is_some(), "dangling $ref {r}");
    }
}

#[test]
fn operations_have_responses_and_path_parameters() {
    let d = doc();
    for (path, item) in d["paths"].as_object().unwrap() {
        let shared: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|p| deref(&d, p)).collect())
            .unwrap_or_default();
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, operation) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let responses = operation["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(!responses.is_empty(), "{method} {path} has no responses");
            let own: Vec<&Value> = operation
                .get("parameters")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|p| deref(&d, p)).collect())
                .unwrap_or_default();
            for name in &templated {
                assert!(
                    shared
                        .iter()
                        .chain(&own)
                        .any(|p| p["in"] == "path" && p["name"] == *name),
                    "{method} {path}: path parameter {name} is not declared"
                );
            }
        }
    }
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let routed = routed();
    let documented = documented(&doc());
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routed but not in openapi.json: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.json but not routed: {extra:?}"
    );
}

#[test]
fn route_parser_handles_line_breaks() {
    let src = strip_comments(
        "x.route(\n    \"/api/v1/a/{b}\",\n    get(h::one) /* (x */\n        .patch(h::two) // \"c(\n        .delete(h::three),\n)",
    );
    let at = src.find(".route(").unwrap();
    let args = call_args(&src, at + ".route".len());
    let handler = args.split_once(',').unwrap().1;
    assert_eq!(top_level_calls(handler), ["get", "patch", "delete"]);
}
