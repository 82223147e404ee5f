-- Sample shop schema for scripts/demo.sh (MariaDB).
CREATE TABLE customers (
  id INT PRIMARY KEY,
  name VARCHAR(80) NOT NULL,
  email VARCHAR(120),
  tier ENUM('basic', 'silver', 'gold') NOT NULL DEFAULT 'basic',
  created_at DATETIME(6) NOT NULL
);
CREATE TABLE products (
  id INT PRIMARY KEY,
  sku VARCHAR(32) NOT NULL,
  title VARCHAR(200) NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  attributes JSON,
  in_stock TINYINT(1) NOT NULL DEFAULT 1
);
CREATE TABLE orders (
  id BIGINT UNSIGNED PRIMARY KEY,
  customer_id INT NOT NULL,
  product_id INT NOT NULL,
  quantity SMALLINT NOT NULL,
  total DECIMAL(12,2) NOT NULL,
  status VARCHAR(12) NOT NULL,
  placed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);
INSERT INTO customers SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'),
  ELT(seq % 3 + 1, 'basic', 'silver', 'gold'), '2025-01-01' + INTERVAL seq HOUR FROM seq_1_to_200;
INSERT INTO products SELECT seq, CONCAT('SKU-', LPAD(seq, 5, '0')), CONCAT('Product ', seq), seq * 1.5 + 0.99,
  JSON_OBJECT('color', ELT(seq % 3 + 1, 'red', 'green', 'blue'), 'weight', seq % 7), seq % 5 <> 0 FROM seq_1_to_50;
INSERT INTO orders SELECT seq, seq % 200 + 1, seq % 50 + 1, seq % 4 + 1, (seq % 4 + 1) * ((seq % 50 + 1) * 1.5 + 0.99),
  ELT(seq % 3 + 1, 'new', 'paid', 'shipped'), '2025-06-01' + INTERVAL seq MINUTE FROM seq_1_to_5000;
