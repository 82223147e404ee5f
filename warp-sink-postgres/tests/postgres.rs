//! The PostgreSQL sink against a real server (WARP_TEST_PG_URL, see docs/testing.md).
//! Each test works in its own schemas, so tests run in parallel.

use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgPool};
use warp_core::config::{DeletionStrategy, SchemaChangePolicy};
use warp_core::{
    Change, ChangeEvent, CheckpointStore, CheckpointUpdate, Column, ColumnType, Decimal, Error,
    FencingToken, Interval, KeyRange, LandedRows, LandingVersion, LeaseStore, Operation, Phase,
    Position, Row, SchemaChange, Sink, TableId, TableKey, TableSchema, Target, Value,
};
use warp_sink_postgres::read::{rows, LandedRow};
use warp_sink_postgres::PostgresSink;

struct Env {
    sink: PostgresSink,
    pool: PgPool,
    schema: String,
    meta: String,
}

async fn setup(name: &str) -> Env {
    let url = warp_e2e::peer_url("WARP_TEST_PG_URL");
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .application_name(&format!("cw-test-{name}"));
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let (schema, meta) = (format!("t_{name}"), format!("m_{name}"));
    for s in [&schema, &meta] {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{s}\" CASCADE"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    let sink = PostgresSink::with_pool(pool.clone(), &meta);
    sink.prepare().await.unwrap();
    sink.prepare().await.expect("migrations are idempotent");
    Env {
        sink,
        pool,
        schema,
        meta,
    }
}

impl Env {
    fn target(&self, table: &str, deletion: DeletionStrategy) -> Target {
        Target {
            schema: "shop".into(),
            source: TableId::new("src", table),
            destination_schema: self.schema.clone(),
            table: table.into(),
            deletion_strategy: deletion,
            soft_delete_column: "is_deleted".into(),
            deleted_at_column: "deleted_at".into(),
            schema_change_policy: SchemaChangePolicy::WidenToText,
            landing: LandingVersion::UNRECORDED,
        }
    }

    async fn claim(&self, target: &Target) -> FencingToken {
        self.sink
            .acquire(&target.key(), "test", Duration::from_secs(600))
            .await
            .unwrap()
            .expect("a free lease")
    }

    async fn commit_changes(
        &self,
        target: &Target,
        token: FencingToken,
        changes: Vec<Change>,
        pos: u64,
    ) {
        let mut tx = self.sink.begin(target, token).await.unwrap();
        tx.apply(changes).await.unwrap();
        tx.commit(streaming(pos)).await.unwrap();
    }

    async fn scalar<T>(&self, sql: String) -> T
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
    {
        sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn dead_letters(&self) -> Vec<(serde_json::Value, String, Option<serde_json::Value>)> {
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT payload, error, source_position FROM \"{}\".dead_letter_queue ORDER BY id",
            self.meta
        )))
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

fn streaming(pos: u64) -> CheckpointUpdate {
    CheckpointUpdate::Streaming {
        position: Position::from_json(serde_json::json!({ "seq": pos })),
        source_ts: Some(Utc::now()),
        handover: Vec::new(),
        shape: None,
        recopy: None,
    }
}

fn simple_schema(table: &str) -> TableSchema {
    TableSchema {
        id: TableId::new("src", table),
        columns: vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("name", ColumnType::Text { max_len: Some(10) }),
        ],
        primary_key: vec!["id".into()],
    }
}

fn row(id: i64, name: &str) -> Row {
    Row::new(vec![Value::Int(id), Value::Text(name.into())])
}

fn upsert(op: Operation, r: Row) -> Change {
    Change::Row(ChangeEvent {
        op,
        key: vec![r.values[0].clone()],
        before: None,
        after: Some(r),
        source_ts: Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()),
    })
}

fn delete(id: i64, before: Option<Row>) -> Change {
    Change::Row(ChangeEvent {
        op: Operation::Delete,
        key: vec![Value::Int(id)],
        before,
        after: None,
        source_ts: Some(Utc::now()),
    })
}

async fn landed(env: &Env, target: &Target, schema: &TableSchema) -> Vec<LandedRow> {
    rows(&env.pool, target, schema).await.unwrap()
}

fn all_types_schema() -> TableSchema {
    use ColumnType as T;
    let cols = [
        ("id", T::Int64),
        ("b", T::Bool),
        ("i16", T::Int16),
        ("i32", T::Int32),
        ("u64", T::UInt64),
        (
            "dec",
            T::Numeric {
                precision: Some(38),
                scale: Some(9),
            },
        ),
        (
            "num",
            T::Numeric {
                precision: None,
                scale: None,
            },
        ),
        ("f32", T::Float32),
        ("f64", T::Float64),
        ("vc", T::Text { max_len: Some(64) }),
        ("txt", T::Text { max_len: None }),
        ("bin", T::Bytes),
        ("bits", T::Bits { len: 8 }),
        ("d", T::Date),
        ("t", T::Time { precision: Some(6) }),
        ("ts", T::Timestamp { precision: Some(6) }),
        ("tstz", T::TimestampTz { precision: Some(6) }),
        ("iv", T::Interval),
        ("js", T::Json),
        ("uid", T::Uuid),
        (
            "tags",
            T::Array {
                element: Box::new(T::Text { max_len: None }),
            },
        ),
        (
            "nums",
            T::Array {
                element: Box::new(T::Int64),
            },
        ),
        (
            "days",
            T::Array {
                element: Box::new(T::Date),
            },
        ),
    ];
    TableSchema {
        id: TableId::new("src", "all_types"),
        columns: cols.into_iter().map(|(n, t)| Column::new(n, t)).collect(),
        primary_key: vec!["id".into()],
    }
}

