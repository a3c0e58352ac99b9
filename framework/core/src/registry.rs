//! The registry: `type = "..."` in a pipeline file → a typed factory that builds the component.
//!
//! Connectors implement [`SourceFactory`] / [`DestinationFactory`] / [`StageFactory`] with a
//! typed `Config`; a blanket impl erases the type so the registry can store any of them. The
//! framework deserializes the TOML section into `Config` once, with located errors. A custom
//! crate adds itself with one call: `registry.source("github", GithubFactory)`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::{ConfigFile, Section};
use crate::destination::{Destination, WriteMode};
use crate::error::Result;
use crate::service::Service;
use crate::source::Source;
use crate::stage::Stage;

/// What a factory may need besides its config section.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The pipeline file being loaded.
    pub pipeline_file: PathBuf,
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file's text: with the spans of `toml::Spanned` config values
    /// ([`crate::config::Spanned`]), a factory can point its own errors at file:line:column.
    pub file: ConfigFile,
}

impl BuildContext {
    /// The directory of the pipeline file (for paths that belong with it, like a contract
    /// file); relative data paths resolve against the working directory, as in every CLI.
    pub fn pipeline_dir(&self) -> &Path {
        self.pipeline_file.parent().unwrap_or(Path::new("."))
    }
}

/// Builds a [`Source`] from its typed config.
pub trait SourceFactory: Send + Sync + 'static {
    /// The `[source]` table, minus its `type` key.
    type Config: DeserializeOwned;
    /// One line for `pipe list`.
    fn description(&self) -> &'static str;
    /// Build the source. Should not do I/O; [`Source::schema`] is where it starts.
    fn build(&self, config: Self::Config, ctx: &BuildContext) -> Result<Arc<dyn Source>>;
    /// A `[source]` table (with `type`) reading the data file `sample`, for `pipe check
    /// --sample`. `own` is the pipeline's own `[source]` when it is of this type: keep what
    /// says how its data is read (column types, dialect). `None`: this source reads no files.
    fn sample(&self, own: Option<&toml::Table>, sample: &Path) -> Option<toml::Table> {
        let _ = (own, sample);
        None
    }
    /// Keys to add to a named connection's (`keys`) so that it builds a source that
    /// [`Source::schema`] can open to prove the connection works (`pipe connections test`;
    /// e.g. a trivial query). The default: none.
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        let _ = keys;
        Vec::new()
    }
}

/// Builds a [`Destination`] from its typed config.
pub trait DestinationFactory: Send + Sync + 'static {
    /// The `[destination]` table, minus the common keys `type`, `mode` and `merge_keys`.
    type Config: DeserializeOwned;
    /// One line for `pipe list`.
    fn description(&self) -> &'static str;
    /// The write modes it implements.
    fn modes(&self) -> &'static [WriteMode];
    /// What to tell a user who asked for `mode`, which it does not implement (where else
    /// to go); `None`: the list of supported modes says enough.
    fn mode_hint(&self, mode: WriteMode) -> Option<&'static str> {
        let _ = mode;
        None
    }
    /// Build the destination. Should not do I/O; [`Destination::check`] is where it starts.
    fn build(&self, config: Self::Config, ctx: &BuildContext) -> Result<Arc<dyn Destination>>;
    /// The destination for an existing table named by a location (`pipe table history
    /// delta:s3://lake/orders`), with default settings; the format of `location` is the
    /// destination's own. The default: tables of this type are addressed by pipeline only.
    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        let _ = location;
        Err(crate::error::Error::user(
            "this destination's tables are addressed by a pipeline file, not a location",
        ))
    }
    /// Keys to add to a named connection's (`keys`) so that it builds a destination whose
    /// [`Destination::check`] proves the connection works (`pipe connections test`; e.g. a
    /// table name). The default: none.
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        let _ = keys;
        Vec::new()
    }
}

/// Builds a [`Stage`] from a top-level section of the pipeline (`[contract]`, ...).
pub trait StageFactory: Send + Sync + 'static {
    /// The section's table.
    type Config: DeserializeOwned;
    /// One line for `pipe list`.
    fn description(&self) -> &'static str;
    /// Build the stage.
    fn build(&self, config: Self::Config, ctx: &BuildContext) -> Result<Box<dyn Stage>>;
}

