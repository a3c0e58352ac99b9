//! The `pipe` binary with every connector of this workspace.

fn main() -> std::process::ExitCode {
    pipe_cli::main_with(pipe_cli::default_registry())
}