fn all_types_rows() -> Vec<Row> {
    let dec = |s: &str| Value::Decimal(Decimal::parse(s).unwrap());
    let micros = NaiveDate::from_ymd_opt(2024, 2, 29)
        .unwrap()
        .and_hms_micro_opt(23, 59, 58, 123_456)
        .unwrap();
    let full = Row::new(vec![
        Value::Int(1),
        Value::Bool(true),
        Value::Int(i64::from(i16::MIN)),
        Value::Int(i64::from(i32::MAX)),
        Value::UInt(u64::MAX),
        dec("12345678901234567890123456789.123456789"),
        dec("-0.000000000000000000000000000000000000001234567890123456789"),
        Value::Float32(0.1),
        Value::Float64(0.1 + 0.2),
        Value::Text("tab\tnew\nline\\back 'q' \"dq\" ünïcödé 🚀".into()),
        Value::Text("x".repeat(10_000)),
        Value::Bytes((0..=255).collect()),
        Value::Bits(vec![true, false, true, true, false]),
        Value::Date(NaiveDate::from_ymd_opt(0, 3, 1).unwrap()),
        Value::Time(micros.time()),
        Value::Timestamp(micros),
        Value::TimestampTz(Utc.from_utc_datetime(&micros)),
        Value::Interval(Interval {
            months: 14,
            days: -3,
            micros: -5_000_001,
        }),
        Value::Json(
            serde_json::json!({"a": [1, 2.5, "x"], "b": {"c": null}, "big": 12345678901234567890u64}),
        ),
        Value::Uuid(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        )),
        Value::Array(vec![
            Value::Text("a\"b".into()),
            Value::Text("c,d".into()),
            Value::Text("{}".into()),
            Value::Null,
        ]),
        Value::Array(vec![Value::Int(i64::MIN), Value::Null, Value::Int(7)]),
        Value::Array(vec![Value::Date(
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
        )]),
    ]);
    let mut extremes = full.clone();
    extremes.values[0] = Value::Int(2);
    extremes.values[2] = Value::Int(i64::from(i16::MAX));
    extremes.values[7] = Value::Float32(f32::MIN_POSITIVE);
    extremes.values[8] = Value::Float64(f64::NEG_INFINITY);
    let mut nulls = vec![Value::Null; full.values.len()];
    nulls[0] = Value::Int(3);
    vec![full, extremes, Row::new(nulls)]
}

/// Writes `rows` into a fresh landing table `table` of `schema`, as snapshot rows (COPY)
/// or as inserts (staging and merge), commits, and reads the landed rows back.
async fn write_and_read_back(
    env: &Env,
    table: &str,
    schema: &TableSchema,
    rows: &[Row],
    via_copy: bool,
) -> Vec<Row> {
    let mut schema = schema.clone();
    schema.id.name = table.into();
    let target = env.target(table, DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    if via_copy {
        tx.write_snapshot_rows(rows.to_vec()).await.unwrap();
    } else {
        let changes = rows
            .iter()
            .map(|r| upsert(Operation::Insert, r.clone()))
            .collect();
        tx.apply(changes).await.unwrap();
    }
    tx.commit(streaming(1)).await.unwrap();
    landed(env, &target, &schema)
        .await
        .into_iter()
        .map(|r| r.row)
        .collect()
}

/// Values only some sources send, at the edges of their PostgreSQL types: NaN and ±Infinity
/// in a `numeric` column (decimal128's specials), a 6,145-digit decimal and one 6,143 places
/// small (decimal128's ends), -0.0 and NaN in `double precision`, dates in year 1 and
/// year 10000. Each lands and reads back exactly, by COPY and by staged changes.
/// A landing table records the landing version it was created with, in the transaction
/// that creates it; one an older release created reads as unrecorded (and stays so when
/// it evolves); one dropped and created again records the version of its new creation.
#[tokio::test]
async fn a_landing_table_keeps_the_landing_version_it_was_created_with() {
    let env = setup("landing").await;
    let newer = env
        .target("orders", DeletionStrategy::Hard)
        .landing(LandingVersion(1));
    let schema = simple_schema("orders");
    assert_eq!(
        env.sink.ensure_table(&newer, &schema).await.unwrap(),
        LandingVersion(1)
    );
    let mut wider = schema.clone();
    wider
        .columns
        .push(Column::new("note", ColumnType::Text { max_len: None }));
    let later = newer.clone().landing(LandingVersion(2));
    assert_eq!(
        env.sink.ensure_table(&later, &wider).await.unwrap(),
        LandingVersion(1)
    );
    assert_eq!(
        env.sink.landing_version(&later).await.unwrap(),
        LandingVersion(1)
    );

    // A table as an older release left it: created, with no version recorded.
    let older = env.target("items", DeletionStrategy::Hard);
    env.sink
        .ensure_table(&older, &simple_schema("items"))
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DELETE FROM \"{}\".landing_tables WHERE table_name = 'items'",
        env.meta
    )))
    .execute(&env.pool)
    .await
    .unwrap();
    let now = older.clone().landing(LandingVersion(1));
    let items = simple_schema("items");
    assert_eq!(
        env.sink.ensure_table(&now, &items).await.unwrap(),
        LandingVersion::UNRECORDED
    );
    assert_eq!(
        env.sink.landing_version(&now).await.unwrap(),
        LandingVersion::UNRECORDED
    );

    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP TABLE \"{}\".items",
        env.schema
    )))
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        env.sink.ensure_table(&now, &items).await.unwrap(),
        LandingVersion(1)
    );
}

#[tokio::test]
async fn the_edges_of_numeric_float_and_timestamp_land_exactly() {
    use ColumnType as T;
    let env = setup("edges").await;
    let numeric = T::Numeric {
        precision: None,
        scale: None,
    };
    let schema = TableSchema {
        id: TableId::new("src", "edges"),
        columns: vec![
            Column::new("id", T::Int64),
            Column::new("n", numeric),
            Column::new("f", T::Float64),
            Column::new("t", T::TimestampTz { precision: None }),
        ],
        primary_key: vec!["id".into()],
    };
    let max = format!("9999999999999999999999999999999999{}", "0".repeat(6111));
    let min = format!("0.{}1", "0".repeat(6142));
    let at = |ms: i64| Value::TimestampTz(chrono::DateTime::from_timestamp_millis(ms).unwrap());
    let row = |id, n: Value, f, t| Row::new(vec![Value::Int(id), n, Value::Float64(f), t]);
    let rows = vec![
        row(
            1,
            Value::Float64(f64::NAN),
            f64::NAN,
            at(253_402_300_800_000),
        ),
        row(
            2,
            Value::Float64(f64::INFINITY),
            -0.0,
            at(-62_135_596_800_000),
        ),
        row(
            3,
            Value::Float64(f64::NEG_INFINITY),
            f64::MIN_POSITIVE,
            at(-1),
        ),
        row(
            4,
            Value::Decimal(Decimal::parse(&max).unwrap()),
            f64::MAX,
            Value::Null,
        ),
        row(
            5,
            Value::Decimal(Decimal::parse(&min).unwrap()),
            0.0,
            Value::Null,
        ),
    ];
    let bits = |v: &Value| match v {
        Value::Float64(f) => Some(f.to_bits()),
        _ => None,
    };
    for (table, via_copy) in [("edges_copy", true), ("edges_changes", false)] {
        let back = write_and_read_back(&env, table, &schema, &rows, via_copy).await;
        assert_eq!(back.len(), rows.len(), "{table}");
        for (sent, got) in rows.iter().zip(&back) {
            for (a, b) in sent.values.iter().zip(&got.values) {
                let same = bits(a).map_or(a == b, |x| Some(x) == bits(b));
                assert!(same, "{table}: sent {a:?}, read back {b:?}");
            }
        }
    }
}

