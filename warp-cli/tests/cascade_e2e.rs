//! Foreign-key actions through the binary against the MariaDB peer: InnoDB performs
//! `ON DELETE CASCADE`, `ON DELETE SET NULL`, `ON UPDATE CASCADE` and self-referencing
//! cascades itself and logs only the parent's row event; the destination must end equal
//! to the source row for row, with the child's own changes in order around them.

use warp_fixtures::mysql_shop;

use mysql_shop::{shop, Shop};

/// `orders` references `customers` (delete and update cascade), `notes` sets its
/// reference null, `tree` references itself.
async fn with_foreign_keys(name: &str) -> Shop {
    let shop = shop(name, 200, 100).await;
    for sql in [
        "ALTER TABLE orders ADD CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) \
         REFERENCES customers (id) ON DELETE CASCADE ON UPDATE CASCADE",
        "CREATE TABLE notes (id INT PRIMARY KEY, customer_id INT NULL, body VARCHAR(20), \
         CONSTRAINT fk_notes_customer FOREIGN KEY (customer_id) REFERENCES customers (id) \
         ON DELETE SET NULL)",
        "INSERT INTO notes VALUES (1, 3, 'a'), (2, 3, 'b'), (3, 10, 'c')",
        "CREATE TABLE tree (id INT PRIMARY KEY, parent_id INT NULL, label VARCHAR(10), \
         CONSTRAINT fk_tree_parent FOREIGN KEY (parent_id) REFERENCES tree (id) ON DELETE CASCADE)",
        "INSERT INTO tree VALUES (1, NULL, 'root'), (2, 1, 'a'), (3, 1, 'b'), (4, 2, 'aa'), \
         (5, 2, 'ab'), (6, 4, 'aaa'), (7, NULL, 'root2'), (8, 7, 'c')",
        // A chain: customers → orders → order_items → item_notes.
        "CREATE TABLE order_items (id INT PRIMARY KEY, order_id BIGINT NOT NULL, sku VARCHAR(10), \
         CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE)",
        // Orders 2, 52, 102 belong to customer 3, order 5 to customer 6, order 10 to 11.
        "INSERT INTO order_items VALUES (1, 2, 'a'), (2, 52, 'b'), (3, 102, 'c'), (4, 5, 'd'), \
         (5, 10, 'e'), (6, 10, 'f')",
        "CREATE TABLE item_notes (id INT PRIMARY KEY, item_id INT NULL, body VARCHAR(10), \
         CONSTRAINT fk_notes_item FOREIGN KEY (item_id) REFERENCES order_items (id) ON DELETE SET NULL)",
        "INSERT INTO item_notes VALUES (1, 1, 'x'), (2, 5, 'y'), (3, NULL, 'z'), (4, 4, 'w')",
    ] {
        shop.exec(sql).await;
    }
    shop
}

const TABLES: [&str; 6] = [
    "customers",
    "orders",
    "notes",
    "tree",
    "order_items",
    "item_notes",
];

async fn count(shop: &Shop, sql: &str) -> i64 {
    shop.scalar_pg(sql.replace("{db}", &shop.db)).await
}

