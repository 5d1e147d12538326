//! `hmq-operator`: `run` (the default) runs the controller; `crd` prints the CRD; `render`
//! prints the objects for a cluster file, offline; `rbac` prints the operator's RBAC.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// hmq-operator: runs hmq MQTT broker clusters on Kubernetes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller (the default).
    Run(hmq_operator::controller::RunOptions),
    /// Print the MqttCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would create for the MqttClusters in a YAML file.
    Render {
        /// The file ("-" for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Render the ServiceMonitor where asked for, as if its CRD were installed.
        #[arg(long)]
        service_monitor_crd: bool,
    },
    /// Print the operator's RBAC (ServiceAccount, ClusterRole, ClusterRoleBinding) as YAML.
    Rbac {
        /// Namespace the operator runs in.
        #[arg(long, default_value = "hmq-system")]
        namespace: String,
    },
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.command.is_none() {
        // No command means `run`, with its defaults and environment variables.
        let program = std::env::args()
            .next()
            .unwrap_or_else(|| "hmq-operator".into());
        cli = Cli::parse_from([program, "run".to_owned()]);
    }
    match cli.command {
        None => run(hmq_operator::controller::RunOptions::default()),
        Some(Command::Run(options)) => run(options),
        Some(Command::Crd) => {
            print!("{}", hmq_operator::render::crd_yaml()?);
            Ok(())
        }
        Some(Command::Render {
            file,
            service_monitor_crd,
        }) => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            print!(
                "{}",
                hmq_operator::render::render(&text, service_monitor_crd)?
            );
            Ok(())
        }
        Some(Command::Rbac { namespace }) => {
            print!("{}", hmq_operator::rbac::yaml(&namespace)?);
            Ok(())
        }
    }
}

fn run(options: hmq_operator::controller::RunOptions) -> anyhow::Result<()> {
    hmq_operator::controller::init_tracing(&options);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(hmq_operator::controller::run(options))?;
    Ok(())
}