#[tokio::test]
async fn every_mapped_type_round_trips_exactly() {
    let env = setup("types").await;
    let schema = all_types_schema();
    // Rows holding an array go as COPY text; without arrays, every other type goes as
    // COPY binary, for snapshot rows and staged changes alike (see `binary::tests::every_scalar_type_has_a_binary_form`).
    let scalar_rows = || -> Vec<Row> {
        let mut rows = all_types_rows();
        for r in &mut rows {
            for v in &mut r.values {
                if matches!(v, Value::Array(_)) {
                    *v = Value::Null;
                }
            }
        }
        rows
    };
    for (table, via_copy, rows) in [
        ("all_types", true, all_types_rows()),
        ("all_types_changes", false, all_types_rows()),
        ("all_types_binary", true, scalar_rows()),
        // Changes stage the same way: binary tuples, text lines for rows with arrays
        // (the first run mixes both in one batch).
        ("all_types_changes_binary", false, scalar_rows()),
    ] {
        let back = write_and_read_back(&env, table, &schema, &rows, via_copy).await;
        assert_eq!(back, rows, "{table}");
        assert!(env.dead_letters().await.is_empty());
    }
    // The declared PostgreSQL types follow docs/postgres.md, Types.
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 't_types.all_types'::regclass AND attnum > 0 ORDER BY attnum",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let find = |c: &str| {
        types
            .iter()
            .find(|(n, _)| n == c)
            .map(|(_, t)| t.as_str())
            .unwrap()
    };
    assert_eq!(find("u64"), "numeric(20,0)");
    assert_eq!(find("vc"), "character varying(64)");
    assert_eq!(find("tstz"), "timestamp(6) with time zone");
    assert_eq!(find("js"), "jsonb");
    assert_eq!(find("bits"), "bit varying(8)");
    assert_eq!(find("_cartridge_version"), "bigint");
    assert_eq!(find("_cartridge_source_ts"), "timestamp with time zone");
}

#[tokio::test]
async fn changes_keep_bookkeeping_and_replays_change_nothing() {
    let env = setup("bookkeeping").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    tx.write_snapshot_rows(vec![row(1, "a"), row(2, "b")])
        .await
        .unwrap();
    tx.commit(streaming(1)).await.unwrap();
    let created: String = env
        .scalar(
            "SELECT _cartridge_created_at::text FROM t_bookkeeping.orders WHERE id = 1".to_string(),
        )
        .await;

    let batch = vec![
        upsert(Operation::Update, row(1, "a2")),
        upsert(Operation::Insert, row(3, "c")),
    ];
    env.commit_changes(&target, token, batch.clone(), 2).await;
    let after = landed(&env, &target, &schema).await;
    assert_eq!(
        after
            .iter()
            .map(|r| (r.version, r.op.as_str()))
            .collect::<Vec<_>>(),
        [(2, "u"), (1, "r"), (1, "c")]
    );
    let created_after: String = env
        .scalar(
            "SELECT _cartridge_created_at::text FROM t_bookkeeping.orders WHERE id = 1".to_string(),
        )
        .await;
    assert_eq!(created, created_after, "created_at survives updates");
    let source_ts: String = env
        .scalar("SELECT _cartridge_source_ts::text FROM t_bookkeeping.orders WHERE id = 3".into())
        .await;
    assert!(source_ts.starts_with("2026-01-02 03:04:05"), "{source_ts}");

    // The same batch again: same data, so no version moves.
    env.commit_changes(&target, token, batch, 2).await;
    assert_eq!(
        landed(&env, &target, &schema).await,
        after,
        "replaying a batch is a no-op"
    );

    // Re-copying a row (a re-snapshot) is not a change either.
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    tx.write_snapshot_rows(vec![row(1, "a2"), row(2, "b")])
        .await
        .unwrap();
    tx.commit(streaming(3)).await.unwrap();
    let versions: Vec<i64> = landed(&env, &target, &schema)
        .await
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [2, 1, 1]);
}

#[tokio::test]
async fn soft_delete_then_revive_and_hard_delete() {
    let env = setup("deletes").await;
    let schema = simple_schema("soft");
    let soft = env.target("soft", DeletionStrategy::Soft);
    env.sink.ensure_table(&soft, &schema).await.unwrap();
    let token = env.claim(&soft).await;
    env.commit_changes(
        &soft,
        token,
        vec![
            upsert(Operation::Insert, row(1, "a")),
            upsert(Operation::Insert, row(2, "b")),
        ],
        1,
    )
    .await;
    env.commit_changes(
        &soft,
        token,
        vec![
            delete(1, Some(row(1, "a"))),
            delete(2, None),
            delete(9, Some(row(9, "ghost"))),
            delete(8, None),
        ],
        2,
    )
    .await;
    let rows_now = landed(&env, &soft, &schema).await;
    let state: Vec<(i64, bool, &str, i64)> = rows_now
        .iter()
        .map(|r| {
            (
                if let Value::Int(i) = r.row.values[0] {
                    i
                } else {
                    0
                },
                r.deleted,
                r.op.as_str(),
                r.version,
            )
        })
        .collect();
    assert_eq!(
        state,
        [(1, true, "d", 2), (2, true, "d", 2), (9, true, "d", 1)]
    );
    let deleted_at: bool = env
        .scalar("SELECT deleted_at IS NOT NULL FROM t_deletes.soft WHERE id = 1".into())
        .await;
    assert!(deleted_at);
    // Deleting again, with or without the image, changes nothing.
    env.commit_changes(&soft, token, vec![delete(1, None)], 3)
        .await;
    env.commit_changes(&soft, token, vec![delete(2, Some(row(2, "b")))], 3)
        .await;
    let versions: Vec<i64> = landed(&env, &soft, &schema)
        .await
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [2, 2, 1]);
    // A re-insert revives the row.
    env.commit_changes(
        &soft,
        token,
        vec![upsert(Operation::Insert, row(1, "again"))],
        4,
    )
    .await;
    let revived = &landed(&env, &soft, &schema).await[0];
    assert_eq!(
        (revived.deleted, revived.version, &revived.row),
        (false, 3, &row(1, "again"))
    );
    let deleted_at: bool = env
        .scalar("SELECT deleted_at IS NULL FROM t_deletes.soft WHERE id = 1".into())
        .await;
    assert!(deleted_at);

    let mut hard_schema = simple_schema("hard");
    hard_schema.id.name = "hard".into();
    let hard = env.target("hard", DeletionStrategy::Hard);
    env.sink.ensure_table(&hard, &hard_schema).await.unwrap();
    let token = env.claim(&hard).await;
    env.commit_changes(
        &hard,
        token,
        vec![
            upsert(Operation::Insert, row(1, "a")),
            upsert(Operation::Insert, row(2, "b")),
        ],
        1,
    )
    .await;
    env.commit_changes(&hard, token, vec![delete(1, None)], 2)
        .await;
    let left: Vec<Row> = landed(&env, &hard, &hard_schema)
        .await
        .into_iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(left, [row(2, "b")]);
}

