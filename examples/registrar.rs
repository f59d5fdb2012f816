//! A standalone registrar: the meeting point of separate programs on one machine.
//!
//! `cargo run --example registrar` (add `-- --addr uds:/some/dir/reg.sock` to choose the
//! socket, `--secret-file PATH` to choose the secret's file)
//!
//! It is a root actor with no children that listens at a well-known address
//! ([`brood::discovery::well_known`]: `registrar.sock` in the private runtime directory)
//! and keeps the table of every program that joins it. It shares its secret with them
//! through a file only this user can read (made with a fresh random secret the first
//! time, reused after), and prints the two variables a program needs to join:
//!
//! ```text
//! export BROOD_REGISTRAR=uds:/run/user/1000/brood/registrar.sock
//! export BROOD_SECRET_FILE=/run/user/1000/brood/registrar.secret
//! ```
//!
//! With those set, every brood root joins it (see `RootBuilder::registrar`) and their
//! actors find each other's by name (`ActorCx::find_actor`). `cargo run --example tree`
//! prints the live tree of everything that joined. Ctrl-C stops the registrar; the
//! programs notice, keep running, and join it again when it is back.

use brood::{Addr, Registry, TreeSecret};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brood = brood::setup(Registry::new());
    brood.enter();

    let (mut addr, mut secret_file) = brood::discovery::well_known()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = args
                    .next()
                    .ok_or("--addr needs an address")?
                    .parse::<Addr>()?
            }
            "--secret-file" => {
                secret_file = args.next().ok_or("--secret-file needs a path")?.into()
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let secret = match brood::discovery::read_secret_file(&secret_file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = TreeSecret::random();
            brood::discovery::write_secret_file(&secret_file, &s)?;
            s
        }
        Err(e) => return Err(format!("{}: {e}", secret_file.display()).into()),
    };
    println!("registrar at {addr}; to join it:");
    println!("export BROOD_REGISTRAR={addr}");
    println!("export BROOD_SECRET_FILE={}", secret_file.display());

    // Joins and departures are logged at `info` (`BROOD_LOG` overrides).
    let level = std::env::var("BROOD_LOG").unwrap_or_else(|_| "info".to_owned());
    brood::runtime::logging::init_process_logging(&level);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(
        brood
            .root()
            .name("registrar")
            .vars(|v| v.log_level(level.clone()))
            .secret(secret)
            .listen_at(addr)
            .run(async |_nursery| {
                tokio::signal::ctrl_c().await?;
                Ok(())
            }),
    )?;
    Ok(())
}
