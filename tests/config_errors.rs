//! Every kind of configuration error names the file, the line and the key;
//! `ringlb check` prints them all and exits 1.

use std::path::Path;
use std::process::Command;

use ringlb::config::{Config, ConfigError};

fn errors(text: &str) -> Vec<ConfigError> {
    Config::parse(text, Path::new("lb.toml"))
        .expect_err("config must be rejected")
        .0
}

/// Asserts exactly one error, on `line`, about `key`, whose text contains `needle`.
fn one_error(text: &str, line: usize, key: &str, needle: &str) {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    let shown = e.to_string();
    assert_eq!(e.line, Some(line), "{shown}");
    assert!(
        e.key.contains(key),
        "key `{}` should name `{key}`: {shown}",
        e.key
    );
    assert!(shown.starts_with(&format!("lb.toml:{line}: ")), "{shown}");
    assert!(shown.contains(needle), "`{shown}` should say `{needle}`");
}

const GOOD: &str = r#"
[runtime]
shards = 2
forward = "auto"

[timeouts]
connect = "2s"
client_idle = "1m"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "app"

[[pool]]
name = "app"
balance = "leastconn"
servers = [
  { name = "a", addr = "127.0.0.1:9001" },
  { name = "b", addr = "localhost:9002", weight = 3 },
  { name = "c", addr = "[::1]:9003", backup = true },
]
"#;

#[test]
fn a_good_file_resolves() {
    let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
    assert_eq!(c.runtime.shards, 2);
    assert_eq!(c.timeouts.client_idle.as_secs(), 60);
    assert_eq!(c.pools[0].servers.len(), 3);
    assert_eq!(c.pools[0].servers[1].weight, 3);
    assert!(
        c.pools[0].servers[1].addr.ip().is_loopback(),
        "host names resolve at load"
    );
    assert!(c.pools[0].servers[2].addr.is_ipv6() && c.pools[0].servers[2].backup);
}

#[test]
fn unknown_key() {
    let text = GOOD.replace(
        "balance = \"leastconn\"",
        "balance = \"leastconn\"\nmaxconns = 3",
    );
    one_error(&text, 18, "maxconns", "unknown field");
}

#[test]
fn unknown_key_in_a_server() {
    let text = GOOD.replace("{ name = \"a\", addr", "{ name = \"a\", wieght = 2, addr");
    one_error(&text, 19, "wieght", "unknown field");
}

#[test]
fn duplicate_pool_name() {
    let text = format!("{GOOD}\n[[pool]]\nname = \"app\"\nservers = [{{ name = \"x\", addr = \"127.0.0.1:1\" }}]\n");
    one_error(
        &text,
        25,
        "pool[1].name",
        "duplicate pool name `app` (first defined on line 16)",
    );
}

#[test]
fn duplicate_listener_name() {
    let text = format!(
        "{GOOD}\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\npool = \"app\"\n"
    );
    one_error(
        &text,
        25,
        "listener[1].name",
        "duplicate listener name `web`",
    );
}

#[test]
fn duplicate_server_name() {
    let text = GOOD.replace("{ name = \"b\"", "{ name = \"a\"");
    one_error(
        &text,
        20,
        "pool[0].servers[1].name",
        "duplicate server name `a`",
    );
}

#[test]
fn listener_names_a_missing_pool() {
    let text = GOOD.replace("pool = \"app\"", "pool = \"nope\"");
    one_error(&text, 13, "listener[0].pool", "no pool named `nope`");
}

#[test]
fn pool_without_servers() {
    let text = GOOD.replace(
        "servers = [\n  { name = \"a\", addr = \"127.0.0.1:9001\" },\n  { name = \"b\", addr = \"localhost:9002\", weight = 3 },\n  { name = \"c\", addr = \"[::1]:9003\", backup = true },\n]",
        "servers = []",
    );
    one_error(&text, 18, "pool[0].servers", "has no servers");
    let text = GOOD.replace(
        "servers = [\n  { name = \"a\", addr = \"127.0.0.1:9001\" },\n  { name = \"b\", addr = \"localhost:9002\", weight = 3 },\n  { name = \"c\", addr = \"[::1]:9003\", backup = true },\n]",
        "",
    );
    one_error(&text, 16, "pool[0].servers", "has no servers");
}

