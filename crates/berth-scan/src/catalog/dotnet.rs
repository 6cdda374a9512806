//! .NET packages, from the `<app>.deps.json` the .NET SDK writes beside an application: the
//! NuGet packages it was built with, which the host loads at run time.
//!
//! Rules (trivy's):
//! - Each `libraries` entry keyed `Name/Version` whose `type` is `package` is a package;
//!   `project` entries (the application and its own projects) are not. A `runtimepack` entry
//!   (the .NET runtime bundled into a self-contained application) is one too, named without
//!   the SDK's `runtimepack.` prefix (`Microsoft.NETCore.App.Runtime.linux-x64`), since its
//!   version is the runtime's and advisories name it so.
//! - When the target named by `runtimeTarget` lists the entry, it counts only if it has
//!   `runtime`, `runtimeTargets` or `native` assets: a package used only at build time
//!   (analyzers, reference assemblies, meta-packages) is not in the image. A library the target
//!   does not list, or a file without targets, is kept.
//!
//! Names are kept as written (NuGet compares them without regard to case).

use serde_json::{Map, Value};

use crate::{Ecosystem, Package, ParseError};

/// The prefix the SDK gives the runtime bundled into a self-contained application.
const RUNTIME_PACK_PREFIX: &str = "runtimepack.";

/// Whether `path` is a `*.deps.json`.
pub fn wants(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.len() > ".deps.json".len() && file.ends_with(".deps.json")
}

/// The packages a `.deps.json` lists.
pub fn parse(path: &str, data: &[u8]) -> Result<Vec<Package>, ParseError> {
    let document: Value = serde_json::from_slice(data)
        .map_err(|e| ParseError::new(path, format!("not JSON: {e}")))?;
    let Some(libraries) = document.get("libraries").and_then(Value::as_object) else {
        return Err(ParseError::new(path, "no \"libraries\" object"));
    };
    let target = document
        .get("runtimeTarget")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .and_then(|name| document.get("targets")?.get(name)?.as_object());

    let mut packages = Vec::new();
    for (key, library) in libraries {
        let Some((name, version)) = key.split_once('/') else {
            continue;
        };
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let kind = library.get("type").and_then(Value::as_str).unwrap_or("");
        let name = if kind.eq_ignore_ascii_case("package") {
            name
        } else if kind.eq_ignore_ascii_case("runtimepack") {
            name.strip_prefix(RUNTIME_PACK_PREFIX).unwrap_or(name)
        } else {
            continue;
        };
        if let Some(target) = target
            && !loaded_at_run_time(target, key)
        {
            continue;
        }
        packages.push(Package::new(Ecosystem::Nuget, name, version, path));
    }
    Ok(packages)
}