/// A source with its own `is_deleted` and `deleted_at` (Laravel's SoftDeletes, Rails'
/// paranoia): with the default names the table is refused naming the key to set; with
/// `soft_delete_column`/`deleted_at_column` set, the source's columns land as they are and
/// deletes mark the configured columns, on insert, soft delete, truncate and revive.
#[tokio::test]
async fn source_columns_named_like_the_soft_delete_columns_land_beside_them() {
    let env = setup("own_soft_delete").await;
    let schema = TableSchema {
        id: TableId::new("src", "posts"),
        columns: vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("is_deleted", ColumnType::Bool),
            Column::new("deleted_at", ColumnType::TimestampTz { precision: Some(6) }),
        ],
        primary_key: vec!["id".into()],
    };
    let defaults = env.target("posts", DeletionStrategy::Soft);
    let refused = env.sink.ensure_table(&defaults, &schema).await.unwrap_err();
    assert!(
        refused.to_string().contains("set soft_delete_column"),
        "{refused}"
    );
    let target = Target {
        soft_delete_column: "_cw_deleted".into(),
        deleted_at_column: "_cw_deleted_at".into(),
        ..defaults
    };
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let at = Utc.with_ymd_and_hms(2025, 5, 6, 7, 8, 9).unwrap();
    let post = |id: i64, gone: bool| {
        Row::new(vec![
            Value::Int(id),
            Value::Bool(gone),
            if gone {
                Value::TimestampTz(at)
            } else {
                Value::Null
            },
        ])
    };
    let token = env.claim(&target).await;
    env.commit_changes(
        &target,
        token,
        vec![
            upsert(Operation::Insert, post(1, true)),
            upsert(Operation::Insert, post(2, false)),
        ],
        1,
    )
    .await;
    env.commit_changes(&target, token, vec![delete(2, Some(post(2, false)))], 2)
        .await;
    let table = format!("\"{}\".posts", env.schema);
    let state: Vec<(i64, bool, Option<String>, bool, bool)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, is_deleted, deleted_at::text, _cw_deleted, _cw_deleted_at IS NOT NULL FROM {table} ORDER BY id"
    )))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        state,
        [
            (1, true, Some("2025-05-06 07:08:09+00".into()), false, false),
            (2, false, None, true, true),
        ]
    );
    // Read back through the sink: the configured flag decides what is live.
    let live: Vec<bool> = landed(&env, &target, &schema)
        .await
        .iter()
        .map(|r| r.deleted)
        .collect();
    assert_eq!(live, [false, true]);
}

#[tokio::test]
async fn a_failure_between_statements_leaves_data_and_checkpoint_consistent() {
    let env = setup("atomic").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    env.commit_changes(
        &target,
        token,
        vec![upsert(Operation::Insert, row(1, "a"))],
        1,
    )
    .await;
    let before = landed(&env, &target, &schema).await;

    // The connection dies after the batch is written but before the commit.
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    tx.apply(vec![
        upsert(Operation::Update, row(1, "lost")),
        upsert(Operation::Insert, row(2, "lost")),
    ])
    .await
    .unwrap();
    let killer = PgPoolOptions::new()
        .max_connections(1)
        .connect(&warp_e2e::peer_url("WARP_TEST_PG_URL"))
        .await
        .unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'cw-test-atomic' AND state = 'idle in transaction') k",
    )
    .fetch_one(&killer)
    .await
    .unwrap();
    assert_eq!(killed, 1, "the open transaction's backend was terminated");
    let err = tx.commit(streaming(2)).await.expect_err("commit must fail");
    assert!(err.is_transient(), "a lost connection is retryable: {err}");

    assert_eq!(
        landed(&env, &target, &schema).await,
        before,
        "no data from the failed batch"
    );
    let Some(Phase::Streaming { position, .. }) =
        env.sink.load(&target.key()).await.unwrap().map(|c| c.phase)
    else {
        panic!("checkpoint expected");
    };
    assert_eq!(position.as_json()["seq"], 1, "the checkpoint did not move");

    // A transaction dropped without commit (process killed) leaves nothing either.
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    tx.apply(vec![upsert(Operation::Insert, row(3, "gone"))])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(landed(&env, &target, &schema).await, before);
}