/// Deserialize `section` into the factory's config and build; build errors name the section.
fn build_section<C: DeserializeOwned, T>(
    section: Section<'_>,
    build: impl FnOnce(C) -> Result<T>,
) -> Result<T> {
    let key = section.key().to_string();
    let file = section.file().path().display().to_string();
    let config = section.deserialize::<C>()?;
    build(config).map_err(|e| e.context(format!("{file}: [{key}]")))
}

trait ErasedSource: Send + Sync {
    fn description(&self) -> &'static str;
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Arc<dyn Source>>;
    fn sample(&self, own: Option<&toml::Table>, sample: &Path) -> Option<toml::Table>;
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)>;
}

impl<F: SourceFactory> ErasedSource for F {
    fn description(&self) -> &'static str {
        SourceFactory::description(self)
    }
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        build_section(section, |config| SourceFactory::build(self, config, ctx))
    }
    fn sample(&self, own: Option<&toml::Table>, sample: &Path) -> Option<toml::Table> {
        SourceFactory::sample(self, own, sample)
    }
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        SourceFactory::probe(self, keys)
    }
}

trait ErasedDestination: Send + Sync {
    fn description(&self) -> &'static str;
    fn modes(&self) -> &'static [WriteMode];
    fn mode_hint(&self, mode: WriteMode) -> Option<&'static str>;
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Arc<dyn Destination>>;
    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>>;
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)>;
}

impl<F: DestinationFactory> ErasedDestination for F {
    fn description(&self) -> &'static str {
        DestinationFactory::description(self)
    }
    fn modes(&self) -> &'static [WriteMode] {
        DestinationFactory::modes(self)
    }
    fn mode_hint(&self, mode: WriteMode) -> Option<&'static str> {
        DestinationFactory::mode_hint(self, mode)
    }
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Arc<dyn Destination>> {
        build_section(section, |config| {
            DestinationFactory::build(self, config, ctx)
        })
    }
    fn locate(&self, location: &str) -> Result<Arc<dyn Destination>> {
        DestinationFactory::locate(self, location)
    }
    fn probe(&self, keys: &[&str]) -> Vec<(&'static str, &'static str)> {
        DestinationFactory::probe(self, keys)
    }
}

trait ErasedStage: Send + Sync {
    fn description(&self) -> &'static str;
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Box<dyn Stage>>;
}

impl<F: StageFactory> ErasedStage for F {
    fn description(&self) -> &'static str {
        StageFactory::description(self)
    }
    fn build(&self, section: Section<'_>, ctx: &BuildContext) -> Result<Box<dyn Stage>> {
        build_section(section, |config| StageFactory::build(self, config, ctx))
    }
}