#[tokio::test]
async fn cascades_reach_the_destination_in_order_with_the_childrens_own_changes() {
    let shop = with_foreign_keys("cascade").await;
    let mut run = shop.run();
    for t in TABLES {
        shop.wait_equal(t).await;
    }
    let orders_of_3 = count(
        &shop,
        "SELECT count(*) FROM {db}.orders WHERE customer_id = 3",
    )
    .await;
    assert!(orders_of_3 > 0);

    // ON DELETE CASCADE (orders) and ON DELETE SET NULL (notes).
    shop.exec("DELETE FROM customers WHERE id = 3").await;
    // ON UPDATE CASCADE: the orders follow their customer's new id.
    shop.exec("UPDATE customers SET id = 1004 WHERE id = 4")
        .await;
    // A child's own insert, then its parent's delete, in one transaction: the insert is
    // applied first and the cascade removes it.
    shop.exec(
        "BEGIN; INSERT INTO orders (id, customer_id, amount, status) VALUES (9001, 6, 1.00, 'new'); \
         DELETE FROM customers WHERE id = 6; COMMIT",
    )
    .await;
    // The children deleted by their own statements first, then the parent (the order in
    // which MySQL 9.6+ logs an action it performs in the SQL layer): the action the
    // reader adds after the parent finds no live row left, and bumps no version.
    shop.exec("BEGIN; DELETE FROM orders WHERE customer_id = 8; DELETE FROM customers WHERE id = 8; COMMIT")
        .await;
    // A subtree of a table that references itself.
    shop.exec("DELETE FROM tree WHERE id = 2").await;
    for t in TABLES {
        shop.wait_equal(t).await;
    }
    // The middle table behind: writes to orders' landing table wait on another
    // session's lock (reads do not), while a transaction inserts an order and its item
    // and deletes the customer. The item is found through the order, so order_items
    // must wait until orders has applied that transaction.
    let waits = || {
        shop.log()
            .lines()
            .filter(|l| l.contains("table=order_items") && l.contains("waits for the middle table"))
            .count()
    };
    let waited_before = waits();
    let mut lock = shop.pg.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {}.orders IN EXCLUSIVE MODE",
        shop.db
    )))
    .execute(&mut *lock)
    .await
    .unwrap();
    shop.exec(
        "BEGIN; INSERT INTO orders (id, customer_id, amount, status) VALUES (9002, 7, 1.00, 'new'); \
         INSERT INTO order_items VALUES (7, 9002, 'g'); DELETE FROM customers WHERE id = 7; COMMIT",
    )
    .await;
    let waited = || (waits() != waited_before).then_some(());
    let what = "the chained delete waiting on its parent's position";
    warp_e2e::eventually_with(
        what,
        warp_e2e::Poll::TIGHT,
        async || waited(),
        || shop.log(),
    )
    .await;
    lock.rollback().await.unwrap();
    for t in TABLES {
        shop.wait_equal(t).await;
    }
    // Through the chain: the items of customer 3's, 6's and 7's orders went with them,
    // and the notes on those items lost their reference.
    assert_eq!(
        count(
            &shop,
            "SELECT count(*) FROM {db}.order_items WHERE NOT is_deleted"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &shop,
            "SELECT count(*) FROM {db}.item_notes WHERE item_id IS NULL"
        )
        .await,
        3
    );
    // (Orders of customer 4 are ids 3, 53, 103 and 153.)
    assert_eq!(
        count(
            &shop,
            "SELECT count(*) FROM {db}.orders WHERE customer_id = 1004 AND NOT is_deleted"
        )
        .await,
        4
    );
    // (Orders of customer 8 are ids 7, 57, 107 and 157.)
    assert_eq!(
        count(
            &shop,
            "SELECT count(*) FROM {db}.orders WHERE customer_id = 8 AND is_deleted AND _cartridge_version = 2",
        )
        .await,
        4,
        "deleted once by their own events; the parent's action changed nothing"
    );
    let deleted_versions = count(
        &shop,
        "SELECT count(*) FROM {db}.orders WHERE customer_id = 3 AND is_deleted AND _cartridge_version = 2",
    )
    .await;
    assert_eq!(
        deleted_versions, orders_of_3,
        "each cascaded order deleted once, its version bumped once"
    );
    assert!(run.terminate().success());
}

#[tokio::test]
async fn a_parent_that_is_not_replicated_still_cascades_to_its_children() {
    let shop = with_foreign_keys("cascade_unserved").await;
    // Only the children: the parent's row events are read for their cascades alone.
    let config = std::fs::read_to_string(&shop.config).unwrap();
    let only_children = config.replacen(
        &format!("- name: {}\n", shop.db),
        &format!("- name: {}\n  table_blacklist: [customers]\n", shop.db),
        1,
    );
    assert_ne!(only_children, config);
    std::fs::write(&shop.config, only_children).unwrap();
    let mut run = shop.run();
    for t in &TABLES[1..] {
        shop.wait_equal(t).await;
    }
    shop.exec("DELETE FROM customers WHERE id = 3").await;
    shop.exec("UPDATE customers SET id = 1004 WHERE id = 4")
        .await;
    for t in &TABLES[1..] {
        shop.wait_equal(t).await;
    }
    let landed = count(
        &shop,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{db}' AND table_name = 'customers'",
    )
    .await;
    assert_eq!(landed, 0, "the parent itself is not replicated");
    let nulls = count(
        &shop,
        "SELECT count(*) FROM {db}.notes WHERE customer_id IS NULL",
    )
    .await;
    assert_eq!(nulls, 2);
    assert!(run.terminate().success());
}

#[test]
fn validate_names_a_parent_in_another_database() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shop = rt.block_on(async {
        let shop = shop("cascade_validate", 10, 100).await;
        let other = format!("{}_other", shop.db);
        for sql in [
            format!("DROP DATABASE IF EXISTS {other}"),
            format!("CREATE DATABASE {other}"),
            format!("CREATE TABLE {other}.accounts (id INT PRIMARY KEY)"),
            format!(
                "CREATE TABLE ledger (id INT PRIMARY KEY, account_id INT, CONSTRAINT fk_ledger_account \
                 FOREIGN KEY (account_id) REFERENCES {other}.accounts (id) ON DELETE CASCADE)"
            ),
        ] {
            shop.exec(&sql).await;
        }
        shop
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cartridge-warp"))
        .args(["validate", "--check-connections", "--config"])
        .arg(&shop.config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "ledger: foreign key fk_ledger_account: its parent {}_other.accounts is in another database",
            shop.db
        )),
        "{stdout}"
    );
}