#[tokio::test]
async fn a_lease_is_exclusive_until_it_lapses_and_then_fences_its_old_holder() {
    let env = setup("fencing").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    let key = target.key();
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let short = Duration::from_millis(300);
    let old = env
        .sink
        .acquire(&key, "pod-a", short)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        env.sink.acquire(&key, "pod-b", short).await.unwrap(),
        None,
        "held by a live replica"
    );
    assert_eq!(
        env.sink.join("shop", "pod-b", short).await.unwrap(),
        ["pod-b"],
        "pod-a never joined"
    );

    // pod-a's batch is open: renewing must not wait for it.
    let mut tx = env.sink.begin(&target, old).await.unwrap();
    tx.apply(vec![upsert(Operation::Insert, row(1, "a"))])
        .await
        .unwrap();
    let renewed = tokio::time::timeout(
        Duration::from_secs(30),
        env.sink.renew("shop", "pod-a", short),
    )
    .await
    .expect("renewal is not blocked by the holder's own transaction")
    .unwrap();
    assert_eq!(renewed, ["orders"]);

    // pod-a freezes with its batch open; the lease lapses and pod-b takes it without
    // waiting for that batch, which can then never commit.
    warp_core::testing::wait_for_async("the lease to lapse", Duration::from_secs(20), || async {
        env.sink
            .leases("shop")
            .await
            .unwrap()
            .iter()
            .all(|l| !l.live)
    })
    .await;
    let new = tokio::time::timeout(
        Duration::from_secs(30),
        env.sink.acquire(&key, "pod-b", short),
    )
    .await
    .expect("an open batch of the old holder does not block the takeover")
    .unwrap()
    .expect("a lapsed lease is free");
    assert!(new > old);
    match tx.commit(streaming(1)).await {
        Err(Error::Fenced { ours, current, .. }) => assert_eq!((ours, current), (old.0, new.0)),
        other => panic!("expected fenced, got {other:?}"),
    }
    assert!(
        landed(&env, &target, &schema).await.is_empty(),
        "nothing of the stale batch landed"
    );
    assert_eq!(
        env.sink.renew("shop", "pod-a", short).await.unwrap(),
        Vec::<String>::new(),
        "pod-a lost it"
    );
    match env.sink.begin(&target, old).await {
        Err(Error::Fenced { ours, current, .. }) => assert_eq!((ours, current), (old.0, new.0)),
        other => panic!("expected fenced, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        env.sink.reset(&target.key(), old).await,
        Err(Error::Fenced { .. })
    ));
    env.commit_changes(
        &target,
        new,
        vec![upsert(Operation::Insert, row(2, "b"))],
        2,
    )
    .await;
    assert_eq!(landed(&env, &target, &schema).await.len(), 1);
    env.sink.release(&target.key(), "pod-b").await.unwrap();
    assert!(env
        .sink
        .leases("shop")
        .await
        .unwrap()
        .iter()
        .all(|l| !l.live && l.owner.is_empty()));
}

#[tokio::test]
async fn poison_rows_go_to_the_dead_letter_table_and_neighbours_commit() {
    let env = setup("poison").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let batch = vec![
        upsert(Operation::Insert, row(1, "ok")),
        upsert(Operation::Insert, row(2, "far too long for varchar(10)")), // rejected by PostgreSQL
        upsert(Operation::Insert, row(3, "nul\0byte")), // rejected by the encoder
        upsert(Operation::Insert, row(4, "fine")),
    ];
    env.commit_changes(&target, token, batch, 7).await;
    let ids: Vec<Value> = landed(&env, &target, &schema)
        .await
        .into_iter()
        .map(|r| r.row.values[0].clone())
        .collect();
    assert_eq!(ids, [Value::Int(1), Value::Int(4)]);
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|(_, e, _)| e.contains("22001") || e.contains("too long")),
        "{dead:?}"
    );
    assert!(dead.iter().any(|(_, e, _)| e.contains("NUL")), "{dead:?}");
    assert!(
        dead.iter()
            .all(|(_, _, pos)| pos.as_ref().unwrap()["seq"] == 7),
        "source position recorded"
    );
    // The payload is the change itself, enough to replay it.
    let payload: ChangeEvent = serde_json::from_value(dead[0].0.clone()).unwrap();
    assert!(payload.after.is_some());

    // Snapshot rows: same treatment.
    let mut tx = env.sink.begin(&target, token).await.unwrap();
    tx.write_snapshot_rows(vec![
        row(10, "ok"),
        row(11, "much much too long"),
        row(12, "ok"),
    ])
    .await
    .unwrap();
    tx.commit(streaming(8)).await.unwrap();
    assert_eq!(landed(&env, &target, &schema).await.len(), 4);
    assert_eq!(env.dead_letters().await.len(), 3);
}

/// An int64 column that starts receiving doubles (a MongoDB field, an ALTER to DOUBLE):
/// widened to numeric, so int64 values above 2^53 copied before and after stay exact, and
/// so do the doubles. A double column that starts receiving int64 keeps its doubles'
/// digits through the same widening.
#[tokio::test]
async fn int64_and_double_meet_in_an_exact_numeric() {
    let env = setup("int64_double").await;
    let schema = TableSchema {
        id: TableId::new("src", "m"),
        columns: vec![
            Column::new("id", ColumnType::Int64).not_null(),
            Column::new("n", ColumnType::Int64),
            Column::new("d", ColumnType::Float64),
        ],
        primary_key: vec!["id".into()],
    };
    let target = env.target("m", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let m = |id: i64, n: Value, d: Value| Row::new(vec![Value::Int(id), n, d]);
    let big = 9_007_199_254_740_993_i64; // 2^53 + 1
    env.commit_changes(
        &target,
        token,
        vec![upsert(
            Operation::Insert,
            m(1, Value::Int(big), Value::Float64(1.234_567_890_123_456_7)),
        )],
        1,
    )
    .await;
    env.commit_changes(
        &target,
        token,
        vec![
            Change::Schema(SchemaChange::AlterColumnType {
                name: "n".into(),
                to: ColumnType::Float64,
            }),
            Change::Schema(SchemaChange::AlterColumnType {
                name: "d".into(),
                to: ColumnType::Int64,
            }),
            upsert(
                Operation::Insert,
                m(2, Value::Float64(0.5), Value::Int(big + 2)),
            ),
            upsert(Operation::Insert, m(3, Value::Int(big + 4), Value::Null)),
        ],
        2,
    )
    .await;
    let table = format!("\"{}\".m", env.schema);
    // id, n and d as text, their types.
    type Landed = (i64, Option<String>, Option<String>, String, String);
    let rows: Vec<Landed> =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT id, n::text, d::text, pg_typeof(n)::text, pg_typeof(d)::text FROM {table} ORDER BY id"
        )))
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        [
            (
                1,
                text("9007199254740993"),
                text("1.2345678901234567"),
                "numeric".into(),
                "numeric".into()
            ),
            (
                2,
                text("0.5"),
                text("9007199254740995"),
                "numeric".into(),
                "numeric".into()
            ),
            (
                3,
                text("9007199254740997"),
                None,
                "numeric".into(),
                "numeric".into()
            ),
        ]
    );
}