#[test]
fn every_weight_zero() {
    let text = GOOD
        .replace(
            "addr = \"127.0.0.1:9001\"",
            "addr = \"127.0.0.1:9001\", weight = 0",
        )
        .replace("weight = 3", "weight = 0")
        .replace("backup = true", "backup = true, weight = 0");
    one_error(&text, 18, "pool[0].servers", "weight 0");
}

#[test]
fn weight_out_of_range() {
    let text = GOOD.replace("weight = 3", "weight = 300");
    one_error(&text, 20, "pool[0].servers[1].weight", "from 0 to 256");
}

#[test]
fn bad_addresses() {
    one_error(
        &GOOD.replace("127.0.0.1:8080", "127.0.0.1"),
        12,
        "listener[0].bind",
        "not an address",
    );
    one_error(
        &GOOD.replace("127.0.0.1:9001", "127.0.0.1:99999"),
        19,
        "pool[0].servers[0].addr",
        "not a port",
    );
    one_error(
        &GOOD.replace("localhost:9002", "no-such-host.invalid:9002"),
        20,
        "pool[0].servers[1].addr",
        "cannot resolve",
    );
}

#[test]
fn bad_duration() {
    one_error(
        &GOOD.replace("\"2s\"", "\"2 parsecs\""),
        7,
        "timeouts.connect",
        "not a duration",
    );
    one_error(
        &GOOD.replace("\"2s\"", "\"0s\""),
        7,
        "timeouts.connect",
        "longer than zero",
    );
}

#[test]
fn bad_enums() {
    one_error(
        &GOOD.replace("\"auto\"", "\"teleport\""),
        4,
        "runtime.forward",
        "unknown mode `teleport`",
    );
    one_error(
        &GOOD.replace("\"leastconn\"", "\"fastest\""),
        17,
        "pool[0].balance",
        "unknown algorithm `fastest`",
    );
    one_error(
        &GOOD.replace("shards = 2", "shards = 0"),
        3,
        "runtime.shards",
        "between 1 and 1024",
    );
}

#[test]
fn syntax_error_names_the_line() {
    one_error(&GOOD.replace("name = \"web\"", "name = \"web"), 11, "", "");
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = GOOD
        .replace("pool = \"app\"", "pool = \"nope\"")
        .replace("weight = 3", "weight = 999")
        .replace("\"2s\"", "\"soon\"");
    let errs = errors(&text);
    let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(lines, vec![Some(7), Some(13), Some(20)], "in source order");
}

/// 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    1 + text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the text"))
}

/// Errors of every kind: unknown keys, wrong types, missing keys and broken
/// rules, none of which hides another.
const MANY_ERRORS: &str = r#"
[runtime]
shards = "two"
forward = "auto"
colour = "blue"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "nope"

[[listener]]
name = "api"
pool = "app"

[[pool]]
name = "app"
retries = 1.5
servers = [
  { name = "a", addr = "127.0.0.1:9001", weight = "x" },
  { name = "b", addr = "127.0.0.1:9002", weight = 999 },
  { name = "c" },
]
"#;

#[test]
fn every_kind_of_error_is_reported_in_one_pass() {
    let errs = errors(MANY_ERRORS);
    let found: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    let l = |needle| Some(line_of(MANY_ERRORS, needle));
    assert_eq!(
        found,
        vec![
            (l("shards = \"two\""), "runtime.shards"),
            (l("colour"), "runtime.colour"),
            (l("pool = \"nope\""), "listener[0].pool"),
            (l("name = \"api\"").map(|n| n - 1), "listener[1].bind"),
            (l("retries = 1.5"), "pool[0].retries"),
            (l("weight = \"x\""), "pool[0].servers[0].weight"),
            (l("weight = 999"), "pool[0].servers[1].weight"),
            (l("{ name = \"c\" }"), "pool[0].servers[2].addr"),
        ],
        "{errs:#?}"
    );
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text[0],
        "lb.toml:3: key `runtime.shards`: expected an integer, found a string"
    );
    assert!(
        text[1].contains("unknown field `colour`, expected one of `shards`"),
        "{text:#?}"
    );
    assert!(text[2].ends_with("no pool named `nope`"), "{text:#?}");
    assert!(text[3].ends_with("missing field `bind`"), "{text:#?}");
    assert!(
        text[4].ends_with("expected an integer, found a float"),
        "{text:#?}"
    );
    assert!(
        text[5].ends_with("expected an integer, found a string"),
        "{text:#?}"
    );
    assert!(text[6].ends_with("must be from 0 to 256"), "{text:#?}");
    assert!(text[7].ends_with("missing field `addr`"), "{text:#?}");
}

