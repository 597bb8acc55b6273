-- Nexmark q2, selection: the bids on a few auctions (ids divisible by 123) and their prices.
-- `auction % 123` is Flink's MOD(auction, 123).

CREATE TABLE nexmark_q2 (
  auction BIGINT,
  price BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-q2',
  'format' = 'json'
);

INSERT INTO nexmark_q2
SELECT auction, price FROM bid WHERE auction % 123 = 0;
