//! `host-example`: runs the rcpat component in wasmtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "host-example",
    version,
    about = "A wasmtime host for the rcpat personal-access-token component"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Walk through generate / challenge / regenerate on a fresh SQLite database.
    Demo {
        /// Database file to create (must not exist). Default: a new file under the temp dir.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Directory for mailed codes (.eml files). Default: next to the database.
        #[arg(long)]
        outbox: Option<PathBuf>,
    },
    /// Print the embedded component's world (its imports and exports) as WIT.
    Wit,
    /// Print facts about the embedded component: size and the toolchain route that built it.
    Info,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Wit => match host_example::component_wit() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Info => {
            println!("component size: {} bytes", host_example::COMPONENT.len());
            println!("built by the {} route", env!("RCPAT_WASM_ROUTE_USED"));
            ExitCode::SUCCESS
        }
        Command::Demo { db, outbox } => {
            let dir = std::env::temp_dir().join(format!("rcpat-demo-{}", std::process::id()));
            let db = db.unwrap_or_else(|| dir.join("demo.sqlite"));
            if let Some(parent) = db.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let outbox = outbox.unwrap_or_else(|| db.with_extension("outbox"));
            match host_example::demo::run(&db, &outbox, &mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
