-- Nexmark q0, pass-through: every bid, unchanged (measures the source, sink and format cost).

CREATE TABLE nexmark_q0 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  date_time TIMESTAMP(3),
  extra VARCHAR
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-q0',
  'format' = 'json'
);

INSERT INTO nexmark_q0
SELECT auction, bidder, price, channel, url, date_time, extra FROM bid;
