//! Argument validation of `tokengate bench`.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    a: BenchArgs,
}

pub(crate) fn parse(args: &str) -> Result<BenchArgs, String> {
    let argv = std::iter::once("bench").chain(args.split_whitespace());
    Cli::try_parse_from(argv).map(|c| c.a).map_err(|e| e.to_string())
}

fn plan(args: &str) -> Result<Plan, String> {
    parse(args)?.plan().map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let p = plan("--url http://127.0.0.1:8080/x --no-token").unwrap();
    assert_eq!((p.connections, p.threads, p.h2, p.rate), (64, 1, false, None));
    assert_eq!((p.duration, p.warmup), (Duration::from_secs(10), Duration::from_secs(1)));
    assert_eq!(p.mode, Mode::Validate(TokenSource::None));
    assert_eq!(p.targets.iter().map(|u| u.path()).collect::<Vec<_>>(), ["/x"]);
    assert_eq!((p.compare_rounds, p.plot, p.plot_scale), (None, None, PlotScale::Log));
}

#[test]
fn exactly_one_token_source() {
    let u = "--url http://h/";
    for bad in ["", "--no-token --token-file f", "--token-file f --mint-key k.pem"] {
        let e = plan(&format!("{u} {bad}")).unwrap_err();
        assert!(e.contains("exactly one token source"), "{bad}: {e}");
    }
    let p = plan(&format!("{u} --mint-key /k/rs256.pem --distinct 5 --scope read")).unwrap();
    let Mode::Validate(TokenSource::Mint(m)) = p.mode else { panic!() };
    assert_eq!((m.kid.as_str(), m.distinct, m.scope.as_str()), ("rs256", 5, "read"));
    assert!(plan(&format!("{u} --token-file f --distinct 2")).unwrap_err().contains("--distinct needs"));
    assert!(plan(&format!("{u} --token-endpoint http://h/token")).unwrap_err().contains("--client-id"));
    let p = plan(&format!("{u} --token-endpoint http://h/token --client-id a --client-secret b")).unwrap();
    assert!(matches!(p.mode, Mode::Validate(TokenSource::Endpoint { .. })));
}

#[test]
fn rejects_bad_numbers_and_urls() {
    for (args, want) in [
        ("--url http://h/ --no-token -c 0", "--connections"),
        ("--url http://h/ --no-token --threads 0", "--threads"),
        ("--url http://h/ --no-token --rate 0", "--rate"),
        ("--url http://h/ --no-token -d 0", "--duration"),
        ("--url http://h/ --no-token --warmup=-1", "--warmup"),
        ("--url ftp://h/ --no-token", "http://"),
        ("--url /nohost --no-token", "http://"),
        ("--url http://h/ --no-token --insecure", "https:// targets only"),
        ("--url http://h/ --no-token -H nocolon", "--header"),
    ] {
        let e = plan(args).unwrap_err();
        assert!(e.contains(want), "{args}: {e}");
    }
    assert!(parse("--url https://h/ --no-token --insecure --cacert c.pem").is_err());
    assert!(parse("--no-token").is_err(), "--url is required");
    assert!(plan("--url https://h/ --no-token --insecure --h2 --rate 1000 -H x-a:1").is_ok());
}

#[test]
fn issue_mode_builds_the_form_and_basic_auth() {
    let p = plan("--issue http://h/token --client-id my%20app --client-secret s:1 --scope read").unwrap();
    let Mode::Issue(spec) = p.mode else { panic!() };
    assert_eq!(spec.body, "grant_type=client_credentials&scope=read");
    assert_eq!(spec.basic.as_deref(), Some("Basic bXklMjUyMGFwcDpzJTNBMQ=="));
    let p = plan("--issue http://h/token --username u --password p&q").unwrap();
    let Mode::Issue(spec) = p.mode else { panic!() };
    assert_eq!((spec.body.as_str(), spec.basic), ("grant_type=password&username=u&password=p%26q", None));
    assert!(plan("--issue http://h/token").unwrap_err().contains("--client-id"));
    assert!(plan("--issue http://h/token --client-id a --client-secret b --no-token").is_err());
    assert!(parse("--issue http://h/t --url http://h/").is_err(), "--issue replaces --url");
    assert!(
        plan("--issue http://h/token --username u --password p --refresh").unwrap().mode
            == Mode::Issue(IssueSpec {
                basic: None,
                body: "grant_type=password&username=u&password=p".into(),
                refresh: true
            })
    );
    assert!(
        parse("--issue http://h/token --client-id a --client-secret b --refresh").is_err(),
        "--refresh needs a login"
    );
    assert!(parse("--url http://h/ --no-token --username u").is_err(), "--username needs --password");
}

#[test]
fn several_urls_compare_and_plot() {
    let p = plan("--url http://a/ --url https://b/x --no-token --plot out.svg --plot-scale linear").unwrap();
    let urls: Vec<String> = p.targets.iter().map(ToString::to_string).collect();
    assert_eq!(urls, ["http://a/", "https://b/x"]);
    assert_eq!((p.plot.as_deref(), p.plot_scale), (Some(std::path::Path::new("out.svg")), PlotScale::Linear));

    let p = plan("--compare http://a/ http://b/ --no-token").unwrap();
    assert_eq!((p.targets.len(), p.compare_rounds), (2, Some(5)), "5 rounds by default");
    assert_eq!(plan("--compare http://a/ http://b/ --no-token --rounds 2").unwrap().compare_rounds, Some(2));
    // --insecure is fine when either side is https.
    assert!(plan("--compare http://a/ https://b/ --no-token --insecure").is_ok());

    for (args, want) in [
        ("--compare http://a/ --no-token", "2 values"),
        ("--compare http://a/ http://b/ http://c/ --no-token", "unexpected argument"),
        ("--compare http://a/ http://b/ --url http://c/ --no-token", "cannot be used with"),
        ("--compare http://a/ http://b/ --issue http://t/ --client-id a --client-secret b", "cannot be used with"),
        ("--plot-scale cubic --url http://a/ --no-token --plot x.svg", "invalid value"),
    ] {
        let e = parse(args).err().unwrap_or_else(|| panic!("{args} parsed"));
        assert!(e.contains(want), "{args}: {e}");
    }
    for (args, want) in [
        ("--compare http://a/ ftp://b/ --no-token", "--compare: \"ftp://b/\" must start with http"),
        ("--compare http://a/ http://b/ --no-token --rounds 0", "--rounds must be between 1 and 1000"),
        ("--url http://a/ --no-token --rounds 3", "--rounds counts the rounds of --compare"),
        ("--url http://a/ --no-token --plot-scale linear", "--plot-scale is the latency axis of --plot"),
        ("--url http://a/ --no-token --plot /", "--plot /: want a file name"),
        ("--url http://a/ --url ftp://b/ --no-token", "--url: \"ftp://b/\""),
    ] {
        let e = plan(args).unwrap_err();
        assert!(e.contains(want), "{args}: {e}");
    }
}
