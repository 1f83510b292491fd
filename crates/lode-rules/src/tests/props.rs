//! Property tests: parsing and evaluation never panic, whatever the input.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{TestCtx, message};
use crate::functions::TABLE;
use crate::{Outcome, Rule};

const KEYS: &[&str] = &[
    "temperature",
    "a",
    "b",
    "list",
    "items",
    "Temp",
    "value",
    "odd key",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9 %_.-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| ((*k).to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn leaf_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "temperature",
            "a.b",
            "list[0]",
            "list[3].value",
            "items.Temp.value",
            "\"odd key\"",
            "missing",
            "TRUE",
            "FALSE",
            "NULL",
            "9223372036854775807",
            "(-9223372036854775808)",
            "0",
            "0.0",
            "1e308",
            "'10'",
            "'abc'",
            "'%a_'",
            "'yyyy-MM-dd HH:mm:ss'",
            "'MD5'",
            "'json'",
        ])
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|i| format!("({i})")),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("({f:e})")),
        "[a-zA-Z0-9 %_'\\\\.-]{0,10}"
            .prop_map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))),
    ]
}

/// Expression trees over every operator and function, fully parenthesised.
fn expr() -> impl Strategy<Value = String> {
    leaf_expr().prop_recursive(5, 64, 4, |inner| {
        let call = (0..TABLE.len(), prop::collection::vec(inner.clone(), 0..4)).prop_map(
            |(idx, mut args)| {
                let def = &TABLE[idx];
                let n = args.len().clamp(def.min_args, def.max_args.min(3));
                while args.len() < n {
                    args.push("1".to_owned());
                }
                args.truncate(n);
                if def.star.is_some() && args.len() == 1 && args[0].len() % 3 == 0 {
                    return format!("{}(*)", def.name);
                }
                format!("{}({})", def.name, args.join(", "))
            },
        );
        prop_oneof![
            (
                prop::sample::select(vec![
                    "+", "-", "*", "/", "%", "=", "!=", "<>", "<", "<=", ">", ">=", "AND", "OR",
                    "LIKE", "NOT LIKE",
                ]),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| format!("({a} {op} {b})")),
            // The space keeps `- -1` from reading as a `--` comment.
            inner.clone().prop_map(|a| format!("(- {a})")),
            inner.clone().prop_map(|a| format!("(NOT {a})")),
            inner.clone().prop_map(|a| format!("({a} IS NULL)")),
            inner.clone().prop_map(|a| format!("({a} IS NOT NULL)")),
            (inner.clone(), prop::collection::vec(inner.clone(), 1..4))
                .prop_map(|(a, list)| format!("({a} NOT IN ({}))", list.join(", "))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("({a} BETWEEN {b} AND {c})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("(CASE WHEN {a} THEN {b} ELSE {c} END)")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("(CASE {a} WHEN {b} THEN {c} END)")),
            (
                inner.clone(),
                prop::sample::select(vec!["int", "double", "string", "bool"])
            )
                .prop_map(|(a, t)| format!("CAST({a} AS {t})")),
            call,
        ]
    })
}

/// Fragments that are each valid somewhere, glued in any order.
fn token_soup() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "SELECT", "FROM", "WHERE", "*", ",", "(", ")", "[", "]", ".", "'#'", "\"t\"", "a", "b.c",
        "1", "2.5", "'s'", "+", "-", "/", "%", "=", "<>", "<", ">=", "AND", "OR", "NOT", "IN",
        "LIKE", "ESCAPE", "IS", "NULL", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST",
        "AS", "int", "topic", "concat", "to_hex", ";", "--", "'", "\"", "`",
    ]);
    prop::collection::vec(tokens, 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_any_string(sql in ".{0,200}") {
        let _ = Rule::parse(&sql);
    }

    #[test]
    fn parse_never_panics_on_token_soup(sql in token_soup()) {
        if let Err(e) = Rule::parse(&sql) {
            // Positions always point inside the statement.
            prop_assert!(e.offset <= sql.len());
            prop_assert!(e.line >= 1 && e.column >= 1);
        }
    }

    #[test]
    fn generated_expressions_parse_and_evaluate_without_panic(
        e in expr(),
        w in expr(),
        payload in json_value(),
        binary in any::<bool>(),
    ) {
        let sql = format!("SELECT *, {e} AS out FROM '#' WHERE {w} OR TRUE");
        let rule = Rule::parse(&sql).map_err(|err| TestCaseError::fail(format!("{sql}: {err}")))?;
        let text = payload.to_string();
        let msg = if binary {
            message(text.as_bytes(), None)
        } else {
            message(text.as_bytes(), Some(&payload))
        };
        // Errors are fine (a bad format string, an unknown algorithm); panics are not.
        if let Ok(outcome) = rule.evaluate(&msg, &TestCtx) {
            let has_out = matches!(outcome, Outcome::Row(ref row) if row.contains_key("out"));
            prop_assert!(has_out, "the WHERE is always true: {:?}", outcome);
        }
    }

    #[test]
    fn conditions_evaluate_without_panic(w in expr(), payload in json_value()) {
        let sql = format!("SELECT 1 AS one FROM '#' WHERE {w}");
        let rule = Rule::parse(&sql).map_err(|err| TestCaseError::fail(format!("{sql}: {err}")))?;
        let text = payload.to_string();
        match rule.evaluate(&message(text.as_bytes(), Some(&payload)), &TestCtx) {
            Ok(Outcome::Filtered { reason }) => prop_assert!(reason.starts_with("WHERE was ")),
            Ok(Outcome::Row(row)) => prop_assert_eq!(row.get("one"), Some(&Value::from(1))),
            Ok(Outcome::TopicMismatch) => prop_assert!(false, "'#' matches every topic"),
            Err(_) => {}
        }
    }
}
