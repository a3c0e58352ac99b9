//! `pipe-custom`: the stock `pipe` command plus the `sequence` source. This is all a user
//! writes to ship their own connectors in one binary.

fn main() -> std::process::ExitCode {
    let registry = pipe_cli::default_registry()
        .source("sequence", pipe_example_custom_source::SequenceFactory);
    pipe_cli::main_with(registry)
}
