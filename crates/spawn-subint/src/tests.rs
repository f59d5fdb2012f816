//! Exercises the FFI layer through the safe API: creation and ending, isolation, value
//! conversion, exceptions, interrupts, abandonment.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Interp, PyValue, Shutdown, live_interpreters};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Tests in this module share one process: they count interpreters relative to a start.
fn settle(target: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_interpreters() > target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn interpreters_are_isolated_and_end_cleanly() {
    rt().block_on(async {
        let a = Interp::new_sub(true).unwrap();
        let b = Interp::new_sub(false).unwrap();
        a.run(|py| py.exec("import sys\nmarker = 1\nsys.modules['brood_marker'] = sys"))
            .await
            .unwrap()
            .unwrap();
        let seen_in_b = b
            .run(|py| {
                py.eval("('marker' in globals(), 'brood_marker' in __import__('sys').modules)")
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen_in_b,
            PyValue::List(vec![PyValue::Bool(false), PyValue::Bool(false)])
        );
        let seen_in_a = a.run(|py| py.eval("marker")).await.unwrap().unwrap();
        assert_eq!(seen_in_a, PyValue::Int(1));
        assert_eq!(a.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert_eq!(b.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert!(matches!(
            a.run(|py| py.eval("1")).await,
            Err(crate::InterpError::Ended)
        ));
    });
}

#[test]
fn values_round_trip() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let v = PyValue::List(vec![
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Int(-7),
            PyValue::Float(2.5),
            PyValue::Str("héllo".into()),
            PyValue::Bytes(Bytes::from_static(b"\x00\xff")),
            PyValue::Dict(vec![(PyValue::Str("k".into()), PyValue::Int(1))]),
        ]);
        let back = i
            .run({
                let v = v.clone();
                move |py| py.call("builtins:list", &[v], &[])
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, v);
        let tuple = i.run(|py| py.eval("(1, 'a')")).await.unwrap().unwrap();
        assert_eq!(tuple, PyValue::List(vec![1.into(), "a".into()]));
        let big = i.run(|py| py.eval("2 ** 70")).await.unwrap().unwrap_err();
        assert_eq!(big.kind, "OverflowError");
        let odd = i.run(|py| py.eval("object()")).await.unwrap().unwrap_err();
        assert_eq!(odd.kind, "TypeError");
        let kw = i
            .run(|py| {
                py.call(
                    "builtins:int",
                    &["ff".into()],
                    &[("base".into(), 16.into())],
                )
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kw, PyValue::Int(255));
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn exceptions_become_typed_errors_with_tracebacks() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        i.run(|py| py.exec("def boom():\n    raise KeyError('missing')\n"))
            .await
            .unwrap()
            .unwrap();
        let e = i
            .run(|py| py.call("__main__:boom", &[], &[]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, "KeyError");
        assert_eq!(e.message, "'missing'");
        let tb = e.traceback.unwrap();
        assert!(tb.contains("in boom") && tb.contains("KeyError"), "{tb}");
        let syntax = i.run(|py| py.exec("def (")).await.unwrap().unwrap_err();
        assert_eq!(syntax.kind, "SyntaxError");
        let bad = i
            .run(|py| py.call("no-colon", &[], &[]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(bad.kind, "ValueError");
        let missing = i
            .run(|py| py.call("no_such_module_xyz:f", &[], &[]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(missing.kind, "ModuleNotFoundError");
        let nul = i.run(|py| py.exec("x = '\0'")).await.unwrap().unwrap_err();
        assert_eq!(nul.kind, "ValueError");
        // The interpreter keeps working after every failure.
        assert_eq!(
            i.run(|py| py.eval("1 + 1")).await.unwrap().unwrap(),
            2.into()
        );
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn a_cancelled_python_loop_is_interrupted() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_millis(200),
            i.run(|py| py.exec("while True:\n    pass\n")),
        )
        .await;
        assert!(r.is_err(), "the loop runs until cancelled");
        // The interrupt lands; the host takes the next job.
        let v = tokio::time::timeout(Duration::from_secs(5), i.run(|py| py.eval("40 + 2")))
            .await
            .expect("host free again")
            .unwrap()
            .unwrap();
        assert_eq!(v, PyValue::Int(42));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn code_that_swallows_interrupts_is_interrupted_again_until_it_gives_up() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let i2 = i.clone();
        // Catches the first two interrupts, then lets the third one end it.
        let job = tokio::spawn(async move {
            i2.run(|py| {
                py.exec(
                    "caught = 0\nwhile True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        caught += 1\n        if caught >= 3:\n            break\n",
                )
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        job.await.unwrap().unwrap().unwrap();
    });
}

#[test]
fn a_native_call_that_cannot_be_interrupted_is_abandoned() {
    let before = live_interpreters();
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let i2 = i.clone();
        let job =
            tokio::spawn(async move { i2.run(|py| py.exec("import time\ntime.sleep(1.5)")).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t = Instant::now();
        assert_eq!(i.shutdown(Duration::from_millis(200)), Shutdown::Abandoned);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "shutdown did not hang"
        );
        // When the sleep returns, the pending interrupt fires and the host ends the
        // interpreter on its own.
        let r = job.await.unwrap().unwrap();
        assert_eq!(r.unwrap_err().kind, "KeyboardInterrupt");
    });
    settle(before);
    assert_eq!(live_interpreters(), before);
}

#[test]
fn the_main_interpreter_serves_process_actors() {
    rt().block_on(async {
        let m = Interp::main().unwrap();
        m.run(|py| py.exec("brood_main_flag = 7"))
            .await
            .unwrap()
            .unwrap();
        let v = m
            .run(|py| py.eval("brood_main_flag"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, PyValue::Int(7));
        // Sub-interpreters do not see it.
        let s = Interp::new_sub(true).unwrap();
        let seen = s
            .run(|py| py.eval("'brood_main_flag' in globals()"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, PyValue::Bool(false));
        assert_eq!(s.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert_eq!(
            m.shutdown(Duration::ZERO),
            Shutdown::Clean,
            "never shut down"
        );
        assert_eq!(m.run(|py| py.eval("1")).await.unwrap().unwrap(), 1.into());
    });
}

#[test]
fn reports_its_python_version() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let v = i
            .run(|py| py.eval("__import__('sys').version"))
            .await
            .unwrap()
            .unwrap();
        eprintln!("python {v:?}");
        assert!(v.as_str().is_some_and(|s| s.starts_with("3.")));
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}
