//! A pipeline file → its built components.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{ConfigFile, Section};
use crate::destination::{Destination, SchemaEvolution, WriteMode, WriteSpec};
use crate::error::{Error, Result};
use crate::registry::{BuildContext, Registry};
use crate::source::Source;
use crate::stage::Stage;
use crate::state::StateConfig;

/// `[metadata]`: how the destination table is created and evolved.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// What happens when the source schema differs from the table's: `evolve` (default: add
    /// columns, widen types losslessly), `freeze` (reject any change before writing) or
    /// `discard_columns` (keep the table, drop new source columns).
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
}

/// `[runtime]`: how stages are connected and failed runs retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Batches that may wait between two stages (default 4; 1 to 1024). With the source's
    /// batch size, this bounds the memory of a run.
    #[serde(
        default = "default_channel_capacity",
        deserialize_with = "crate::config::within::<_, _, 1, 1024>"
    )]
    pub channel_capacity: usize,
    /// How many times a run that failed on a transient external error (connection reset,
    /// server shutting down, serialization failure) is retried (default 2). A failed run
    /// commits nothing, so a retry starts clean. User errors are never retried. At most 100.
    #[serde(
        default = "default_retries",
        deserialize_with = "crate::config::within::<_, _, 0, 100>"
    )]
    pub retries: usize,
    /// The first retry's delay in milliseconds (default 1000; at most 3600000); each next one
    /// doubles, with jitter, up to 60 s.
    #[serde(
        default = "default_retry_backoff_ms",
        deserialize_with = "crate::config::within::<_, _, 0, 3_600_000>"
    )]
    pub retry_backoff_ms: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            channel_capacity: default_channel_capacity(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
        }
    }
}

fn default_channel_capacity() -> usize {
    4
}

fn default_retries() -> usize {
    2
}

fn default_retry_backoff_ms() -> u64 {
    1000
}

/// `[schedule]`: when `pipe schedule` runs this pipeline (`pipe run` ignores it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A cron expression with seconds, in UTC: `sec min hour day-of-month month
    /// day-of-week [year]`, e.g. `"0 */15 * * * *"` (every 15 minutes).
    pub cron: String,
    /// Fire times missed while the previous run was still going (or the scheduler was
    /// busy): `skip` (default) drops them; `run_once` runs once as soon as possible.
    #[serde(default)]
    pub missed: MissedRuns,
}

/// What to do about missed fire times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Drop them; the next run is at the next fire time.
    #[default]
    Skip,
    /// Catch up with one run as soon as possible.
    RunOnce,
}

/// The top-level keys the framework itself owns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    /// The pipeline's name: identifies its runs and state.
    name: String,
    /// Free text for humans.
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    metadata: MetadataConfig,
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    state: StateConfig,
    #[serde(default)]
    schedule: Option<ScheduleConfig>,
}