/// Whether the runtime target gives library `key` assets to load, or does not list it.
fn loaded_at_run_time(target: &Map<String, Value>, key: &str) -> bool {
    let Some(entry) = target.get(key) else {
        return true;
    };
    ["runtime", "runtimeTargets", "native"]
        .iter()
        .any(|section| match entry.get(section) {
            None | Some(Value::Null) => false,
            Some(Value::Object(assets)) => !assets.is_empty(),
            Some(Value::Array(assets)) => !assets.is_empty(),
            Some(_) => true,
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PATH: &str = "app/Shop.Api.deps.json";

    /// A framework-dependent ASP.NET Core 8 application, as `dotnet publish` writes it
    /// (shortened).
    const FRAMEWORK_DEPENDENT: &str = r#"{
  "runtimeTarget": {
    "name": ".NETCoreApp,Version=v8.0",
    "signature": ""
  },
  "compilationOptions": {},
  "targets": {
    ".NETCoreApp,Version=v8.0": {
      "Shop.Api/1.0.0": {
        "dependencies": {
          "Newtonsoft.Json": "13.0.3",
          "Shop.Data": "1.0.0",
          "Microsoft.CodeAnalysis.NetAnalyzers": "8.0.0"
        },
        "runtime": {
          "Shop.Api.dll": {}
        }
      },
      "Newtonsoft.Json/13.0.3": {
        "runtime": {
          "lib/net6.0/Newtonsoft.Json.dll": {
            "assemblyVersion": "13.0.0.0",
            "fileVersion": "13.0.3.27908"
          }
        }
      },
      "SQLitePCLRaw.lib.e_sqlite3/2.1.6": {
        "runtimeTargets": {
          "runtimes/linux-x64/native/libe_sqlite3.so": {
            "rid": "linux-x64",
            "assetType": "native",
            "fileVersion": "0.0.0.0"
          }
        }
      },
      "Microsoft.CodeAnalysis.NetAnalyzers/8.0.0": {},
      "Shop.Data/1.0.0": {
        "runtime": {
          "Shop.Data.dll": {
            "assemblyVersion": "1.0.0",
            "fileVersion": "1.0.0.0"
          }
        }
      }
    }
  },
  "libraries": {
    "Shop.Api/1.0.0": {
      "type": "project",
      "serviceable": false,
      "sha512": ""
    },
    "Newtonsoft.Json/13.0.3": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-HrC5BXdl00IP9zeV+0Z848QWPAoCr9P3bDEZguI+gkLcBKAOxix/tLEAAHC+UvDNPv4a2d18lOReHMOagPa+zQ==",
      "path": "newtonsoft.json/13.0.3",
      "hashPath": "newtonsoft.json.13.0.3.nupkg.sha512"
    },
    "SQLitePCLRaw.lib.e_sqlite3/2.1.6": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-placeholder",
      "path": "sqlitepclraw.lib.e_sqlite3/2.1.6",
      "hashPath": "sqlitepclraw.lib.e_sqlite3.2.1.6.nupkg.sha512"
    },
    "Microsoft.CodeAnalysis.NetAnalyzers/8.0.0": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-placeholder",
      "path": "microsoft.codeanalysis.netanalyzers/8.0.0",
      "hashPath": "microsoft.codeanalysis.netanalyzers.8.0.0.nupkg.sha512"
    },
    "Shop.Data/1.0.0": {
      "type": "project",
      "serviceable": false,
      "sha512": ""
    }
  }
}"#;

    /// A self-contained application for linux-x64: the runtime comes as a runtime pack.
    const SELF_CONTAINED: &str = r#"{
  "runtimeTarget": {
    "name": ".NETCoreApp,Version=v8.0/linux-x64",
    "signature": ""
  },
  "targets": {
    ".NETCoreApp,Version=v8.0": {},
    ".NETCoreApp,Version=v8.0/linux-x64": {
      "Worker/1.0.0": {
        "dependencies": {
          "Serilog": "3.1.1"
        },
        "runtime": {
          "Worker.dll": {}
        }
      },
      "runtimepack.Microsoft.NETCore.App.Runtime.linux-x64/8.0.1": {
        "runtime": {
          "System.Private.CoreLib.dll": {
            "assemblyVersion": "8.0.0.0",
            "fileVersion": "8.0.123.58001"
          }
        },
        "native": {
          "libSystem.Native.so": {
            "fileVersion": "0.0.0.0"
          }
        }
      },
      "Serilog/3.1.1": {
        "runtime": {
          "lib/net7.0/Serilog.dll": {}
        }
      }
    }
  },
  "libraries": {
    "Worker/1.0.0": {
      "type": "project",
      "serviceable": false,
      "sha512": ""
    },
    "runtimepack.Microsoft.NETCore.App.Runtime.linux-x64/8.0.1": {
      "type": "runtimepack",
      "serviceable": false,
      "sha512": ""
    },
    "Serilog/3.1.1": {
      "type": "package",
      "serviceable": true,
      "sha512": "sha512-placeholder",
      "path": "serilog/3.1.1",
      "hashPath": "serilog.3.1.1.nupkg.sha512"
    },
    "Reference.Only/1.0.0": {
      "type": "reference",
      "serviceable": false,
      "sha512": ""
    }
  }
}"#;

    fn summary(packages: &[Package]) -> Vec<(&str, &str)> {
        let mut summary: Vec<_> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        summary.sort();
        summary
    }

    #[test]
    fn framework_dependent_application() {
        let packages = parse(PATH, FRAMEWORK_DEPENDENT.as_bytes()).expect("valid deps.json");
        assert_eq!(
            summary(&packages),
            vec![
                ("Newtonsoft.Json", "13.0.3"),
                ("SQLitePCLRaw.lib.e_sqlite3", "2.1.6"),
            ]
        );
        assert!(
            packages
                .iter()
                .all(|p| p.path == PATH && p.ecosystem == Ecosystem::Nuget && p.layer.is_none())
        );
    }

    #[test]
    fn self_contained_application() {
        let packages = parse("app/Worker.deps.json", SELF_CONTAINED.as_bytes()).expect("valid");
        assert_eq!(
            summary(&packages),
            vec![
                ("Microsoft.NETCore.App.Runtime.linux-x64", "8.0.1"),
                ("Serilog", "3.1.1"),
            ]
        );
    }

    #[test]
    fn without_targets_every_package_counts() {
        let text = r#"{"libraries": {
            "A/1.0.0": {"type": "package"},
            "B/2.0.0": {"type": "Package"},
            "C/3.0.0": {"type": "project"},
            "D": {"type": "package"},
            "E/": {"type": "package"},
            "F/1.0.0": {}
        }}"#;
        let packages = parse(PATH, text.as_bytes()).expect("valid");
        assert_eq!(summary(&packages), vec![("A", "1.0.0"), ("B", "2.0.0")]);
    }

    #[test]
    fn not_deps_json() {
        assert!(parse(PATH, b"{}").is_err());
        assert!(parse(PATH, b"{\"libraries\": []}").is_err());
        assert!(parse(PATH, b"\xff").is_err());
    }

    #[test]
    fn wanted_paths() {
        assert!(wants(PATH));
        assert!(wants("Shop.deps.json"));
        assert!(!wants("app/.deps.json"));
        assert!(!wants("app/Shop.runtimeconfig.json"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let _ = parse(PATH, &data);
        }

        #[test]
        fn arbitrary_libraries_never_panic(
            entries in proptest::collection::vec(("[A-Za-z./]{0,12}", "[a-z]{0,8}"), 0..8)
        ) {
            let libraries: Map<String, Value> = entries
                .into_iter()
                .map(|(key, kind)| (key, serde_json::json!({ "type": kind })))
                .collect();
            let document = serde_json::json!({ "libraries": libraries });
            let _ = parse(PATH, document.to_string().as_bytes());
        }
    }
}
