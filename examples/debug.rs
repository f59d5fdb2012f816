//! Debug mode, interactively: run it in a terminal and answer the prompts.
//!
//! `cargo run --example debug`
//!
//! The tree runs in debug mode. Two workers pause at once: the tree's debugger lock
//! hands the terminal to one, then the other (type `bt`, `vars`, then `c`). A grandchild
//! pauses while its parent waits for it. Then a handler fails and stops post-mortem
//! before its error reaches the root. At every prompt: `c` continue, `bt` backtrace,
//! `vars` the actor's runtime vars, `gdb` how to attach a native debugger, `q` cancel
//! the actor. Ctrl-C at a prompt stays in the prompt.
//!
//! Without a terminal (piped, in CI) every pause logs why and continues.

use brood::{ActorCx, ActorOptions, FnError, Registry};

brood::call!(
    /// Pauses, then returns its number doubled.
    Work = "debug_example.work": u32 => u32
);
brood::call!(
    /// Starts a helper that pauses, then pauses itself.
    Nested = "debug_example.nested": () => ()
);
brood::call!(
    /// Fails: in debug mode it stops post-mortem first.
    Fail = "debug_example.fail": () => ()
);

async fn pause(cx: &ActorCx) -> Result<(), FnError> {
    match brood::debug::pause(cx).await {
        Ok(brood::debug::Resume::Quit) => Err(FnError::new(
            brood::kinds::CANCELLED,
            "quit at the debugger prompt",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(FnError::new("DebugLockError", e.to_string())),
    }
}

fn registry() -> Registry {
    Registry::new()
        .call(Work, |cx, n: u32| async move {
            pause(&cx).await?;
            Ok(n * 2)
        })
        .call(Nested, |cx: ActorCx, ()| async move {
            cx.open_nursery(async |n| {
                let helper = n.start_actor("helper", ActorOptions::new()).await?;
                helper.run(Work, 21).await?;
                Ok(())
            })
            .await?;
            pause(&cx).await
        })
        .call(Fail, |_cx, ()| async move {
            Err::<(), _>(FnError::new("ValueError", "this handler failed on purpose"))
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let actors = brood::setup(registry());
    actors.enter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(
        actors
            .root()
            .name("root")
            .vars(|v| v.debug_mode(true))
            .run(async |n| {
                let a = n.start_actor("a", ActorOptions::new()).await?;
                let b = n.start_actor("b", ActorOptions::new()).await?;
                println!("1. two workers pause at once; the terminal goes to one, then the other");
                let (x, y) = tokio::join!(a.run(Work, 1), b.run(Work, 2));
                println!("   they returned {:?} and {:?}", x?, y?);
                println!("2. a grandchild pauses (root/a/helper), then its parent");
                a.run(Nested, ()).await?;
                println!("3. a handler fails: it stops post-mortem before the root sees the error");
                let e = b.run(Fail, ()).await.expect_err("it fails");
                println!("   the root got: {e}");
                Ok(())
            }),
    )?;
    println!("done");
    Ok(())
}