#[test]
fn maxconn() {
    let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
    assert_eq!(c.runtime.maxconn, None, "derived at start when not set");
    let text = GOOD.replace("shards = 2", "shards = 2\nmaxconn = 5000");
    let c = Config::parse(&text, Path::new("lb.toml")).unwrap();
    assert_eq!(c.runtime.maxconn, Some(5000));
    for bad in ["0", "10000001", "-1"] {
        one_error(
            &GOOD.replace("shards = 2", &format!("shards = 2\nmaxconn = {bad}")),
            4,
            "runtime.maxconn",
            "must be from 1 to 10000000",
        );
    }
    one_error(
        &GOOD.replace("shards = 2", "shards = 2\nmaxconn = \"lots\""),
        4,
        "runtime.maxconn",
        "expected an integer, found a string",
    );
}

#[test]
fn wrong_shape_of_a_section() {
    one_error(
        &GOOD.replace("[[listener]]", "[listener]"),
        10,
        "listener",
        "expected an array of tables ([[listener]]), found a table",
    );
    one_error(
        &GOOD.replace("  { name = \"a\", addr = \"127.0.0.1:9001\" },", "  \"a\","),
        19,
        "pool[0].servers[0]",
        "expected a table, found a string",
    );
}

#[test]
fn sizes_may_be_bare_numbers() {
    let text = GOOD.replace(
        "shards = 2",
        "shards = 2\nbuffer_size = 65536\npipe_size = \"64k\"",
    );
    let c = Config::parse(&text, Path::new("lb.toml")).unwrap();
    assert_eq!(c.runtime.buffer_size, 65536);
    assert_eq!(c.runtime.pipe_size, 65536);
    one_error(
        &GOOD.replace("shards = 2", "shards = 2\nbuffer_size = 100"),
        4,
        "runtime.buffer_size",
        "`100` is not a size from 4k to 1m",
    );
}

