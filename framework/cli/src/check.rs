//! `pipe check` (validate a contract, classify changes against an older version, run it over
//! sample data) and `pipe contract export`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::ValueEnum;
use pipe_framework::config::{ConfigError, ConfigFile};
use pipe_framework::{Error, Pipeline, Registry, RunContext, RunProgress};
use pipe_quality::{Change, Contract, ContractStage, Severity};
use serde_json::{Value, json};

/// How `pipe check` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CheckFormat {
    /// For people.
    Text,
    /// One JSON document on stdout.
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…::…`): annotations on the PR.
    Github,
}

/// What `pipe check` was asked to do.
#[derive(Debug)]
pub(crate) struct CheckArgs {
    pub file: PathBuf,
    pub against: Option<String>,
    pub sample: Option<PathBuf>,
    pub format: CheckFormat,
}

/// Everything `pipe check` found; printed in the chosen format.
#[derive(Debug, Default)]
struct Findings {
    changes: Vec<Change>,
    against: Option<String>,
    sample: Option<Value>,
    sample_failures: Vec<String>,
}

/// `pipe check`: exit 0 when the contract is valid, has no breaking change against
/// `--against` and the sample (if any) would pass a real run; 1 otherwise.
pub(crate) async fn check(args: CheckArgs, registry: &Registry) -> Result<ExitCode, Error> {
    let contract = match Contract::load_any(&args.file) {
        Ok(c) => c,
        Err(e) => {
            print_invalid(&args, &e);
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut findings = Findings::default();
    if let Some(spec) = &args.against {
        let old = match load_against(spec) {
            Ok(old) => old,
            Err(e) => {
                // Positions in the old version are not positions in FILE: report the
                // whole chain as text, annotated on FILE itself.
                let e = Error::user(format!(
                    "the old contract {spec} does not load: {}",
                    e.chain().join(": ")
                ));
                print_invalid(&args, &e);
                return Ok(ExitCode::FAILURE);
            }
        };
        findings.changes = pipe_quality::diff(&old, &contract);
        findings.against = Some(spec.clone());
    }
    if let Some(sample) = &args.sample {
        match run_sample(&args.file, &contract, sample, registry).await {
            Ok((report, failures)) => {
                findings.sample = Some(report);
                findings.sample_failures = failures;
            }
            Err(e) => {
                print_invalid(
                    &args,
                    &e.context(format!("checking sample {}", sample.display())),
                );
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    let breaking = findings
        .changes
        .iter()
        .filter(|c| c.severity == Severity::Breaking)
        .count();
    let ok = breaking == 0 && findings.sample_failures.is_empty();
    match args.format {
        CheckFormat::Text => print_text(&args, &contract, &findings),
        CheckFormat::Json => print_json(&args, &contract, &findings, ok),
        CheckFormat::Github => print_github(&contract, &findings),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `pipe contract export`: the contract as a JSON Schema, to `output` or stdout.
pub(crate) fn export(file: &Path, output: Option<&Path>) -> Result<ExitCode, Error> {
    let contract = Contract::load_any(file)?;
    let schema = pipe_quality::json_schema(&contract);
    let text = serde_json::to_string_pretty(&schema)
        .map_err(|e| Error::internal(format!("cannot serialize the JSON Schema: {e}")))?;
    match output {
        Some(path) => std::fs::write(path, format!("{text}\n"))
            .map_err(|e| Error::from(e).context(format!("cannot write {}", path.display())))?,
        None => out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The old contract: a file, or `REF:PATH` read with `git show`: the contract and every
/// file it names (a pipeline's contract file, JSON Schemas) as they are at `REF`.
fn load_against(spec: &str) -> Result<Contract, Error> {
    let as_path = Path::new(spec);
    if as_path.is_file() {
        return Contract::load_any(as_path);
    }
    let Some((reference, path)) = spec.split_once(':') else {
        return Err(Error::user(format!(
            "{spec} is neither a file nor a git `REF:PATH` (e.g. origin/main:contracts/orders.toml)"
        )));
    };
    if reference.is_empty() || reference.starts_with('-') {
        return Err(Error::user(format!(
            "{spec}: `{reference}` is not a git revision"
        )));
    }
    let files = crate::git::GitFiles::new(reference);
    Contract::load_any_from(Path::new(path), &files)
}

/// Run the contract over a sample data file, reporting every rule (no rule stops the run).
/// Returns the contract stage's report and the rules that would fail a real run.
async fn run_sample(
    file: &Path,
    contract: &Contract,
    sample: &Path,
    registry: &Registry,
) -> Result<(Value, Vec<String>), Error> {
    let config = sample_pipeline(file, sample, registry)?;
    let mut pipeline = Pipeline::from_file(&config, registry)?;
    pipeline.stages = vec![Box::new(ContractStage::audit(contract.clone()))];
    let result = pipe_framework::runtime::run(
        pipeline,
        RunContext::new("pipe-check"),
        Arc::new(RunProgress::default()),
    )
    .await;
    if let Some(e) = result.error {
        return Err(e);
    }
    let report = result
        .summary
        .stages
        .iter()
        .find(|s| s.stage == "contract")
        .map(|s| {
            let mut detail = s.detail.clone();
            if let Some(obj) = detail.as_object_mut() {
                obj.insert("sample".into(), json!(sample));
                obj.insert("rows".into(), json!(s.rows_in));
            }
            detail
        })
        .ok_or_else(|| Error::internal("the contract stage reported nothing"))?;
    // The stage itself says what would have stopped a real run.
    let failures = report["would_fail"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    Ok((report, failures))
}

/// A pipeline reading `sample` into the null destination, with a source the registry picks:
/// the pipeline's own source type with its options (column types, CSV dialect) when it reads
/// files, so the sample is read the way a real run reads its data; else any source that
/// reads files.
fn sample_pipeline(file: &Path, sample: &Path, registry: &Registry) -> Result<ConfigFile, Error> {
    let absolute = std::fs::canonicalize(sample)
        .map_err(|e| Error::user(format!("sample file {}: {e}", sample.display())))?;
    let own = pipe_framework::config::read_text(file)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|mut root| match root.remove("source") {
            Some(toml::Value::Table(own)) => Some(own),
            _ => None,
        });
    let source = registry
        .sample_source(own.as_ref(), &absolute)
        .ok_or_else(|| Error::user("no registered source reads data files for --sample"))?;
    let mut destination = toml::Table::new();
    destination.insert("type".into(), "null".into());
    let mut root = toml::Table::new();
    root.insert("name".into(), "pipe-check".into());
    root.insert("source".into(), source.into());
    root.insert("destination".into(), destination.into());
    let text = toml::to_string(&root)
        .map_err(|e| Error::internal(format!("cannot write the sample pipeline: {e}")))?;
    Ok(ConfigFile::new(
        format!("{} --sample", file.display()),
        text,
    ))
}

/// Where an error points in a file, if it is a located configuration error.
fn location(e: &Error) -> Option<&ConfigError> {
    e.find_source::<ConfigError>()
}

fn print_invalid(args: &CheckArgs, e: &Error) {
    match args.format {
        CheckFormat::Text => crate::output::print_error(e),
        CheckFormat::Json => {
            let at = location(e);
            crate::output::print_json(&json!({
                "file": args.file,
                "valid": false,
                "ok": false,
                "error": {
                    "message": e.chain().join(": "),
                    "file": at.map(|l| l.file.clone()),
                    "line": at.map(|l| l.line),
                    "column": at.map(|l| l.column),
                    "key": at.map(|l| l.key.clone()),
                },
            }));
        }
        CheckFormat::Github => {
            let (file, line, col, message) = match location(e) {
                Some(l) => (
                    l.file.display().to_string(),
                    l.line,
                    l.column,
                    format_located(l),
                ),
                None => (args.file.display().to_string(), 1, 1, e.chain().join(": ")),
            };
            out!(
                "::error file={},line={line},col={col},title={}::{}",
                property(&file),
                property("invalid contract"),
                data(&message)
            );
        }
    }
}

fn format_located(l: &ConfigError) -> String {
    if l.key.is_empty() {
        l.message.clone()
    } else {
        format!("`{}`: {}", l.key, l.message)
    }
}

fn print_text(args: &CheckArgs, contract: &Contract, f: &Findings) {
    let spec = contract.spec();
    let version = spec
        .version
        .as_ref()
        .map(|v| format!(" {}", v.get_ref()))
        .unwrap_or_default();
    let owner = spec
        .owner
        .as_ref()
        .map(|o| format!(", owner {o}"))
        .unwrap_or_default();
    out!(
        "{}: valid contract{version}{owner}, {} rules",
        args.file.display(),
        contract.rules().len()
    );
    for r in contract.rules() {
        out!(
            "  {:<38} {:<10} {}",
            r.name,
            r.action.as_str(),
            r.kind.code()
        );
    }
    if let Some(against) = &f.against {
        let breaking = f
            .changes
            .iter()
            .filter(|c| c.severity == Severity::Breaking)
            .count();
        out!(
            "against {against}: {breaking} breaking, {} non-breaking change(s)",
            f.changes.len() - breaking
        );
        for c in &f.changes {
            let label = match c.severity {
                Severity::Breaking => "BREAKING",
                Severity::NonBreaking => "ok",
            };
            out!(
                "  {label:<9} {:<24} {} (line {})",
                c.code,
                c.message,
                c.line
            );
        }
    }
    if let Some(report) = &f.sample {
        out!(
            "sample {}: {} rows, {} violating",
            report["sample"].as_str().unwrap_or("?"),
            report["rows"].as_u64().unwrap_or(0),
            report["rows_violating"].as_u64().unwrap_or(0)
        );
        out!(
            "  {:<38} {:<10} {:>9} {:>12}",
            "rule",
            "action",
            "checked",
            "failed"
        );
        for rule in report["rules"].as_array().into_iter().flatten() {
            crate::output::print_rule(rule);
            for s in rule["samples"].as_array().into_iter().flatten() {
                out!("      {}", s.as_str().unwrap_or("?"));
            }
        }
        if !f.sample_failures.is_empty() {
            out!(
                "a run over this sample would fail: {}",
                f.sample_failures.join(", ")
            );
        }
    }
}

fn print_json(args: &CheckArgs, contract: &Contract, f: &Findings, ok: bool) {
    let rules: Vec<Value> = contract
        .rules()
        .iter()
        .map(|r| json!({"rule": r.name, "kind": r.kind.code(), "columns": r.columns, "on_violation": r.action}))
        .collect();
    let breaking = f
        .changes
        .iter()
        .filter(|c| c.severity == Severity::Breaking)
        .count();
    crate::output::print_json(&json!({
        "file": args.file,
        "valid": true,
        "ok": ok,
        "version": contract.spec().version.as_ref().map(|v| v.get_ref()),
        "rules": rules,
        "against": f.against,
        "breaking": breaking,
        "changes": f.changes,
        "sample": f.sample,
        "sample_failures": f.sample_failures,
    }));
}

fn print_github(contract: &Contract, f: &Findings) {
    let file = property(&contract.file().path().display().to_string());
    for c in &f.changes {
        let level = match c.severity {
            Severity::Breaking => "error",
            Severity::NonBreaking => "notice",
        };
        out!(
            "::{level} file={file},line={},col={},title={}::{}",
            c.line,
            c.col,
            property(&format!(
                "{} change {}",
                if level == "error" {
                    "breaking"
                } else {
                    "non-breaking"
                },
                c.code
            )),
            data(&c.message)
        );
    }
    if let Some(report) = &f.sample {
        for rule in report["rules"].as_array().into_iter().flatten() {
            let name = rule["rule"].as_str().unwrap_or("?");
            let failed = rule["rows_failed"].as_u64().unwrap_or(0);
            let violation = rule["violation"].as_str();
            if failed == 0 && violation.is_none() {
                continue;
            }
            let level = if f.sample_failures.iter().any(|r| r == name) {
                "error"
            } else {
                "warning"
            };
            let (line, col) =
                contract
                    .rules()
                    .iter()
                    .find(|r| r.name == name)
                    .map_or((1, 1), |r| {
                        let at = contract.file().locate(r.span.clone(), "", "");
                        (at.line, at.column)
                    });
            let samples: Vec<&str> = rule["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            let message = match violation {
                Some(v) => v.to_string(),
                None => format!(
                    "{failed} of {} sample rows failed; {}",
                    rule["rows_checked"].as_u64().unwrap_or(0),
                    samples.join("; ")
                ),
            };
            out!(
                "::{level} file={file},line={line},col={col},title={}::{}",
                property(&format!("contract rule {name}")),
                data(&message)
            );
        }
    }
    if f.changes.is_empty() && f.sample.is_none() {
        out!(
            "::notice file={file},title=contract::valid, {} rules",
            contract.rules().len()
        );
    }
}

/// Escape a workflow command's message.
fn data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escape a workflow command's property value.
fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}