#[tokio::test]
async fn hostile_names_are_quoted_and_shortened() {
    let env = setup("hostile").await;
    let name = format!("we\"ird ta'ble; DROP TABLE x;-- {}", "z".repeat(50));
    assert!(name.chars().count() > 80);
    let col = format!("col \"{}\" with spaces", "c".repeat(60));
    let schema = TableSchema {
        id: TableId::new("src", &name),
        columns: vec![
            Column::new("Id", ColumnType::Int64),
            Column::new(&col, ColumnType::Text { max_len: None }),
        ],
        primary_key: vec!["Id".into()],
    };
    let target = env.target(&name, DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    env.sink
        .ensure_table(&target, &schema)
        .await
        .expect("ensure is idempotent");
    let token = env.claim(&target).await;
    env.commit_changes(
        &target,
        token,
        vec![Change::Row(ChangeEvent {
            op: Operation::Insert,
            key: vec![Value::Int(1)],
            before: None,
            after: Some(Row::new(vec![Value::Int(1), Value::Text("v".into())])),
            source_ts: None,
        })],
        1,
    )
    .await;
    let back = landed(&env, &target, &schema).await;
    assert_eq!(back[0].row.values[1], Value::Text("v".into()));
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 't_hostile'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert_eq!(tables.len(), 1);
    assert_eq!(
        tables[0].len(),
        63,
        "shortened to PostgreSQL's limit: {}",
        tables[0]
    );
    assert!(tables[0].starts_with("we\"ird ta'ble; DROP TABLE x;--"));
    let x_exists: bool = env
        .scalar("SELECT to_regclass('x') IS NOT NULL".into())
        .await;
    assert!(!x_exists);
}

#[tokio::test]
async fn schema_evolution_inside_the_batch_transaction() {
    let env = setup("evolution").await;
    let mut schema = simple_schema("orders");
    schema.columns.push(Column::new("qty", ColumnType::Int32));
    schema
        .columns
        .push(Column::new("note", ColumnType::Text { max_len: Some(5) }));
    schema
        .columns
        .push(Column::new("legacy", ColumnType::Int32).not_null());
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let r = |id: i64, qty: Value, note: &str, legacy: Value| {
        Row::new(vec![
            Value::Int(id),
            Value::Text("n".into()),
            qty,
            Value::Text(note.into()),
            legacy,
        ])
    };
    env.commit_changes(
        &target,
        token,
        vec![upsert(
            Operation::Insert,
            r(1, Value::Int(5), "abc", Value::Int(1)),
        )],
        1,
    )
    .await;

    let mut status = Column::new("status", ColumnType::Text { max_len: None });
    status.default = Some(Value::Text("new".into()));
    let changes = vec![
        Change::Schema(SchemaChange::AddColumn(status)),
        Change::Schema(SchemaChange::AlterColumnType {
            name: "qty".into(),
            to: ColumnType::Int64,
        }),
        Change::Schema(SchemaChange::AlterColumnType {
            name: "note".into(),
            to: ColumnType::Text { max_len: Some(50) },
        }),
        Change::Schema(SchemaChange::RenameColumn {
            from: "name".into(),
            to: "title".into(),
        }),
        Change::Schema(SchemaChange::DropColumn {
            name: "legacy".into(),
        }),
        Change::Schema(SchemaChange::AlterColumnType {
            name: "qty".into(),
            to: ColumnType::Date,
        }),
        upsert(
            Operation::Insert,
            Row::new(vec![
                Value::Int(2),
                Value::Text("t".into()),
                Value::Text("2024-01-01".into()),
                Value::Text("a longer note".into()),
                Value::Null,
                Value::Text("paid".into()),
            ]),
        ),
    ];
    env.commit_changes(&target, token, changes, 2).await;

    let cols: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
         WHERE attrelid = 't_evolution.orders'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let find = |c: &str| {
        cols.iter()
            .find(|(n, _, _)| n == c)
            .cloned()
            .unwrap_or_else(|| panic!("{c} missing: {cols:?}"))
    };
    assert_eq!(
        find("qty").1,
        "text",
        "int → bigint, then an incompatible date widens to text"
    );
    assert_eq!(find("note").1, "character varying(50)");
    assert_eq!(find("title").1, "character varying(10)", "renamed");
    assert!(!find("legacy").2, "dropped at the source: now nullable");
    assert_eq!(find("status").1, "text");
    let old_status: String = env
        .scalar("SELECT status FROM t_evolution.orders WHERE id = 1".into())
        .await;
    assert_eq!(
        old_status, "new",
        "rows from before the change read the source default"
    );
    let versions: i64 = env
        .scalar(format!(
            "SELECT count(*) FROM \"{}\".schema_registry WHERE table_name = 'orders'",
            env.meta
        ))
        .await;
    assert_eq!(versions, 7, "create + six changes recorded");

    // pause_table refuses a lossy change; the batch does not commit.
    let mut paused = env.target("orders", DeletionStrategy::Soft);
    paused.schema_change_policy = SchemaChangePolicy::PauseTable;
    let mut tx = env.sink.begin(&paused, token).await.unwrap();
    let err = tx
        .apply(vec![Change::Schema(SchemaChange::AlterColumnType {
            name: "id".into(),
            to: ColumnType::Uuid,
        })])
        .await
        .expect_err("lossy change refused");
    assert!(err.to_string().contains("pause_table"), "{err}");
}

#[tokio::test]
async fn checkpoints_round_trip_through_the_metadata_schema() {
    let env = setup("checkpoints").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let key: TableKey = target.key();
    assert!(env.sink.load(&key).await.unwrap().is_none());
    let token = env.claim(&target).await;
    let pos =
        |n: u64| Position::from_json(serde_json::json!({ "file": "mysql-bin.000001", "pos": n }));
    let ranges = vec![
        KeyRange {
            start: None,
            end: Some(vec![Value::Int(100)]),
        },
        KeyRange {
            start: Some(vec![Value::Int(100)]),
            end: None,
        },
    ];
    let commit = |update: CheckpointUpdate| {
        let sink = env.sink.clone();
        let target = target.clone();
        async move {
            let tx = sink.begin(&target, token).await.unwrap();
            tx.commit(update).await.unwrap();
        }
    };
    commit(CheckpointUpdate::BeginSnapshot {
        start: pos(4),
        chunks: ranges.clone(),
        recopy: true,
        shared: None,
    })
    .await;
    commit(CheckpointUpdate::ChunkDone {
        index: 1,
        position: pos(9),
        rows: 42,
    })
    .await;
    let Some(Phase::Snapshot {
        start,
        chunks,
        recopy,
    }) = env.sink.load(&key).await.unwrap().map(|c| c.phase)
    else {
        panic!("snapshot phase expected");
    };
    assert_eq!(start, pos(4));
    assert!(recopy, "a re-copy is remembered until the copy ends");
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.range.clone(), c.done.clone(), c.rows))
            .collect::<Vec<_>>(),
        [
            (ranges[0].clone(), None, 0),
            (ranges[1].clone(), Some(pos(9)), 42)
        ]
    );
    commit(CheckpointUpdate::Streaming {
        position: pos(4),
        source_ts: None,
        handover: vec![(ranges[1].clone(), pos(9))],
        shape: None,
        recopy: None,
    })
    .await;
    let cp = env.sink.load(&key).await.unwrap().unwrap();
    assert_eq!(cp.fencing, token);
    assert_eq!(
        cp.phase,
        Phase::Streaming {
            position: pos(4),
            source_ts: None,
            handover: vec![(ranges[1].clone(), pos(9))],
            recopy: None,
        }
    );
    assert_eq!(cp.shape, None);
    // The source shape at a position is kept until a commit carries another one, and
    // forgotten by a new snapshot plan.
    let shape = simple_schema("orders");
    let streaming = |at: u64, shape: Option<TableSchema>| CheckpointUpdate::Streaming {
        position: pos(at),
        source_ts: None,
        handover: Vec::new(),
        shape,
        recopy: None,
    };
    commit(streaming(5, Some(shape.clone()))).await;
    commit(streaming(6, None)).await;
    let cp = env.sink.load(&key).await.unwrap().unwrap();
    assert_eq!(cp.shape.as_ref(), Some(&shape));
    // A re-copy in progress keeps its chunks to go with each streaming checkpoint.
    let copying = warp_core::CopyInStream {
        chunks: vec![ranges[1].clone()],
        sweep: true,
    };
    let mut with_recopy = streaming(6, None);
    if let CheckpointUpdate::Streaming { recopy, .. } = &mut with_recopy {
        *recopy = Some(copying.clone());
    }
    commit(with_recopy).await;
    let recorded = match env.sink.load(&key).await.unwrap().unwrap().phase {
        Phase::Streaming { recopy, .. } => recopy,
        other => panic!("{other:?}"),
    };
    assert_eq!(recorded, Some(copying));
    commit(CheckpointUpdate::BeginSnapshot {
        start: pos(7),
        chunks: ranges.clone(),
        recopy: false,
        shared: None,
    })
    .await;
    commit(streaming(8, None)).await;
    assert_eq!(env.sink.load(&key).await.unwrap().unwrap().shape, None);
    env.sink.reset(&key, token).await.unwrap();
    assert!(env.sink.load(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn dead_letters_replay_after_the_fix_but_never_over_newer_data() {
    use warp_sink_postgres::dlq::Filter;
    let env = setup("dlqreplay").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let at = |h: u32, r: Row| {
        Change::Row(ChangeEvent {
            op: Operation::Insert,
            key: vec![r.values[0].clone()],
            before: None,
            after: Some(r),
            source_ts: Some(Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap()),
        })
    };
    env.commit_changes(
        &target,
        token,
        vec![
            at(1, row(1, "ok")),
            at(1, row(2, "far too long here")),
            at(1, row(3, "also too long!")),
        ],
        1,
    )
    .await;
    let pending = env
        .sink
        .dead_letters(&Filter {
            status: Some(warp_core::DeadLetterStatus::Pending),
            ..Filter::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2);
    let id_of = |key: i64| {
        pending
            .iter()
            .find(|e| e.payload["key"][0]["v"] == key)
            .unwrap()
            .id
    };
    let (id2, id3) = (id_of(2), id_of(3));

    // The cause is fixed at the destination; meanwhile a newer change to key 3 landed.
    sqlx::raw_sql("ALTER TABLE t_dlqreplay.orders ALTER COLUMN name TYPE varchar(50)")
        .execute(&env.pool)
        .await
        .unwrap();
    env.commit_changes(&target, token, vec![at(2, row(3, "newer"))], 2)
        .await;

    let report = env
        .sink
        .replay_dead_letters(&Filter::default(), |_, table| {
            (table == "orders").then(|| target.clone())
        })
        .await
        .unwrap();
    assert_eq!(report.replayed, [id2]);
    assert_eq!(
        report.superseded,
        [id3],
        "a stale dead letter never overwrites newer data"
    );
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let rows: Vec<Row> = landed(&env, &target, &schema)
        .await
        .into_iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(
        rows,
        [row(1, "ok"), row(2, "far too long here"), row(3, "newer")]
    );
    let statuses: Vec<warp_core::DeadLetterStatus> = env
        .sink
        .dead_letters(&Filter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.status)
        .collect();
    assert_eq!(
        statuses,
        [
            warp_core::DeadLetterStatus::Replayed,
            warp_core::DeadLetterStatus::Discarded
        ]
    );
    assert_eq!(
        env.sink
            .discard_dead_letters(&Filter::default())
            .await
            .unwrap(),
        0,
        "nothing pending any more"
    );
}

#[tokio::test]
async fn unreadable_source_values_are_dead_lettered_with_the_reason() {
    let env = setup("unreadable").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Soft);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let token = env.claim(&target).await;
    let bad = Row::new(vec![
        Value::Int(2),
        Value::Unreadable("column name: not valid UTF-8".into()),
    ]);
    env.commit_changes(
        &target,
        token,
        vec![
            upsert(Operation::Insert, row(1, "ok")),
            upsert(Operation::Insert, bad),
        ],
        3,
    )
    .await;
    assert_eq!(landed(&env, &target, &schema).await.len(), 1);
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .1
            .contains("unreadable at the source: column name: not valid UTF-8"),
        "{}",
        dead[0].1
    );
}

#[tokio::test]
async fn json_text_lands_as_jsonb_and_text_postgres_refuses_is_dead_lettered() {
    let env = setup("json_text").await;
    let schema = TableSchema {
        id: TableId::new("src", "docs"),
        columns: vec![
            Column::new("id", ColumnType::Int64),
            Column::new("doc", ColumnType::Json),
        ],
        primary_key: vec!["id".into()],
    };
    // A backslash escape and a tab escape inside a string: COPY escaping meets JSON's.
    let text = r#"{"b": 1, "a": ["x\ty", "c:\\dir", {"n": null}]}"#;
    let doc = |id: i64, t: &str| Row::new(vec![Value::Int(id), Value::JsonText(t.into())]);
    let expected = Value::Json(serde_json::from_str(text).unwrap());
    let rows = [doc(1, text), doc(2, "{bad"), doc(3, "[]")];
    for (table, via_copy) in [("docs", true), ("docs_changes", false)] {
        let back = write_and_read_back(&env, table, &schema, &rows, via_copy).await;
        assert_eq!(
            back,
            vec![
                Row::new(vec![Value::Int(1), expected.clone()]),
                Row::new(vec![Value::Int(3), Value::Json(serde_json::json!([]))]),
            ],
            "{table}"
        );
    }
    // The invalid document, once per path, with PostgreSQL's reason.
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|d| d.1.contains("json")), "{dead:?}");
}