/// Every component type a `pipe` binary knows.
#[derive(Default, Clone)]
pub struct Registry {
    sources: BTreeMap<String, Arc<dyn ErasedSource>>,
    destinations: BTreeMap<String, Arc<dyn ErasedDestination>>,
    /// Stage sections in pipeline order.
    stages: Vec<(String, Arc<dyn ErasedStage>)>,
    services: BTreeMap<String, Arc<dyn Service>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field(
                "destinations",
                &self.destinations.keys().collect::<Vec<_>>(),
            )
            .field(
                "stages",
                &self.stages.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("services", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// One registered component, for `pipe list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    /// `source`, `destination`, `stage` or `service`.
    pub kind: &'static str,
    /// The `type` (or section name for stages).
    pub name: String,
    /// One line.
    pub description: &'static str,
    /// Write modes (destinations only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub modes: Vec<WriteMode>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a source under `type = "<name>"`. A later registration of the same name wins.
    #[must_use]
    pub fn source(mut self, name: &str, factory: impl SourceFactory) -> Self {
        self.sources.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// Register a destination under `type = "<name>"`.
    #[must_use]
    pub fn destination(mut self, name: &str, factory: impl DestinationFactory) -> Self {
        self.destinations
            .insert(name.to_string(), Arc::new(factory));
        self
    }

    /// Register a stage built from the top-level section `[<section>]`. Stages run in
    /// registration order between the metadata and load stages.
    #[must_use]
    pub fn stage(mut self, section: &str, factory: impl StageFactory) -> Self {
        self.stages.retain(|(n, _)| n != section);
        self.stages.push((section.to_string(), Arc::new(factory)));
        self
    }

    /// Register a server run by `pipe serve <name>`.
    #[must_use]
    pub fn service(mut self, name: &str, service: impl Service) -> Self {
        self.services.insert(name.to_string(), Arc::new(service));
        self
    }

    /// Run the service `name` with its command-line `args` until `shutdown`.
    pub async fn serve(
        &self,
        name: &str,
        args: Vec<String>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<()> {
        match self.services.get(name) {
            Some(service) => service.run(args, shutdown).await,
            None => Err(crate::error::Error::user(format!(
                "unknown service `{name}`; this pipe serves: {}",
                self.services
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Everything registered.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let sources = self.sources.iter().map(|(n, f)| ComponentInfo {
            kind: "source",
            name: n.clone(),
            description: f.description(),
            modes: Vec::new(),
        });
        let destinations = self.destinations.iter().map(|(n, f)| ComponentInfo {
            kind: "destination",
            name: n.clone(),
            description: f.description(),
            modes: f.modes().to_vec(),
        });
        let stages = self.stages.iter().map(|(n, f)| ComponentInfo {
            kind: "stage",
            name: n.clone(),
            description: f.description(),
            modes: Vec::new(),
        });
        let services = self.services.iter().map(|(n, s)| ComponentInfo {
            kind: "service",
            name: n.clone(),
            description: s.description(),
            modes: Vec::new(),
        });
        sources
            .chain(destinations)
            .chain(stages)
            .chain(services)
            .collect()
    }

    /// Section names of registered stages, in order.
    pub fn stage_sections(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|(n, _)| n.as_str())
    }

    pub(crate) fn build_source(
        &self,
        kind: &str,
        section: Section<'_>,
        ctx: &BuildContext,
    ) -> Option<Result<Arc<dyn Source>>> {
        Some(self.sources.get(kind)?.build(section, ctx))
    }

    pub(crate) fn destination_modes(&self, kind: &str) -> Option<&'static [WriteMode]> {
        Some(self.destinations.get(kind)?.modes())
    }

    /// The keys that make a connection of type `kind` testable, and whether `kind` is a
    /// destination (else a source); `None`: no such type.
    pub(crate) fn probe(
        &self,
        kind: &str,
        keys: &[&str],
    ) -> Option<(bool, Vec<(&'static str, &'static str)>)> {
        if let Some(d) = self.destinations.get(kind) {
            return Some((true, d.probe(keys)));
        }
        self.sources.get(kind).map(|s| (false, s.probe(keys)))
    }

    pub(crate) fn destination_mode_hint(
        &self,
        kind: &str,
        mode: WriteMode,
    ) -> Option<&'static str> {
        self.destinations.get(kind)?.mode_hint(mode)
    }

    pub(crate) fn build_destination(
        &self,
        kind: &str,
        section: Section<'_>,
        ctx: &BuildContext,
    ) -> Option<Result<Arc<dyn Destination>>> {
        Some(self.destinations.get(kind)?.build(section, ctx))
    }

    /// A `[source]` table reading the data file `sample`: by the pipeline's own source type
    /// with its options (`own`: its `[source]` table) when that type reads files, else by
    /// the first registered source that does.
    pub fn sample_source(&self, own: Option<&toml::Table>, sample: &Path) -> Option<toml::Table> {
        let own_type = own
            .and_then(|t| t.get("type"))
            .and_then(toml::Value::as_str);
        if let Some(factory) = own_type.and_then(|t| self.sources.get(t))
            && let Some(table) = factory.sample(own, sample)
        {
            return Some(table);
        }
        self.sources.values().find_map(|f| f.sample(None, sample))
    }

    /// The destination of type `kind` for the table at `location` (see
    /// [`DestinationFactory::locate`]).
    pub fn locate_destination(&self, kind: &str, location: &str) -> Result<Arc<dyn Destination>> {
        match self.destinations.get(kind) {
            Some(factory) => factory
                .locate(location)
                .map_err(|e| e.context(format!("{kind}:{location}"))),
            None => Err(crate::error::Error::user(format!(
                "unknown destination type `{kind}`; supported: {}",
                self.destination_names().join(", ")
            ))),
        }
    }

    pub(crate) fn build_stage(
        &self,
        name: &str,
        section: Section<'_>,
        ctx: &BuildContext,
    ) -> Option<Result<Box<dyn Stage>>> {
        let factory = self.stages.iter().find(|(n, _)| n == name)?;
        Some(factory.1.build(section, ctx))
    }

    pub(crate) fn source_names(&self) -> Vec<&str> {
        self.sources.keys().map(String::as_str).collect()
    }

    pub(crate) fn destination_names(&self) -> Vec<&str> {
        self.destinations.keys().map(String::as_str).collect()
    }
}
