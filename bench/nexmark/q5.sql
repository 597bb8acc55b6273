-- Nexmark q5-like, hopping windows: bids per auction in 10-second windows every 2 seconds.
-- (Nexmark's q5 goes on to keep the auctions with the most bids of each window.)

CREATE TABLE nexmark_q5 (
  auction BIGINT,
  num BIGINT,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3)
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-q5',
  'format' = 'json'
);

INSERT INTO nexmark_q5
SELECT auction, COUNT(*) AS num, window_start, window_end
FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
GROUP BY window_start, window_end, auction;