/// PostgreSQL as the control store of a destination that commits its rows elsewhere: a
/// checkpoint saved on its own (`CheckpointStore::save`) is kept under the fencing token
/// like one committed with data, and refused from a replaced holder.
#[tokio::test]
async fn a_checkpoint_saved_apart_from_data_is_fenced_like_one_committed_with_it() {
    let env = setup("save_apart").await;
    let target = env.target("orders", DeletionStrategy::Soft);
    let key = target.key();
    let old = env.claim(&target).await;
    env.sink.save(&key, old, streaming(7)).await.unwrap();
    let seq = async || match env.sink.load(&key).await.unwrap().map(|c| c.phase) {
        Some(Phase::Streaming { position, .. }) => position.as_json()["seq"].as_u64(),
        other => panic!("not streaming: {other:?}"),
    };
    assert_eq!(seq().await, Some(7));

    let new = env.claim(&target).await;
    assert!(new > old);
    let refused = env.sink.save(&key, old, streaming(9)).await;
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    assert_eq!(seq().await, Some(7), "the stale holder moved nothing");
    env.sink.save(&key, new, streaming(9)).await.unwrap();
    assert_eq!(seq().await, Some(9));
}

/// Shared snapshots: replicas claiming at once take different chunks; a chunk whose
/// claim lapsed is claimed again with a newer token, and the late copy under the old
/// claim cannot commit (its rows roll back); a chunk handed back as the owner's is no
/// longer offered to helpers; copied chunks show in the plan with their positions.
#[tokio::test]
async fn snapshot_chunks_are_claimed_once_and_recorded_only_under_the_latest_claim() {
    use warp_core::ChunkScope;
    let env = setup("chunk_claims").await;
    let schema = simple_schema("orders");
    let target = env.target("orders", DeletionStrategy::Hard);
    env.sink.ensure_table(&target, &schema).await.unwrap();
    let (key, token) = (target.key(), env.claim(&target).await);
    let pos =
        |n: u64| Position::from_json(serde_json::json!({ "file": "mysql-bin.000001", "pos": n }));
    let ranges: Vec<KeyRange> = (0..3)
        .map(|i| KeyRange {
            start: (i > 0).then(|| vec![Value::Int(i * 100)]),
            end: (i < 2).then(|| vec![Value::Int((i + 1) * 100)]),
        })
        .collect();
    let tx = env.sink.begin(&target, token).await.unwrap();
    tx.commit(CheckpointUpdate::BeginSnapshot {
        start: pos(4),
        chunks: ranges.clone(),
        recopy: false,
        shared: Some(schema.clone()),
    })
    .await
    .unwrap();
    let long = Duration::from_secs(600);
    let helper = ChunkScope::OthersThan(&[]);
    let claim = |holder: &'static str, scope: ChunkScope<'static>, validity: Duration| {
        let sink = env.sink.clone();
        async move {
            sink.claim_chunk("shop", scope, holder, validity)
                .await
                .unwrap()
        }
    };
    let lapsed = claim("a/1", helper, long).await.unwrap();
    let b = claim("b/1", helper, long).await.unwrap();
    let own = claim("owner/1", ChunkScope::Table("orders"), long)
        .await
        .unwrap();
    assert_eq!((lapsed.index, b.index, own.index), (0, 1, 2));
    // The first helper stops renewing (it died, or froze).
    sqlx::raw_sql(AssertSqlSafe(format!(
        "UPDATE \"{}\".snapshot_chunks SET claimed_until = now() - interval '1 second' WHERE chunk_index = 0",
        env.meta
    )))
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        lapsed.shape.as_ref(),
        Some(&schema),
        "helpers copy in the plan's shape"
    );
    let again = claim("c/1", helper, long)
        .await
        .expect("the lapsed chunk again");
    assert_eq!(again.index, 0);
    assert!(
        again.claim > lapsed.claim,
        "a newer claim has a newer token"
    );
    assert!(
        claim("d/1", helper, long).await.is_none(),
        "every chunk is held"
    );
    // Helpers never take chunks of the tables they run themselves.
    let mine = ["orders".to_owned()];
    let sink = env.sink.clone();
    let skipped = sink.claim_chunk("shop", ChunkScope::OthersThan(&mine), "e/1", long);
    assert!(skipped.await.unwrap().is_none());

    let copy = |claim: warp_core::ChunkClaim, id: i64| {
        let (sink, target) = (env.sink.clone(), target.clone());
        async move {
            let mut tx = sink.begin_claimed(&target).await.unwrap();
            tx.write_snapshot_rows(vec![row(id, "copied")])
                .await
                .unwrap();
            let update = CheckpointUpdate::ChunkCopied {
                index: claim.index,
                position: pos(10 + id as u64),
                rows: 1,
                claim: claim.claim,
            };
            tx.commit(update).await.map(|_| ())
        }
    };
    let late = copy(lapsed, 1)
        .await
        .expect_err("the lapsed claim cannot record");
    assert!(late.to_string().contains("no longer claimed"), "{late}");
    copy(again, 2).await.unwrap();
    copy(b, 150).await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM \"{}\".orders ORDER BY id",
        env.schema
    )))
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(ids, [2, 150], "the late copy's row rolled back");
    // A chunk helpers cannot copy goes back to its owner only.
    let sink = env.sink.clone();
    sink.release_chunk(&key, own.index, own.claim, true)
        .await
        .unwrap();
    assert!(claim("f/1", helper, long).await.is_none());
    let owner = claim("owner/1", ChunkScope::Table("orders"), long)
        .await
        .unwrap();
    assert_eq!(owner.index, 2);
    let Some(Phase::Snapshot { chunks, .. }) = env.sink.load(&key).await.unwrap().map(|c| c.phase)
    else {
        panic!("snapshot phase expected");
    };
    let done: Vec<_> = chunks.iter().map(|c| c.done.clone()).collect();
    assert_eq!(done, [Some(pos(12)), Some(pos(160)), None]);
}