/// Every syntax error the parser recovers from is reported; so is every
/// error before the first one. What follows it, and the rules that need the
/// whole file, wait until the file parses: the parser's guess at the rest
/// would only invent errors.
#[test]
fn syntax_errors_are_all_reported_with_what_precedes_them() {
    let text = r#"
[runtime]
shards = 0
[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "nope"
port = = 3
[[pool]]
name = "app"
retries = 500
servers = [{ name = "a", addr = "127.0.0.1:1", weight = "x }]
"#;
    let errs = errors(text);
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs[0].key, "runtime.shards", "{shown:#?}");
    assert_eq!(errs[0].line, Some(3), "{shown:#?}");
    let syntax: Vec<Option<usize>> = errs[1..].iter().map(|e| e.line).collect();
    assert!(
        syntax.contains(&Some(8)) && syntax.contains(&Some(12)),
        "{shown:#?}"
    );
    assert!(
        errs[1..].iter().all(|e| e.key.is_empty()),
        "after the first syntax error only syntax errors: {shown:#?}"
    );
    assert!(syntax.is_sorted(), "{shown:#?}");
}

/// Runs `ringlb check` on `text` written to a file named `name` in a
/// directory of this test's own; returns the exit code, stdout, stderr and
/// the file's path as the messages show it.
fn check(name: &str, text: &str) -> (Option<i32>, String, String, String) {
    let dir = std::env::temp_dir().join(format!("ringlb-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

#[test]
fn check_command_prints_every_error_and_exits_1() {
    let (code, _, stderr, f) = check(
        "bad.toml",
        &GOOD
            .replace("pool = \"app\"", "pool = \"nope\"")
            .replace("weight = 3", "weight = 999"),
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!("{f}:13: key `listener[0].pool`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{f}:20: key `pool[0].servers[1].weight`")),
        "{stderr}"
    );

    let (code, stdout, _, _) = check("good.toml", GOOD);
    assert_eq!(code, Some(0));
    for expected in [
        "listener web on 127.0.0.1:8080 -> pool app",
        "server b 127.0.0.1:9002 weight 3",
        "maxconn auto (from RLIMIT_NOFILE)",
    ] {
        assert!(stdout.contains(expected), "`{expected}` in:\n{stdout}");
    }
    let (code, stdout, _, _) = check(
        "maxconn.toml",
        &GOOD.replace("shards = 2", "shards = 2\nmaxconn = 5000"),
    );
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\nmaxconn 5000, grace 30s\n"), "{stdout}");
}

#[test]
fn check_command_prints_every_kind_of_error() {
    let (code, _, stderr, f) = check("many.toml", MANY_ERRORS);
    assert_eq!(code, Some(1));
    for expected in [
        format!("error: {f}:3: key `runtime.shards`: expected an integer"),
        format!("error: {f}:5: key `runtime.colour`: unknown field"),
        format!("error: {f}:10: key `listener[0].pool`: no pool named `nope`"),
        format!("error: {f}:12: key `listener[1].bind`: missing field `bind`"),
        format!("error: {f}:18: key `pool[0].retries`: expected an integer"),
        format!("error: {f}:20: key `pool[0].servers[0].weight`: expected an integer"),
        format!("error: {f}:21: key `pool[0].servers[1].weight`: must be from 0 to 256"),
        format!("error: {f}:22: key `pool[0].servers[2].addr`: missing field `addr`"),
        format!("{f}: 8 error(s)"),
    ] {
        assert!(stderr.contains(&expected), "`{expected}` in:\n{stderr}");
    }
}

/// A file with `timeouts.queue = queue`, one listener `web` for pool `app`
/// on lines 1-9, and `pools` from line 10.
fn policies(queue: &str, pools: &str) -> String {
    format!(
        "\n[timeouts]\nqueue = \"{queue}\"\n\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"app\"\n\n{pools}"
    )
}

/// The pool policies resolve: algorithm settings, the waiting room,
/// ejection, slow start, stickiness and checks.
#[test]
fn pool_policies_resolve() {
    let text = policies(
        "2s",
        r#"[[pool]]
name = "app"
balance = "leasttime"
leasttime_observe = "ttfb"
ewma_window = "5s"
allbackups = true
maxqueue = 100
slowstart = "30s"
outlier = { consecutive_failures = 4, ejection = "2s", max_ejection = "1m" }
stick = { on = "src", expire = "10m", size = 5000 }
check = { kind = "http", interval = "1s", timeout = "500ms", rise = 3, fall = 2, jitter = "20%", path = "/healthz", host = "app", expect = "2xx,301" }
servers = [
  { name = "a", addr = "127.0.0.1:9001", maxconn = 8 },
  { name = "b", addr = "127.0.0.1:9002", check = false },
]

[[pool]]
name = "hashed"
balance = "hash"
hash_key = "src_port"
table_size = 655373
servers = [{ name = "a", addr = "127.0.0.1:9001" }]
"#,
    );
    let c = Config::parse(&text, Path::new("lb.toml")).unwrap();
    let p = &c.pools[0].policy;
    assert_eq!(c.timeouts.queue.as_secs(), 2);
    assert_eq!((p.maxqueue, p.allbackups), (100, true));
    assert_eq!(p.outlier.unwrap().consecutive_failures, 4);
    assert_eq!(p.stick.unwrap().size, 5000);
    let check = p.check.as_ref().unwrap();
    assert_eq!((check.rise, check.fall, check.jitter_permille), (3, 2, 200));
    assert!(check.expect.accepts(204) && check.expect.accepts(301) && !check.expect.accepts(302));
    assert_eq!(c.pools[0].servers[0].maxconn, 8);
    assert!(c.pools[0].servers[0].check && !c.pools[0].servers[1].check);
    assert_eq!(c.pools[1].policy.table_size, 655_373);
}

/// Every bad policy value is reported, with its line and key, in one pass.
#[test]
fn bad_pool_policies_are_all_reported() {
    let text = policies(
        "soon",
        r#"[[pool]]
name = "app"
balance = "roundrobin"
table_size = 65536
hash_key = "src"
maxqueue = -1
outlier = { consecutive_failures = 0, ejection = "10s", max_ejection = "5s" }
stick = { on = "cookie", size = 0 }
check = { kind = "udp", interval = "1s", timeout = "2s", rise = 0, jitter = "90%", expect = "ok" }
servers = [{ name = "a", addr = "127.0.0.1:9001", maxconn = -3 }]

[[pool]]
name = "hashed"
balance = "source"
stick = { on = "src" }
check = { kind = "tcp", path = "/x" }
servers = [{ name = "a", addr = "127.0.0.1:9001" }]
"#,
    );
    let errs = errors(&text);
    let got: Vec<(Option<usize>, &str)> = errs.iter().map(|e| (e.line, e.key.as_str())).collect();
    let expected = [
        (Some(3), "timeouts.queue"),
        (Some(13), "pool[0].table_size"),
        (Some(13), "pool[0].table_size"),
        (Some(14), "pool[0].hash_key"),
        (Some(15), "pool[0].maxqueue"),
        (Some(16), "pool[0].outlier.consecutive_failures"),
        (Some(16), "pool[0].outlier.max_ejection"),
        (Some(17), "pool[0].stick.on"),
        (Some(17), "pool[0].stick.size"),
        (Some(18), "pool[0].check.kind"),
        (Some(18), "pool[0].check.timeout"),
        (Some(18), "pool[0].check.rise"),
        (Some(18), "pool[0].check.jitter"),
        (Some(18), "pool[0].check.expect"),
        (Some(19), "pool[0].servers[0].maxconn"),
        (Some(24), "pool[1].stick"),
        (Some(25), "pool[1].check.path"),
    ];
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for want in expected {
        assert!(
            got.contains(&want),
            "{want:?} missing from:\n{}",
            shown.join("\n")
        );
    }
    assert_eq!(errs.len(), expected.len(), "{}", shown.join("\n"));
    for needle in [
        "prime",
        "applies only to balance = source or hash",
        "shorter than the first ejection",
        "cannot stick on `cookie`",
        "unknown check `udp`",
        "longer than the interval",
        "not a status list",
        "already keeps a client on its server",
        "applies only to kind = \"http\"",
    ] {
        assert!(
            shown.iter().any(|s| s.contains(needle)),
            "`{needle}` in:\n{}",
            shown.join("\n")
        );
    }
}

#[test]
fn the_admin_section_is_checked() {
    let with = |admin: &str| format!("{admin}\n{GOOD}");
    // Loopback needs no token; a token from a file is read and trimmed.
    let c = Config::parse(
        &with("[admin]\nbind = \"127.0.0.1:9900\""),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(c.admin.unwrap().token, None);
    let token_file = std::env::temp_dir().join(format!("ringlb-token-{}", std::process::id()));
    std::fs::write(&token_file, "abc123\n").unwrap();
    let text = with(&format!(
        "[admin]\nbind = \"0.0.0.0:9900\"\ntoken_file = \"{}\"",
        token_file.display()
    ));
    let c = Config::parse(&text, Path::new("lb.toml")).unwrap();
    assert_eq!(c.admin.unwrap().token.as_deref(), Some("abc123"));
    std::fs::remove_file(&token_file).unwrap();
    // Anything but loopback without a token is refused.
    one_error(
        &with("[admin]\nbind = \"0.0.0.0:9900\""),
        2,
        "admin.bind",
        "not a loopback address",
    );
    one_error(
        &with("[admin]\nbind = \"127.0.0.1:9900\"\ntoken = \"a\"\ntoken_file = \"/x\""),
        3,
        "admin.token",
        "not both",
    );
    one_error(
        &with("[admin]\nbind = \"127.0.0.1:9900\"\ntoken_file = \"/nonexistent/token\""),
        3,
        "admin.token_file",
        "cannot read /nonexistent/token",
    );
    one_error(
        &with("[admin]\ntoken = \"a\""),
        1,
        "admin.bind",
        "is required",
    );
    one_error(&with("[admin]\nbind = \"nowhere\""), 2, "admin.bind", "");
}

#[test]
fn the_log_section_and_the_control_socket_are_checked() {
    use ringlb::config::{AccessFormat, AccessTarget, ControlSocket};
    let with = |head: &str| format!("{head}\n{GOOD}");
    let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
    assert_eq!(c.access_log, None, "off unless asked for");
    assert!(matches!(
        c.runtime.control_socket,
        ControlSocket::Default(_)
    ));
    let c = Config::parse(
        &with("[log]\naccess = \"/var/log/ringlb/access.log\"\nformat = \"json\"\nqueue = 100"),
        Path::new("lb.toml"),
    )
    .unwrap();
    let a = c.access_log.unwrap();
    assert_eq!(
        a.target,
        AccessTarget::File("/var/log/ringlb/access.log".into())
    );
    assert_eq!((a.format, a.queue), (AccessFormat::Json, 100));
    let c = Config::parse(&with("[log]\naccess = \"stderr\""), Path::new("lb.toml")).unwrap();
    assert_eq!(c.access_log.unwrap().target, AccessTarget::Stderr);

    one_error(
        &with("[log]\naccess = \"stderr\"\nformat = \"xml\""),
        3,
        "log.format",
        "unknown format `xml`",
    );
    one_error(
        &with("[log]\naccess = \"stderr\"\nqueue = 3"),
        3,
        "log.queue",
        "from 16",
    );
    one_error(
        &with("[log]\nformat = \"json\""),
        2,
        "log.access",
        "is not set",
    );
    one_error(
        &with("[log]\naccess = \"/tmp\""),
        2,
        "log.access",
        "is a directory",
    );
    one_error(&with("[log]\nacces = \"stderr\""), 2, "acces", "unknown");

    let c = Config::parse(
        &GOOD.replace(
            "[runtime]\n",
            "[runtime]\ncontrol_socket = \"/run/lb/ctl.sock\"\n",
        ),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(
        c.runtime.control_socket,
        ControlSocket::Configured("/run/lb/ctl.sock".into())
    );
    let c = Config::parse(
        &GOOD.replace("[runtime]\n", "[runtime]\ncontrol_socket = \"\"\n"),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(c.runtime.control_socket, ControlSocket::Off);
    one_error(
        &GOOD.replace("[runtime]\n", "[runtime]\ncontrol_socket = \"ctl.sock\"\n"),
        3,
        "runtime.control_socket",
        "not an absolute path",
    );
}

#[test]
fn access_list_prefixes_are_checked() {
    let with = |lists: &str| {
        GOOD.replace(
            "pool = \"app\"\n\n",
            &format!("pool = \"app\"\n{lists}\n\n"),
        )
    };
    let c = Config::parse(
        &with(
            "allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"10.1.0.0/16\", \"192.0.2.7\"]",
        ),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(c.listeners[0].allow.len(), 2);
    assert_eq!(c.listeners[0].deny[1].len, 32);
    let errs = errors(&with(
        "allow = [\"10.0.0.1/8\"]\ndeny = [\"10.1.0.0/16\", \"300.1.1.1\", \"::/129\"]",
    ));
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 3, "{shown:#?}");
    assert!(
        shown[0].contains("listener[0].allow[0]") && shown[0].contains("did you mean 10.0.0.0/8"),
        "{}",
        shown[0]
    );
    assert!(
        shown[1].contains("listener[0].deny[1]")
            && shown[1].contains("not an address or a CIDR prefix"),
        "{}",
        shown[1]
    );
    assert!(
        shown[2].contains("listener[0].deny[2]") && shown[2].contains("longer than the address"),
        "{}",
        shown[2]
    );
    one_error(
        &with("deny = \"10.0.0.0/8\""),
        14,
        "listener[0].deny",
        "array",
    );
}

#[test]
fn proxy_protocol_settings_are_checked() {
    use ringlb::config::SendProxy;
    let listener = |extra: &str| {
        GOOD.replace(
            "pool = \"app\"\n\n",
            &format!("pool = \"app\"\n{extra}\n\n"),
        )
    };
    let pool = |extra: &str| {
        GOOD.replace(
            "balance = \"leastconn\"\n",
            &format!("balance = \"leastconn\"\n{extra}\n"),
        )
    };
    let c = Config::parse(
        &listener("accept_proxy = true\nproxy_trusted = [\"10.0.0.0/8\"]"),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert!(c.listeners[0].accept_proxy);
    assert_eq!(c.listeners[0].proxy_trusted.len(), 1);
    assert_eq!(c.timeouts.proxy_header.as_secs(), 3, "the default");
    let c = Config::parse(
        &pool("send_proxy = \"v2\"\nsend_proxy_unique_id = true").replace(
            "{ name = \"a\", addr = \"127.0.0.1:9001\" }",
            "{ name = \"a\", addr = \"127.0.0.1:9001\", send_proxy = \"off\" }",
        ),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(c.pools[0].policy.send_proxy, SendProxy::V2);
    assert_eq!(c.pools[0].servers[0].send_proxy, Some(SendProxy::Off));
    assert_eq!(c.pools[0].servers[1].send_proxy, None);

    one_error(
        &listener("proxy_trusted = [\"10.0.0.0/8\"]"),
        14,
        "listener[0].proxy_trusted",
        "only with accept_proxy",
    );
    one_error(
        &listener("accept_proxy = true\ndeny = [\"10.0.0.0/8\"]"),
        14,
        "listener[0].accept_proxy",
        "set proxy_trusted too",
    );
    one_error(
        &listener("accept_proxy = true\nproxy_trusted = []"),
        15,
        "listener[0].proxy_trusted",
        "is empty",
    );
    one_error(
        &pool("send_proxy = \"v3\""),
        18,
        "pool[0].send_proxy",
        "unknown PROXY protocol version `v3`",
    );
    one_error(
        &pool("send_proxy = \"v1\"\nsend_proxy_unique_id = true"),
        19,
        "pool[0].send_proxy_unique_id",
        "needs send_proxy = \"v2\"",
    );
    one_error(
        &GOOD.replace(
            "client_idle = \"1m\"",
            "client_idle = \"1m\"\nproxy_header = \"soon\"",
        ),
        9,
        "timeouts.proxy_header",
        "soon",
    );
}

#[test]
fn limits_are_checked() {
    use ringlb::limit::Algorithm;
    let listener = |extra: &str| {
        GOOD.replace(
            "pool = \"app\"\n\n",
            &format!("pool = \"app\"\n{extra}\n\n"),
        )
    };
    let c = Config::parse(
        &listener("limit = { key = \"src\", algorithm = \"token_bucket\", rate = \"100/s\", burst = 200, size = 5000 }"),
        Path::new("lb.toml"),
    )
    .unwrap();
    let l = c.listeners[0].limit.clone().unwrap();
    assert_eq!(
        (l.algorithm, l.rate.limit, l.burst, l.size),
        (Algorithm::TokenBucket, 100, 200, 5000)
    );
    let c = Config::parse(
        &listener("limit = { algorithm = \"sliding_window\", rate = \"20/m\" }"),
        Path::new("lb.toml"),
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].limit.as_ref().unwrap().rate.window_us,
        60_000_000
    );
    let errs = errors(&listener(
        "limit = { key = \"dst\", algorithm = \"gcra\", rate = \"fast\", burst = 0, size = 0 }",
    ));
    let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for needle in [
        "limit.key",
        "limit.algorithm",
        "limit.rate",
        "limit.burst",
        "limit.size",
    ] {
        assert!(
            shown.iter().any(|s| s.contains(needle)),
            "{needle}: {shown:#?}"
        );
    }
    one_error(
        &listener("limit = { algorithm = \"fixed_window\", rate = \"10/s\", burst = 5 }"),
        14,
        "listener[0].limit.burst",
        "fixed_window does not read burst",
    );
    one_error(
        &listener("limit = { algorithm = \"token_bucket\" }"),
        14,
        "listener[0].limit.rate",
        "is required",
    );
}

#[test]
fn an_endless_token_file_is_refused_not_read_forever() {
    let text = format!("[admin]\nbind = \"0.0.0.0:9900\"\ntoken_file = \"/dev/zero\"\n{GOOD}");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("not a regular file")),
        "{errs:#?}"
    );
}
