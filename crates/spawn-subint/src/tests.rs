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
fn a_lazy_interpreter_has_no_thread_until_its_first_job() {
    rt().block_on(async {
        let unused = Interp::new_sub(false).unwrap();
        assert!(!unused.has_thread(), "no job, no host thread");
        assert_eq!(unused.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert!(unused.has_exited());
        assert!(matches!(
            unused.run(|py| py.eval("1")).await,
            Err(crate::InterpError::Ended)
        ));
        assert!(!unused.has_thread(), "a job after the end starts nothing");

        let used = Interp::new_sub(false).unwrap();
        assert!(!used.has_thread());
        let v = used.run(|py| py.eval("6 * 7")).await.unwrap().unwrap();
        assert_eq!(v, PyValue::Int(42));
        assert!(used.has_thread(), "the first job started the host thread");
        assert_eq!(used.shutdown(Duration::from_secs(5)), Shutdown::Clean);
        assert!(!used.has_thread(), "joined at a clean shutdown");
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

/// `[[...[None]...]]`, `depth` lists deep.
fn nested(depth: usize) -> PyValue {
    let mut v = PyValue::None;
    for _ in 0..depth {
        v = PyValue::List(vec![v]);
    }
    v
}

/// How deep lists and dicts nest in `v`.
fn depth_of(v: &PyValue) -> usize {
    match v {
        PyValue::List(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        PyValue::Dict(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| depth_of(k).max(depth_of(v)))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

#[test]
fn a_value_that_contains_itself_is_a_typed_error() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        i.run(|py| {
            py.exec(
                "l = []\nl.append(l)\n\
                 w = [1]\nw.append(w)\nw.append(w)\n\
                 d = {}\nd['me'] = d\n\
                 t = ([],)\nt[0].append(t)\n",
            )
        })
        .await
        .unwrap()
        .unwrap();
        // `w` refers to itself twice: refused at once, not after 2^128 steps.
        for name in ["l", "w", "d", "t", "[1, l]"] {
            let e = i.run(move |py| py.eval(name)).await.unwrap().unwrap_err();
            assert_eq!(e.kind, "ValueError", "{name}: {e}");
            assert!(e.message.contains("circular reference"), "{name}: {e}");
        }
        // The interpreter keeps serving, the values intact.
        assert_eq!(
            i.run(|py| py.eval("(len(l), l[0] is l)"))
                .await
                .unwrap()
                .unwrap(),
            PyValue::List(vec![1.into(), true.into()])
        );
        // A value shared without a cycle converts as often as it appears.
        let shared = i.run(|py| py.eval("[[1]] * 3")).await.unwrap().unwrap();
        assert_eq!(
            shared,
            PyValue::List(vec![PyValue::List(vec![1.into()]); 3])
        );
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn a_value_nested_too_deep_is_a_typed_error_both_ways() {
    assert_eq!(PyValue::MAX_DEPTH, 128);
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        i.run(|py| {
            py.exec(
                "deep = []\nfor _ in range(100000):\n    deep = [deep]\n\
                 edge = None\nfor _ in range(128):\n    edge = [edge]\n\
                 over = [edge]\n\
                 ddeep = None\nfor _ in range(200):\n    ddeep = {'k': ddeep}\n",
            )
        })
        .await
        .unwrap()
        .unwrap();
        for name in ["deep", "over", "ddeep", "(1, over)"] {
            let e = i.run(move |py| py.eval(name)).await.unwrap().unwrap_err();
            assert_eq!(e.kind, "RecursionError", "{name}: {e}");
            assert!(e.message.contains("128"), "the limit is named: {e}");
        }
        let edge = i.run(|py| py.eval("edge")).await.unwrap().unwrap();
        assert_eq!(depth_of(&edge), PyValue::MAX_DEPTH);
        assert_eq!(edge, nested(PyValue::MAX_DEPTH));
        // Into Python: the same limit.
        let fine = i
            .run(|py| py.call("builtins:len", &[nested(PyValue::MAX_DEPTH)], &[]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fine, PyValue::Int(1));
        let e = i
            .run(|py| py.call("builtins:len", &[nested(PyValue::MAX_DEPTH + 1)], &[]))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, "RecursionError", "{e}");
        let e = i
            .run(|py| {
                let mut v = PyValue::None;
                for _ in 0..=PyValue::MAX_DEPTH {
                    v = PyValue::Dict(vec![(PyValue::Str("k".into()), v)]);
                }
                py.call("builtins:len", &[v], &[])
            })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind, "RecursionError", "{e}");
        assert_eq!(
            i.run(|py| py.eval("len(deep)")).await.unwrap().unwrap(),
            1.into()
        );
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

/// The postcard bytes of [`nested`]`(depth)`, built by hand: per level the variant index
/// of `List` (6) and a length of 1, then `None` (0).
fn nested_frame(depth: usize) -> Bytes {
    let mut b = Vec::with_capacity(2 * depth + 1);
    for _ in 0..depth {
        b.extend([6u8, 1]);
    }
    b.push(0);
    Bytes::from(b)
}

#[test]
fn a_deep_value_from_the_wire_is_a_typed_codec_error() {
    use spawn_api::{CodecError, Wire};
    let e = PyValue::decode(nested_frame(100_000)).unwrap_err();
    assert!(matches!(e, CodecError::Decode { .. }), "{e:?}");
    // A dict nested as deep: `Dict` (7), one entry, key `None`, then the value.
    let mut dict = Vec::new();
    for _ in 0..100_000 {
        dict.extend([7u8, 1, 0]);
    }
    dict.push(0);
    let e = PyValue::decode(Bytes::from(dict)).unwrap_err();
    assert!(matches!(e, CodecError::Decode { .. }), "{e:?}");
    // Exactly the limit decodes, one more level does not.
    let edge = PyValue::decode(nested_frame(PyValue::MAX_DEPTH)).unwrap();
    assert_eq!(edge, nested(PyValue::MAX_DEPTH));
    assert!(PyValue::decode(nested_frame(PyValue::MAX_DEPTH + 1)).is_err());
    // Encoding refuses what decoding would.
    assert_eq!(edge.encode().unwrap(), nested_frame(PyValue::MAX_DEPTH));
    let e = nested(PyValue::MAX_DEPTH + 1).encode().unwrap_err();
    assert!(matches!(e, CodecError::Encode { .. }), "{e:?}");
    // A length prefix that lies costs nothing up front.
    let e = PyValue::decode(Bytes::from_static(&[6, 0xff, 0xff, 0xff, 0xff, 0x0f])).unwrap_err();
    assert!(matches!(e, CodecError::Decode { .. }), "{e:?}");
}

#[test]
fn the_wire_format_is_the_one_derive_would_produce() {
    use serde::{Deserialize, Serialize};
    use spawn_api::Wire;
    /// `PyValue` as `#[derive]` encodes it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Mirror {
        None,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        Bytes(Bytes),
        List(Vec<Mirror>),
        Dict(Vec<(Mirror, Mirror)>),
    }
    let v = PyValue::Dict(vec![(
        PyValue::Str("k".into()),
        PyValue::List(vec![
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Int(-7),
            PyValue::Float(2.5),
            PyValue::Str("héllo".into()),
            PyValue::Bytes(Bytes::from_static(b"\x00\xff")),
            PyValue::Dict(vec![]),
        ]),
    )]);
    let m = Mirror::Dict(vec![(
        Mirror::Str("k".into()),
        Mirror::List(vec![
            Mirror::None,
            Mirror::Bool(true),
            Mirror::Int(-7),
            Mirror::Float(2.5),
            Mirror::Str("héllo".into()),
            Mirror::Bytes(Bytes::from_static(b"\x00\xff")),
            Mirror::Dict(vec![]),
        ]),
    )]);
    let bytes = m.encode().unwrap();
    assert_eq!(v.encode().unwrap(), bytes);
    assert_eq!(PyValue::decode(bytes).unwrap(), v);
}

#[test]
fn only_exact_builtin_types_convert_and_no_user_code_runs() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        i.run(|py| {
            py.exec(
                "import collections\n\
                 calls = []\n\
                 class MyList(list):\n\
                 \x20   def __iter__(self):\n\
                 \x20       calls.append('__iter__'); return super().__iter__()\n\
                 \x20   def __len__(self):\n\
                 \x20       calls.append('__len__'); return super().__len__()\n\
                 \x20   def __getitem__(self, i):\n\
                 \x20       calls.append('__getitem__'); return super().__getitem__(i)\n\
                 class MyTuple(tuple):\n\
                 \x20   def __iter__(self):\n\
                 \x20       calls.append('tuple __iter__'); return super().__iter__()\n\
                 class MyDict(dict):\n\
                 \x20   def __iter__(self):\n\
                 \x20       calls.append('dict __iter__'); return super().__iter__()\n\
                 \x20   def items(self):\n\
                 \x20       calls.append('items'); return super().items()\n\
                 class MyStr(str):\n\
                 \x20   def __hash__(self):\n\
                 \x20       calls.append('__hash__'); return super().__hash__()\n\
                 \x20   def __eq__(self, other):\n\
                 \x20       calls.append('__eq__'); return super().__eq__(other)\n\
                 \x20   def __str__(self):\n\
                 \x20       calls.append('__str__'); return 'str'\n\
                 class MyInt(int):\n\
                 \x20   def __index__(self):\n\
                 \x20       calls.append('__index__'); return 1\n\
                 \x20   def __int__(self):\n\
                 \x20       calls.append('__int__'); return 1\n\
                 class MyFloat(float):\n\
                 \x20   def __float__(self):\n\
                 \x20       calls.append('__float__'); return 1.0\n\
                 class MyBytes(bytes):\n\
                 \x20   def __bytes__(self):\n\
                 \x20       calls.append('__bytes__'); return b''\n\
                 Point = collections.namedtuple('Point', 'x y')\n",
            )
        })
        .await
        .unwrap()
        .unwrap();
        for (expr, ty, base) in [
            ("MyList([1, 2])", "MyList", "list"),
            ("[0, MyList([1])]", "MyList", "list"),
            ("MyTuple((1,))", "MyTuple", "tuple"),
            ("MyDict(a=1)", "MyDict", "dict"),
            ("{MyStr('k'): 1}", "MyStr", "str"),
            ("{'k': MyStr('v')}", "MyStr", "str"),
            ("MyInt(3)", "MyInt", "int"),
            ("MyFloat(1.5)", "MyFloat", "float"),
            ("MyBytes(b'x')", "MyBytes", "bytes"),
            ("Point(1, 2)", "Point", "tuple"),
        ] {
            // Built first (building it may hash, iterate...), converted alone.
            let e = i
                .run(move |py| {
                    py.exec(&format!("v = {expr}\ncalls.clear()"))?;
                    py.eval("v")
                })
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind, "TypeError", "{expr}: {e}");
            let calls = i.run(|py| py.eval("calls")).await.unwrap().unwrap();
            assert_eq!(calls, PyValue::List(vec![]), "{expr}: no user code ran");
            assert!(
                e.message
                    .starts_with(&format!("a {ty} does not convert to a brood PyValue")),
                "{expr}: {e}"
            );
            assert!(e.message.contains(&format!("exact {base}")), "{expr}: {e}");
        }
        // The exact types still convert, `bytearray` as bytes.
        let ok = i
            .run(|py| py.eval("[True, 1, 1.5, 's', b'b', bytearray(b'ba'), (1,), {'k': None}]"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            ok,
            PyValue::List(vec![
                true.into(),
                1.into(),
                1.5.into(),
                "s".into(),
                PyValue::Bytes(Bytes::from_static(b"b")),
                PyValue::Bytes(Bytes::from_static(b"ba")),
                PyValue::List(vec![1.into()]),
                PyValue::Dict(vec![("k".into(), PyValue::None)]),
            ])
        );
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

/// Pure Python for `secs` seconds (so an interrupt lands at once).
fn spin(secs: f64) -> String {
    format!(
        "import time\nend = time.monotonic() + {secs}\nwhile time.monotonic() < end:\n    pass\n"
    )
}

/// Wait until the host runs a job other than `not` (and than none); its id.
async fn next_running(i: &Interp, not: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let job = i.running_job();
        if job != 0 && job != not {
            return job;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn an_interrupt_for_a_job_that_ended_is_refused() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        let i2 = i.clone();
        let first = tokio::spawn(async move { i2.run(|py| py.exec(&spin(0.05))).await });
        let first_id = next_running(&i, 0).await;
        first.await.unwrap().unwrap().unwrap();
        let i2 = i.clone();
        let second = tokio::spawn(async move { i2.run(|py| py.exec(&spin(0.3))).await });
        // (The first job may still show as running for a moment after its result came:
        // its result is sent from within it.)
        let second_id = next_running(&i, first_id).await;
        assert!(second_id > first_id);
        // An interrupt meant for the first job reaches the interpreter while the second
        // runs: refused.
        let i3 = i.clone();
        let sent = tokio::task::spawn_blocking(move || i3.interrupt_job_now(first_id))
            .await
            .unwrap();
        assert!(!sent, "an interrupt for an ended job is refused");
        second
            .await
            .unwrap()
            .unwrap()
            .expect("the second job runs to completion");
        // One for the running job lands.
        let i2 = i.clone();
        let third = tokio::spawn(async move { i2.run(|py| py.exec(&spin(5.0))).await });
        let third_id = next_running(&i, second_id).await;
        let i3 = i.clone();
        assert!(
            tokio::task::spawn_blocking(move || i3.interrupt_job_now(third_id))
                .await
                .unwrap()
        );
        let e = third.await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.kind, "KeyboardInterrupt");
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn a_late_interrupt_does_not_reach_the_next_job() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        // The first job holds the interpreter for 300 ms in Rust (no Python code runs, so
        // no interrupt can be raised in it) and is cancelled after 50 ms: the interrupt is
        // asked for while it runs, and can only be delivered once it has ended.
        let i2 = i.clone();
        let first = tokio::spawn(async move {
            i2.run(|_py| std::thread::sleep(Duration::from_millis(300)))
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let i2 = i.clone();
        let second = tokio::spawn(async move { i2.run(|py| py.exec(&spin(0.3))).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        second
            .await
            .unwrap()
            .unwrap()
            .expect("the next job runs to completion");
        assert_eq!(i.shutdown(Duration::from_secs(5)), Shutdown::Clean);
    });
}

#[test]
fn an_async_exception_left_pending_by_a_job_does_not_reach_the_next() {
    rt().block_on(async {
        // The main interpreter: ctypes imports there on every tier.
        let m = Interp::main().unwrap();
        m.run(|py| {
            py.exec(
                "import ctypes, functools, threading\n\
                 brood_raise_later = functools.partial(\n\
                 \x20   ctypes.pythonapi.PyThreadState_SetAsyncExc,\n\
                 \x20   ctypes.c_ulong(threading.get_ident()),\n\
                 \x20   ctypes.py_object(KeyboardInterrupt))\n",
            )
        })
        .await
        .unwrap()
        .unwrap();
        // Called from C (no Python frame of the job runs after it): the exception is still
        // pending for the host thread when the job ends.
        let found = m
            .run(|py| py.call("__main__:brood_raise_later", &[], &[]))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, PyValue::Int(1), "one thread state got it");
        let next = m.run(|py| py.eval("40 + 2")).await.unwrap();
        assert_eq!(next, Ok(PyValue::Int(42)), "the next job is not interrupted");
        // The same from Python code, as its last statement (the job may or may not see it
        // itself); the next job runs either way.
        let _ = m
            .run(|py| {
                py.exec(
                    "ctypes.pythonapi.PyThreadState_SetAsyncExc(\n\
                     \x20   ctypes.c_ulong(threading.get_ident()), ctypes.py_object(KeyboardInterrupt))\n",
                )
            })
            .await
            .unwrap();
        let next = m.run(|py| py.eval("6 * 7")).await.unwrap();
        assert_eq!(next, Ok(PyValue::Int(42)));
    });
}

#[test]
fn a_small_value_that_shares_its_lists_exponentially_is_a_typed_error() {
    rt().block_on(async {
        let i = Interp::new_sub(true).unwrap();
        // 100 levels, 200 references, 2^100 items once shared lists are expanded.
        i.run(|py| py.exec("a = [1]\nfor _ in range(100):\n    a = [a, a]\n"))
            .await
            .unwrap()
            .unwrap();
        let t = std::time::Instant::now();
        let e = i.run(|py| py.eval("a")).await.unwrap().unwrap_err();
        assert_eq!(e.kind, "ValueError", "{e}");
        assert!(e.message.contains("MAX_ITEMS"), "{e}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            t.elapsed()
        );
        // Below the budget, sharing converts as before.
        let v = i
            .run(|py| py.eval("[[1, 2]] * 1000"))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(v, PyValue::List(ref l) if l.len() == 1000));
        assert_eq!(
            i.shutdown(std::time::Duration::from_secs(5)),
            Shutdown::Clean
        );
    });
}
