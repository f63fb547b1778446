//! `serveflow completions SHELL` and `serveflow man`: shell completions and man pages generated
//! from the command line itself, so they cannot drift from it.

use std::{io::Write as _, path::PathBuf};

use anyhow::Context as _;
use clap_complete::Shell;

/// `serveflow completions`: a completion script for a shell, on stdout.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

impl CompletionsArgs {
    /// Prints the script for `cmd`.
    pub fn run(&self, mut cmd: clap::Command) -> anyhow::Result<()> {
        let name = cmd.get_name().to_string();
        clap_complete::generate(self.shell, &mut cmd, name, &mut std::io::stdout().lock());
        Ok(())
    }
}

/// `serveflow man`: the man page, on stdout, or one page per command into a folder.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write serveflow.1 and serveflow-<command>.1 for every subcommand here instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ManArgs {
    /// Renders the pages of `cmd`.
    pub fn run(&self, cmd: clap::Command) -> anyhow::Result<()> {
        let Some(dir) = &self.out else {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            std::io::stdout().lock().write_all(&page)?;
            return Ok(());
        };
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cmd = cmd.disable_help_subcommand(true);
        let mut pages = vec![("serveflow.1".to_string(), cmd.clone())];
        for sub in cmd.get_subcommands() {
            let name = format!("serveflow-{}", sub.get_name());
            pages.push((format!("{name}.1"), sub.clone().name(name)));
        }
        for (file, page) in pages {
            let path = dir.join(&file);
            let mut text = Vec::new();
            clap_mangen::Man::new(page).render(&mut text)?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{}", path.display());
        }
        Ok(())
    }
}