/// A loaded pipeline: every component built, nothing opened yet.
#[derive(Debug)]
pub struct Pipeline {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// The file it was loaded from.
    pub file: PathBuf,
    /// `[source] type`.
    pub source_type: String,
    /// The extract stage.
    pub source: Arc<dyn Source>,
    /// Transform stages (contract, ...), in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// `[destination] type`.
    pub destination_type: String,
    /// The load stage.
    pub destination: Arc<dyn Destination>,
    /// `[destination] mode` and `merge_keys`.
    pub write: WriteSpec,
    /// `[metadata]`.
    pub metadata: MetadataConfig,
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[schedule]`.
    pub schedule: Option<ScheduleConfig>,
}

impl Pipeline {
    /// Read and build the pipeline in `path`.
    pub fn load(path: &Path, registry: &Registry) -> Result<Self> {
        Self::from_file(&ConfigFile::read(path)?, registry)
    }

    /// Build the pipeline described by `file`.
    pub fn from_file(file: &ConfigFile, registry: &Registry) -> Result<Self> {
        let mut root = file.parse()?;
        let stage_names: Vec<&str> = registry.stage_sections().collect();
        check_top_level_keys(file, &root, &stage_names)?;
        let Some(source) = root.take("source") else {
            return Err(root.error("missing `[source]` section"));
        };
        let Some(destination) = root.take("destination") else {
            return Err(root.error("missing `[destination]` section"));
        };
        let stage_sections: Vec<(String, Section<'_>)> = stage_names
            .iter()
            .filter_map(|n| root.take(n).map(|s| (n.to_string(), s)))
            .collect();
        let header: Header = root.deserialize()?;
        check_header(file, &header)?;
        let ctx = BuildContext {
            pipeline_file: file.path().to_path_buf(),
            pipeline: header.name.clone(),
            file: file.clone(),
        };
        let (source_type, built_source) = build_source(file, registry, source, &ctx)?;
        let mut stages = Vec::new();
        for (name, section) in stage_sections {
            if let Some(stage) = registry.build_stage(&name, section, &ctx) {
                stages.push(stage?);
            }
        }
        let (destination_type, write, built_destination) =
            build_destination(file, registry, destination, &ctx)?;
        Ok(Self {
            name: header.name,
            description: header.description,
            file: file.path().to_path_buf(),
            source_type,
            source: built_source,
            stages,
            destination_type,
            destination: built_destination,
            write,
            metadata: header.metadata,
            runtime: header.runtime,
            state: header.state,
            schedule: header.schedule,
        })
    }
}

/// Refuse a top-level key no section or header field has, suggesting the nearest one.
fn check_top_level_keys(file: &ConfigFile, root: &Section<'_>, stages: &[&str]) -> Result<()> {
    let mut allowed: Vec<&str> = vec!["name", "description", "source", "metadata"];
    allowed.extend(stages.iter().copied());
    allowed.extend(["destination", "runtime", "state", "schedule"]);
    for (key, span) in root.keys() {
        if !allowed.contains(&key.as_str()) {
            let hint = allowed
                .iter()
                .filter(|a| edit_distance(a, &key) <= 2)
                .min_by_key(|a| edit_distance(a, &key))
                .map(|a| format!(" (did you mean `{a}`?)"))
                .unwrap_or_default();
            return Err(file.error_at(
                span,
                &key,
                format!(
                    "unknown key `{key}`{hint}; expected one of: {}",
                    allowed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The pipeline's name and schedule are usable.
fn check_header(file: &ConfigFile, header: &Header) -> Result<()> {
    if header.name.is_empty()
        || !header
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::user(format!(
            "{}: `name` must be non-empty and use only letters, digits, `_`, `-` and `.`, got {:?}",
            file.path().display(),
            header.name
        )));
    }
    if let Some(schedule) = &header.schedule {
        check_cron(&schedule.cron).map_err(|message| {
            Error::user(format!(
                "{}: `schedule.cron` {:?} {message}",
                file.path().display(),
                schedule.cron
            ))
        })?;
    }
    Ok(())
}

/// The `[source]` section's type and the source its factory builds.
fn build_source(
    file: &ConfigFile,
    registry: &Registry,
    mut source: Section<'_>,
    ctx: &BuildContext,
) -> Result<(String, Arc<dyn Source>)> {
    crate::config::connections::apply(&mut source)?;
    let (source_type, span) = required_type(&mut source)?;
    let built = registry
        .build_source(&source_type, source, ctx)
        .unwrap_or_else(|| {
            Err(file.error_at(
                span,
                "source.type",
                format!(
                    "unknown source type `{source_type}`; supported: {}",
                    registry.source_names().join(", ")
                ),
            ))
        })?;
    Ok((source_type, built))
}

/// The `[destination]` section's type, write spec, and the destination its factory builds.
fn build_destination(
    file: &ConfigFile,
    registry: &Registry,
    mut destination: Section<'_>,
    ctx: &BuildContext,
) -> Result<(String, WriteSpec, Arc<dyn Destination>)> {
    crate::config::connections::apply(&mut destination)?;
    let (destination_type, type_span) = required_type(&mut destination)?;
    let Some(modes) = registry.destination_modes(&destination_type) else {
        return Err(file.error_at(
            type_span,
            "destination.type",
            format!(
                "unknown destination type `{destination_type}`; supported: {}",
                registry.destination_names().join(", ")
            ),
        ));
    };
    let hint = |mode| registry.destination_mode_hint(&destination_type, mode);
    let write = write_spec(&mut destination, &destination_type, modes, &hint)?;
    let built = registry
        .build_destination(&destination_type, destination, ctx)
        .unwrap_or_else(|| Err(Error::internal("destination factory vanished")))?;
    Ok((destination_type, write, built))
}

/// Whether `expr` is a cron expression that fires at least once (`0 0 0 30 2 *`, the 30th of
/// February, parses but never runs).
pub fn check_cron(expr: &str) -> std::result::Result<cron::Schedule, String> {
    let schedule = cron::Schedule::from_str(expr).map_err(|e| {
        format!(
            "is not a cron expression with seconds (sec min hour day-of-month month \
             day-of-week [year]): {e}"
        )
    })?;
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err("never fires (no such date from now on); the pipeline would never run".into());
    }
    Ok(schedule)
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn required_type(section: &mut Section<'_>) -> Result<(String, std::ops::Range<usize>)> {
    match section.take_str("type")? {
        Some(t) => Ok(t),
        None => Err(section.error(format!(
            "`[{}]` needs a `type` key (see `pipe list` for the available types)",
            section.key()
        ))),
    }
}

/// Take the destination keys every destination shares: `mode` and `merge_keys`.
fn write_spec(
    section: &mut Section<'_>,
    kind: &str,
    modes: &[WriteMode],
    hint: &dyn Fn(WriteMode) -> Option<&'static str>,
) -> Result<WriteSpec> {
    let mut spec = WriteSpec::default();
    if let Some((mode, span)) = section.take_str("mode")? {
        let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
        spec.mode = modes
            .iter()
            .copied()
            .find(|m| m.as_str() == mode)
            .ok_or_else(|| {
                let known = WriteMode::EVERY.iter().find(|m| m.as_str() == mode);
                let why = match known {
                    Some(_) => format!("destination `{kind}` does not support mode `{mode}`"),
                    None => format!("unknown mode `{mode}`"),
                };
                let advice = known
                    .and_then(|m| hint(*m))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                section.error_at(
                    span,
                    "mode",
                    format!("{why}; supported: {}{advice}", names.join(", ")),
                )
            })?;
    }
    if let Some(allow) = section.take("allow_empty") {
        spec.allow_empty = allow.deserialize::<bool>()?;
    }
    let keys_section = section.take("merge_keys");
    let keys_span = keys_section.as_ref().map(Section::span);
    if let Some(keys) = keys_section {
        spec.merge_keys = keys.deserialize::<Vec<String>>()?;
    }
    match (spec.mode, spec.merge_keys.is_empty(), keys_span) {
        (WriteMode::Merge, true, _) => {
            Err(section
                .error("mode = \"merge\" needs `merge_keys` (the columns that identify a row)"))
        }
        (WriteMode::Append | WriteMode::Replace | WriteMode::Register, false, Some(span)) => {
            Err(section.error_at(
                span,
                "merge_keys",
                format!(
                    "`merge_keys` only applies to mode = \"merge\", not \"{}\"",
                    spec.mode
                ),
            ))
        }
        _ => Ok(spec),
    }
}
