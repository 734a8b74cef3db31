//! The configuration file of `serve --config FILE` and the default file
//! `socket-gateway config --print-default` writes.
//!
//! The file's keys are the `serve` flags without their `--` (`drain-period =
//! 10000`, `redis-url = "redis://…"`): the list is read from the clap
//! definition in `cli`, so a new flag is a new key with nothing to add here.
//! A value applies only where neither the command line nor the flag's
//! environment variable gave one (flags and env override the file). An
//! unknown key, or a value of the wrong shape, is an error naming the key.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// Flags that are not configuration (they are never keys of the file).
const NOT_KEYS: &[&str] = &["help", "version", "config"];

/// Parses the command line (and the file of `serve --config`, when given).
pub fn parse() -> Result<Cli, String> {
    parse_from(std::env::args_os().collect())
}

/// [`parse`] for given arguments (the program name first). Clap's own errors
/// (and `--help`) exit the process as `Cli::parse` does.
pub fn parse_from(args: Vec<OsString>) -> Result<Cli, String> {
    let matches = Cli::command().get_matches_from(args.clone());
    let Some(("serve", serve)) = matches.subcommand() else {
        return Cli::from_arg_matches(&matches).map_err(|e| e.to_string());
    };
    let Some(path) = serve.get_one::<std::path::PathBuf>("config") else {
        return Cli::from_arg_matches(&matches).map_err(|e| e.to_string());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let extra = file_args(&text, serve).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let mut all = args;
    all.extend(extra.into_iter().map(OsString::from));
    let matches = Cli::command()
        .try_get_matches_from(all)
        .map_err(|e| format!("--config {}: {e}", path.display()))?;
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// The `serve` subcommand's definition.
fn serve_command() -> Command {
    Cli::command()
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

/// The command-line arguments a file's text stands for: one `--key value`
/// per key (repeated for an array) whose flag the command line and the
/// environment left unset.
fn file_args(text: &str, given: &ArgMatches) -> Result<Vec<String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let cmd = serve_command();
    let mut out = Vec::new();
    for (key, value) in &table {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                format!("unknown key `{key}` (the keys are the serve flags without `--`, e.g. `drain-period`)")
            })?;
        let id = arg.get_id().as_str();
        if matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = format!("--{key}");
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let items: Vec<&toml::Value> = match value {
            toml::Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in items {
            let s = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) if switch => {
                    if *b {
                        out.push(flag.clone());
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "key `{key}`: expected a string, number, boolean or an array of them"
                    ))
                }
            };
            if switch {
                return Err(format!("key `{key}`: expected true or false"));
            }
            out.push(flag.clone());
            out.push(s);
        }
    }
    Ok(out)
}

/// A complete configuration file with every key: its help as a comment,
/// and its default value (commented out when the flag has none).
pub fn default_file() -> String {
    let cmd = serve_command();
    let mut out = String::from(
        "# socket-gateway configuration: `socket-gateway serve --config FILE`.\n\
         # Each key is a serve flag without `--`; a flag or its environment\n\
         # variable (SOCKET_GATEWAY_<KEY>) overrides the value here.\n",
    );
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_KEYS.contains(&long) || arg.is_hide_set() {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for line in help.lines() {
            out.push_str(format!("# {line}").trim_end());
            out.push('\n');
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if switch {
            out.push_str(&format!("{long} = false\n"));
        } else if defaults.is_empty() {
            out.push_str(&format!("# {long} = \n"));
        } else if defaults.len() == 1 {
            out.push_str(&format!("{long} = {}\n", toml_value(&defaults[0])));
        } else {
            let items: Vec<String> = defaults.iter().map(|d| toml_value(d)).collect();
            out.push_str(&format!("{long} = [{}]\n", items.join(", ")));
        }
    }
    out
}

/// A default value as TOML: numbers and booleans bare, the rest quoted.
fn toml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_string()
    } else {
        // A JSON string is a valid TOML basic string (same escapes).
        serde_json::to_string(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command as Sub;

    fn serve(args: &[&str], file: Option<&str>) -> Result<String, String> {
        let dir = std::env::temp_dir().join(format!(
            "sgw-config-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut argv: Vec<OsString> = vec!["socket-gateway".into(), "serve".into()];
        if let Some(text) = file {
            std::fs::write(&dir, text).unwrap();
            argv.push("--config".into());
            argv.push(dir.clone().into());
        }
        argv.extend(args.iter().map(OsString::from));
        let r = parse_from(argv);
        let _ = std::fs::remove_file(&dir);
        match r?.command {
            Sub::Serve(mut a) => {
                a.config = None;
                Ok(format!("{a:?}"))
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_default_file_round_trips() {
        let text = default_file();
        let table: toml::Table = toml::from_str(&text).expect("valid TOML");
        assert!(table.contains_key("drain-period"), "{text}");
        assert!(text.contains("# redis-url = "), "{text}");
        assert_eq!(serve(&[], Some(&text)).unwrap(), serve(&[], None).unwrap());
    }

    #[test]
    fn a_file_sets_a_flag_and_a_flag_overrides_it() {
        let file = "drain-period = 7000\nno-pin = true\ncors-origin = [\"https://a.example\", \"https://b.example\"]\n";
        let from_file = serve(&[], Some(file)).unwrap();
        assert!(from_file.contains("drain_period: 7000"), "{from_file}");
        assert!(from_file.contains("no_pin: true"), "{from_file}");
        assert!(
            from_file.contains("\"https://a.example\", \"https://b.example\""),
            "{from_file}"
        );
        let flag = serve(&["--drain-period", "9000"], Some(file)).unwrap();
        assert!(flag.contains("drain_period: 9000"), "{flag}");
        assert!(flag.contains("no_pin: true"), "{flag}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = serve(&[], Some("drain-periodd = 1\n")).unwrap_err();
        assert!(e.contains("unknown key `drain-periodd`"), "{e}");
        let e = serve(&[], Some("config = \"x\"\n")).unwrap_err();
        assert!(e.contains("unknown key `config`"), "{e}");
        let e = serve(&[], Some("[redis]\nurl = \"x\"\n")).unwrap_err();
        assert!(e.contains("unknown key `redis`"), "{e}");
        let e = serve(&[], Some("no-pin = \"yes\"\n")).unwrap_err();
        assert!(e.contains("key `no-pin`"), "{e}");
        let e = serve(&[], Some("drain-period = \"soon\"\n")).unwrap_err();
        assert!(e.contains("drain-period"), "{e}");
    }
}
