//! Request smuggling and framing ambiguities, as raw bytes on the plain listener (and two over
//! TLS). Each request is followed by a hidden `GET /admin/smuggled` and then a plain
//! `GET /end` with `Connection: close`. Whatever the gateway answers (400, or one request
//! handled and the rest parsed as its own pipelined requests), the upstreams must see at most
//! `/pub` and `/end`, each at most once, and never the smuggled path.

use crate::support::*;

const SMUG: &str = "GET /admin/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";
const END: &str = "GET /end HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n";

/// (name, request bytes) for every framing attack; `smuggled` is placed where a
/// desynchronised parser would start its next request.
fn cases() -> Vec<(String, String)> {
    let zero_then = format!("0\r\n\r\n{SMUG}");
    let chunk = format!("{:x}\r\n{SMUG}\r\n0\r\n\r\n", SMUG.len());
    let post = |headers: &str, body: &str| format!("POST /pub HTTP/1.1\r\nHost: gw\r\n{headers}\r\n{body}{END}");
    let mut v: Vec<(String, String)> = vec![
        (
            "CL.TE".into(),
            post(&format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", zero_then.len()), &zero_then),
        ),
        ("TE.CL".into(), post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", &chunk)),
        (
            "duplicate differing Content-Length".into(),
            post(&format!("Content-Length: 0\r\nContent-Length: {}\r\n", SMUG.len()), SMUG),
        ),
        ("Content-Length list".into(), post(&format!("Content-Length: 0, {}\r\n", SMUG.len()), SMUG)),
    ];
    for cl in ["+5", "5 5", "0x5", "-5", "5.0", "05abc", "99999999999999999999999"] {
        v.push((format!("Content-Length: {cl}"), post(&format!("Content-Length: {cl}\r\n"), &format!("hello{SMUG}"))));
    }
    for te in [
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding:  chunked",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunkedx",
        "Transfer-Encoding:\tchunked",
        "Transfer-Encoding: CHUNKED",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding: identity",
        "Transfer-Encoding : chunked",
        "Transfer_Encoding: chunked",
        "X-Padding: a\r\n Transfer-Encoding: chunked",
    ] {
        v.push((
            format!("{te:?} + Content-Length"),
            post(&format!("{te}\r\nContent-Length: {}\r\n", zero_then.len()), &zero_then),
        ));
        v.push((format!("{te:?} alone"), post(&format!("{te}\r\n"), &zero_then)));
    }
    v.push((
        "Content-Length with a space before the colon".into(),
        post(&format!("Content-Length : {}\r\n", SMUG.len()), SMUG),
    ));
    v.push((
        "bare LF line endings".into(),
        format!(
            "POST /pub HTTP/1.1\nHost: gw\nContent-Length: {}\nTransfer-Encoding: chunked\n\n{zero_then}{END}",
            zero_then.len()
        ),
    ));
    v.push((
        "bare LF inside a header line".into(),
        format!("POST /pub HTTP/1.1\r\nHost: gw\r\nX-A: b\nContent-Length: {}\r\n\r\n{SMUG}{END}", SMUG.len()),
    ));
    v.push(("bare CR".into(), format!("POST /pub HTTP/1.1\r\nHost: gw\rContent-Length: 0\r\n\r\n{SMUG}{END}")));
    v.push((
        "chunk size with extension and overflow".into(),
        post("Transfer-Encoding: chunked\r\n", &format!("ffffffffffffffffff1;x=y\r\n{SMUG}\r\n0\r\n\r\n")),
    ));
    v.push((
        "GET with a body".into(),
        format!("GET /pub HTTP/1.1\r\nHost: gw\r\nContent-Length: {}\r\n\r\n{SMUG}{END}", SMUG.len()),
    ));
    v
}

/// Runs one case and checks the invariant; returns a line describing what happened.
async fn check(lab: &Lab, name: &str, out: Vec<u8>, before: (usize, usize)) -> String {
    let st = statuses(&out);
    let seen: Vec<String> = lab.public.seen().into_iter().skip(before.0).map(|s| s.uri).collect();
    assert_eq!(lab.admin.count(), before.1, "{name}: the protected upstream received a request; statuses {st:?}");
    assert!(!seen.iter().any(|u| u.contains("smuggled")), "{name}: the smuggled request was forwarded: {seen:?}");
    for p in ["/pub", "/end"] {
        assert!(seen.iter().filter(|u| *u == p).count() <= 1, "{name}: {p} forwarded twice: {seen:?}");
    }
    assert!(seen.iter().all(|u| u == "/pub" || u == "/end"), "{name}: unexpected upstream paths {seen:?}");
    // A 200 for the smuggled request would show up as a 200 beyond those the two real ones got.
    let oks = st.iter().filter(|s| **s == 200).count();
    assert!(oks <= seen.len(), "{name}: {oks} answers of 200 for {} forwarded requests; statuses {st:?}", seen.len());
    format!("{name}: statuses {st:?}, upstream saw {seen:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_on_the_plain_listener_never_smuggle_a_request() {
    let lab = Lab::start().await;
    let mut report = Vec::new();
    for (name, bytes) in cases() {
        let before = (lab.public.count(), lab.admin.count());
        let out = raw_plain(lab.gw.plain, bytes.as_bytes()).await;
        report.push(check(&lab, &name, out, before).await);
    }
    eprintln!("smuggling (plain):\n  {}", report.join("\n  "));
    lab.healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_over_tls_never_smuggle_a_request() {
    let lab = Lab::start().await;
    let mut report = Vec::new();
    for (name, bytes) in cases().into_iter().filter(|(n, _)| n == "CL.TE" || n == "TE.CL" || n.starts_with("duplicate"))
    {
        let before = (lab.public.count(), lab.admin.count());
        let out = raw_tls(&lab.gw, bytes.as_bytes()).await;
        report.push(check(&lab, &format!("TLS {name}"), out, before).await);
    }
    eprintln!("smuggling (TLS):\n  {}", report.join("\n  "));
    lab.healthy().await;
}

/// The strict outcome: a request that is ambiguous about its own length is refused with 400,
/// except Content-Length + Transfer-Encoding: chunked, which RFC 9112 section 6.1 lets a server
/// process as chunked provided it closes the connection after answering (nothing after it runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_length_requests_are_refused_or_end_the_connection() {
    let lab = Lab::start().await;
    let mut handled = Vec::new();
    for (name, bytes) in cases() {
        let cl_and_te = name == "CL.TE" || name == "TE.CL";
        let must_400 = name.starts_with("duplicate")
            || name.starts_with("Content-Length list")
            || name.starts_with("Content-Length: ")
            || name.contains("space before the colon")
            || name.contains("xchunked")
            || name.contains("chunkedx")
            || name.contains("Transfer-Encoding : ");
        if !cl_and_te && !must_400 {
            continue;
        }
        let before = lab.public.count();
        let out = raw_plain(lab.gw.plain, bytes.as_bytes()).await;
        let st = statuses(&out);
        let seen = lab.public.count() - before;
        let ok = if cl_and_te { st.len() == 1 && seen <= 1 } else { st == [400] && seen == 0 };
        if !ok {
            handled.push(format!("{name}: statuses {st:?}, forwarded {seen}"));
        }
    }
    assert!(handled.is_empty(), "ambiguous requests neither refused nor ending the connection: {handled:#?}");
}
