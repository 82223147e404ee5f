-- Live changes applied by scripts/demo.sh while the replicator streams.
INSERT INTO orders (id, customer_id, product_id, quantity, total, status) VALUES (5001, 1, 1, 2, 4.98, 'new');
UPDATE orders SET status = 'shipped' WHERE id BETWEEN 1 AND 100;
DELETE FROM orders WHERE id BETWEEN 4990 AND 4999;
UPDATE customers SET tier = 'gold' WHERE id = 7;
ALTER TABLE products ADD COLUMN discontinued BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE products SET discontinued = TRUE, in_stock = 0 WHERE id = 3;
