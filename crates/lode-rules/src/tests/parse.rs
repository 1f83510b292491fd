//! Parsing: accepted statements, column names, precedence, and errors with positions.

use serde_json::json;

use super::{check, row, sample};
use crate::{MAX_DEPTH, MAX_SQL_LEN, Rule, Source};

/// Asserts that `sql` fails at `(line, column)` with exactly this expectation and finding.
#[track_caller]
fn fails(sql: &str, line: u32, column: u32, expected: &str, found: &str) {
    let err = Rule::parse(sql).expect_err(sql);
    assert_eq!(
        (
            err.line,
            err.column,
            err.expected.as_str(),
            err.found.as_str()
        ),
        (line, column, expected, found),
        "{sql}"
    );
}

#[test]
fn clauses_and_accessors() {
    let rule = Rule::parse(r#"SELECT * FROM "/a1xx/+/user/update""#).unwrap();
    assert_eq!(rule.topic_filter(), "/a1xx/+/user/update");
    assert!(rule.select_all());
    assert_eq!(rule.source(), Source::Topic);
    assert!(rule.matches_topic("/a1xx/dev/user/update"));
    assert!(!rule.matches_topic("/a1xx/dev/user/other"));

    let rule =
        Rule::parse("select a from '/sys/a1xx/+/thing/event/property/post' where a > 1;").unwrap();
    assert!(!rule.select_all());
    assert_eq!(
        rule.source(),
        Source::PropertyPost {
            product_key: Some("a1xx".to_owned()),
            device_name: None,
        }
    );
    assert_eq!(
        Rule::parse("SELECT a FROM '/as/mqtt/status/a1xx/+'")
            .unwrap()
            .source(),
        Source::Status {
            product_key: Some("a1xx".to_owned()),
            device_name: None,
        }
    );
}

#[test]
fn column_names() {
    let sql = r##"SELECT items.Temp.value, list[0], deviceName(), temperature t,
                 humidity AS "h", name AS 'n', "odd key", abs(temperature) tmr, 1 + 1
                 FROM "#""##;
    let row = row(sql, &sample());
    let names: Vec<&str> = row.keys().map(String::as_str).collect();
    let mut expected = vec![
        "value",
        "list[0]",
        "deviceName()",
        "t",
        "h",
        "n",
        "odd key",
        "tmr",
        "1 + 1",
    ];
    expected.sort_unstable();
    let mut names = names;
    names.sort_unstable();
    assert_eq!(names, expected);
}

#[test]
fn keywords_comments_and_quoting() {
    let sql = "sElEcT temperature -- the reading\n AS t FrOm \"#\" WhErE temperature IS NOT NULL ;";
    assert_eq!(row(sql, &sample()).get("t"), Some(&json!(21)));
    // `"a"` is a field, `'a'` a constant, as on the reference platform.
    check("\"name\"", json!("Sensor-01"));
    check("'name'", json!("name"));
    check("`name`", json!("Sensor-01"));
    check("items.\"Temp\".`value`", json!(21.5));
    check("list[2]['three']", json!(3));
    check("list[2].three", json!(3));
    check("\"odd key\"", json!("spaced"));
    check("'it''s'", json!("it's"));
    check(r"'a\'b'", json!("a'b"));
}

#[test]
fn precedence_and_associativity() {
    check("1 + 2 * 3", json!(7));
    check("(1 + 2) * 3", json!(9));
    check("10 - 2 - 3", json!(5));
    check("2 * 3 % 4", json!(2));
    check("-2 * 3", json!(-6));
    check("- - 2", json!(2));
    check("+2", json!(2));
    check("NOT 1 = 2", json!(true));
    check("NOT FALSE AND FALSE", json!(false));
    check("TRUE OR FALSE AND FALSE", json!(true));
    check("1 < 2 = TRUE", json!(true));
    check("1 + 1 BETWEEN 1 AND 3 AND TRUE", json!(true));
    check("temperature + 1 IN (22, 23)", json!(true));
}

#[test]
fn parse_errors_name_position_and_expectation() {
    fails("SELEC a FROM \"t\"", 1, 1, "`SELECT`", "`SELEC`");
    fails("SELECT a FRM \"t\"", 1, 14, "`,` or `FROM`", "\"t\"");
    fails("SELECT a, FROM \"t\"", 1, 11, "an expression", "`FROM`");
    fails("SELECT a FROM t", 1, 15, "a quoted topic filter", "`t`");
    fails(
        "SELECT a FROM \"a/#/b\"",
        1,
        15,
        "a valid topic filter (`+` and `#` as whole levels, `#` last)",
        "\"a/#/b\"",
    );
    fails("SELECT a + FROM \"t\"", 1, 12, "an expression", "`FROM`");
    fails(
        "SELECT (a + 1 FROM \"t\"",
        1,
        15,
        "`)` or an operator",
        "`FROM`",
    );
    fails(
        "SELECT a FROM \"t\" WHERE",
        1,
        24,
        "an expression",
        "end of input",
    );
    fails(
        "SELECT a FROM \"t\" WHERE b = 'x",
        1,
        29,
        "a closing ' for the ' here",
        "end of input",
    );
    fails(
        "SELECT foo(1) FROM \"t\"",
        1,
        8,
        "a known function",
        "`foo`",
    );
    fails(
        "SELECT topic(1, 2) FROM \"t\"",
        1,
        8,
        "0 to 1 arguments for `topic`",
        "2",
    );
    fails(
        "SELECT deviceName(1) FROM \"t\"",
        1,
        8,
        "no arguments for `deviceName`",
        "1",
    );
    fails(
        "SELECT CASE WHEN a THEN 1 FROM \"t\"",
        1,
        27,
        "`WHEN`, `ELSE` or `END`",
        "`FROM`",
    );
    fails("SELECT CASE a END FROM \"t\"", 1, 15, "`WHEN`", "`END`");
    fails(
        "SELECT a FROM \"t\" WHERE a IN 1, 2",
        1,
        30,
        "`(` and a list of values",
        "`1`",
    );
    fails(
        "SELECT a FROM \"t\" WHERE a IS 5",
        1,
        30,
        "`NULL` or `NOT NULL`",
        "`5`",
    );
    fails(
        "SELECT a FROM \"t\" WHERE a BETWEEN 1 5",
        1,
        37,
        "`AND`",
        "`5`",
    );
    fails(
        "SELECT CAST(a AS date) FROM \"t\"",
        1,
        18,
        "a type: `int`, `double`, `string` or `bool`",
        "`date`",
    );
    fails(
        "SELECT a[x] FROM \"t\"",
        1,
        10,
        "an array index or a quoted key",
        "`x`",
    );
    fails("SELECT a AS FROM \"t\"", 1, 13, "an alias", "`FROM`");
    fails(
        "SELECT a\nFROM \"t\"\nWHERE a > > 1",
        3,
        11,
        "an expression",
        "`>`",
    );
    fails(
        "SELECT a FROM \"t\" b",
        1,
        19,
        "`WHERE` or end of input",
        "`b`",
    );
    fails(
        "SELECT a FROM \"t\" WHERE a NOT b",
        1,
        27,
        "an operator or end of input",
        "`NOT`",
    );
    fails("SELECT a @ b FROM \"t\"", 1, 10, "a token", "`@`");
    fails(
        "SELECT a FROM \"t\" WHERE a LIKE 'x' ESCAPE 'ab'",
        1,
        43,
        "a one-character string",
        "'ab'",
    );
    fails("SELECT 1e999 FROM \"t\"", 1, 8, "a finite number", "`inf`");
    fails("SELECT lower(*) FROM \"t\"", 1, 14, "an expression", "`*`");
    fails("SELECT ä + FROM \"t\"", 1, 12, "an expression", "`FROM`");
}

#[test]
fn error_display() {
    let err = Rule::parse("SELECT temperature FROM \"t\" WHERE temperature >").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1, column 48: expected an expression, found end of input"
    );
    assert_eq!(err.offset, 47);
}

#[test]
fn limits() {
    let deep = format!(
        "SELECT {}a{} FROM \"t\"",
        "(".repeat(MAX_DEPTH + 5),
        ")".repeat(MAX_DEPTH + 5)
    );
    let err = Rule::parse(&deep).unwrap_err();
    assert_eq!(err.found, "a deeper one");

    // A long flat chain is as deep as it is long, so it is refused too.
    let chain = format!("SELECT a{} FROM \"t\"", " + a".repeat(MAX_DEPTH + 5));
    assert_eq!(Rule::parse(&chain).unwrap_err().found, "a deeper one");
    let chain = format!("SELECT a{} FROM \"t\"", " + a".repeat(MAX_DEPTH - 2));
    assert!(Rule::parse(&chain).is_ok());

    let long = format!(
        "SELECT a FROM \"t\" WHERE a = '{}'",
        "x".repeat(MAX_SQL_LEN)
    );
    let err = Rule::parse(&long).unwrap_err();
    assert_eq!(err.offset, MAX_SQL_LEN);
}
